using System.Buffers.Binary;
using System.Text;

namespace Skiff.Net.Storage;

/// <summary>
/// The change history watchers resume from: the newest changes (up to <see cref="KvOptions.WatchHistory"/> of them and
/// <see cref="KvOptions.WatchHistoryBytes"/> of records) kept in the store itself under reserved keys, so checkpoints carry them and replaying the log rebuilds them, plus an
/// in-memory <see cref="IndexRing"/> of their indexes so a read finds exactly the records in range without
/// scanning. Recording and trimming depend only on the store's contents and the limit, so a replay after a restart
/// rebuilds exactly the same records. Not thread-safe: the state machine serialises access under its lock.
/// </summary>
internal sealed class ChangeHistory
{
    /// <summary>The change made by the entry at index i is kept under this prefix + i in 20 digits + "." + the
    /// record's length (an entry changes at most one key), as <c>[1 = put | 2 = delete][key length i32][UTF-8
    /// key][value]</c>. The length is in the key so that the open-time scan, which sees keys only, can count the
    /// history's bytes. Records of older versions have no length in their key; they count as 0 bytes and age out by
    /// count.</summary>
    private const string Prefix = KvStateMachine.ReservedPrefix + "rev/";
    private const byte Put = 1, Delete = 2;

    private readonly FasterKvStore _store;
    private readonly string _dir;
    private readonly int _limit;
    private readonly long _byteLimit;
    private readonly IndexRing _indexes = new();

    /// <summary>Changes at or below this index are no longer kept (trimmed, or made before the store kept a
    /// history); every change after it, up to the applied index, is.</summary>
    public long Floor { get; private set; }

    /// <summary>Number of changes kept.</summary>
    public int Count => _indexes.Count;

    /// <summary>Bytes of the records kept (as their keys say).</summary>
    public long Bytes { get; private set; }

    /// <param name="store">The store the records live in.</param>
    /// <param name="dir">The store's directory, for errors.</param>
    /// <param name="limit">How many changes to keep (<see cref="KvOptions.WatchHistory"/>).</param>
    /// <param name="byteLimit">How many bytes of records to keep (<see cref="KvOptions.WatchHistoryBytes"/>).</param>
    /// <param name="floor">The floor stored with the applied index.</param>
    /// <param name="recorded">The indexes and sizes of the records found in the store, ascending.</param>
    public ChangeHistory(FasterKvStore store, string dir, int limit, long byteLimit, long floor, IEnumerable<(long Index, int Size)> recorded)
    {
        _store = store;
        _dir = dir;
        _limit = limit;
        _byteLimit = byteLimit;
        Floor = floor;
        foreach (var (i, size) in recorded)
        {
            _indexes.Add(i, size);
            Bytes += Math.Max(0, size);
        }
    }

    /// <summary>The index whose change <paramref name="key"/> holds and the record's size (-1 if the key does not
    /// say), if it is a history key.</summary>
    public static (long Index, int Size)? IndexOf(string key)
    {
        if (!key.StartsWith(Prefix, StringComparison.Ordinal)) return null;
        var rest = key.AsSpan(Prefix.Length);
        var dot = rest.IndexOf('.');
        if (dot < 0) return long.TryParse(rest, out var old) ? (old, -1) : null;
        return long.TryParse(rest[..dot], out var i) && int.TryParse(rest[(dot + 1)..], out var size) ? (i, size) : null;
    }

    private static string KeyOf(long index, int size)
    {
        var digits = index.ToString("D20", System.Globalization.CultureInfo.InvariantCulture);
        return size < 0 ? Prefix + digits : Prefix + digits + "." + size.ToString(System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>The indexes and sizes of the records kept, ascending (what opening the store would find).</summary>
    public (long Index, int Size)[] Recorded()
    {
        var recorded = new (long, int)[_indexes.Count];
        for (var i = 0; i < recorded.Length; i++) recorded[i] = (_indexes[i], _indexes.SizeAt(i));
        return recorded;
    }

    /// <summary>Adds a change and trims the oldest beyond the limits.</summary>
    public void Record(Change change)
    {
        if (_limit > 0)
        {
            var keyBytes = Encoding.UTF8.GetByteCount(change.Key);
            var value = change.Value;
            var record = new byte[1 + 4 + keyBytes + (value?.Length ?? 0)];
            record[0] = value is null ? Delete : Put;
            BinaryPrimitives.WriteInt32LittleEndian(record.AsSpan(1), keyBytes);
            Encoding.UTF8.GetBytes(change.Key, record.AsSpan(5));
            value?.Span.CopyTo(record.AsSpan(5 + keyBytes));
            _store.Upsert(KeyOf(change.Index, record.Length), record);
            _indexes.Add(change.Index, record.Length);
            Bytes += record.Length;
        }
        while (_indexes.Count > Math.Max(0, _limit) || (_indexes.Count > 0 && Bytes > _byteLimit))
        {
            var (oldest, size) = _indexes.RemoveOldest();
            _store.Delete(KeyOf(oldest, size));
            Bytes -= Math.Max(0, size);
            Floor = oldest;
        }
        if (_limit <= 0) Floor = change.Index;
    }

    /// <summary>Reads up to <paramref name="max"/> kept changes from index <paramref name="next"/> to
    /// <paramref name="to"/> whose key starts with <paramref name="prefix"/> into <paramref name="into"/>, and moves
    /// <paramref name="next"/> past the last one looked at. True once nothing is left in range. The caller checks
    /// <see cref="Floor"/> first.</summary>
    public bool ReadChunk(ref long next, long to, string prefix, List<Change> into, int max)
    {
        var i = _indexes.LowerBound(next);
        for (var n = 0; n < max; n++, i++)
        {
            if (i >= _indexes.Count || _indexes[i] > to) return true;
            var index = _indexes[i];
            var size = _indexes.SizeAt(i);
            var record = StorageIo.Guard(_dir, () => _store.Read(KeyOf(index, size)))
                ?? throw new SkiffException(ErrorKind.StorageCorrupted, $"the change history in {_dir} lost its record of index {index}");
            next = index + 1;
            var keyBytes = BinaryPrimitives.ReadInt32LittleEndian(record.AsSpan(1));
            var key = Encoding.UTF8.GetString(record, 5, keyBytes);
            if (!key.StartsWith(prefix, StringComparison.Ordinal)) continue;
            into.Add(record[0] == Delete ? Change.Removed(index, key) : Change.Inserted(index, key, record.AsMemory(5 + keyBytes)));
        }
        return false;
    }
}
