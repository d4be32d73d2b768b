using System.Buffers.Binary;
using System.Text;

namespace Skiff.Net.Runtime;

/// <summary>
/// The applier's in-memory history of recent changes, kept as bytes in one reusable ring buffer rather than as
/// <see cref="Change"/> objects. A history of tens of thousands of objects lives for seconds: every change made it
/// survive two collections and be copied into the oldest generation, only to die there (on a follower under load
/// this was most of what each young collection copied, and so most of its pause). Bytes in one array that is
/// allocated once (it grows by doubling, up to twice its byte cap) cost the collector nothing per change; a
/// <see cref="Change"/> is made again only for a watch that resumes from the history. Not thread-safe: the applier
/// serialises access under its watch lock.
/// </summary>
internal sealed class ChangeRing
{
    // Record: [kind u8][key length i32][UTF-8 key][value]; its index, place and length are kept beside it.
    private const int Header = 5;
    private const int FirstSize = 64 << 10;

    private readonly int _maxCount;
    private readonly long _maxBytes;
    private readonly Queue<(long Index, int Offset, int Length)> _records = new();
    private byte[] _buffer = [];
    // Where the next record goes, and where the oldest starts (records never straddle the buffer's end).
    private int _tail, _head;
    private long _floor;

    /// <param name="maxCount">The most changes kept.</param>
    /// <param name="maxBytes">The most bytes of records kept (at most 1 GiB). The buffer may grow to twice this: with
    /// that much room the free space always has a stretch long enough for any record the cap admits, so the ring
    /// keeps exactly the newest changes within both caps and never drops one only to make room in one piece.</param>
    public ChangeRing(int maxCount, long maxBytes)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(maxBytes, 1L << 30);
        _maxCount = maxCount;
        _maxBytes = maxBytes;
    }

    /// <summary>Changes kept.</summary>
    public int Count => _records.Count;

    /// <summary>Bytes of the records kept (keys in UTF-8, values, and a five-byte header each).</summary>
    public long Bytes { get; private set; }

    /// <summary>Every change after this index that was added is kept (the index of the newest change dropped, or of
    /// the last <see cref="Clear"/>).
    /// Safe to read without the applier's lock (Subscribe reads it before taking it).</summary>
    public long Floor
    {
        get => Volatile.Read(ref _floor);
        private set => Volatile.Write(ref _floor, value);
    }

    /// <summary>Adds a change newer than every one kept, dropping the oldest past the count or byte cap.</summary>
    public void Add(Change change)
    {
        var keyBytes = Encoding.UTF8.GetByteCount(change.Key);
        var valueBytes = change.Value?.Length ?? 0;
        var length = Header + keyBytes + valueBytes;
        if (length > _maxBytes || _maxCount == 0)
        {
            // Too large to keep at all: everything before it is unreachable in order, so the history starts after it.
            Clear(change.Index);
            return;
        }
        while (_records.Count >= _maxCount || Bytes + length > _maxBytes) DropOldest();
        var at = Place(length);
        var span = _buffer.AsSpan(at, length);
        span[0] = (byte)change.Kind;
        BinaryPrimitives.WriteInt32LittleEndian(span[1..], keyBytes);
        Encoding.UTF8.GetBytes(change.Key, span[Header..]);
        change.Value?.Span.CopyTo(span[(Header + keyBytes)..]);
        _records.Enqueue((change.Index, at, length));
        _tail = at + length;
        Bytes += length;
    }

    /// <summary>Appends to <paramref name="into"/> the changes kept at or after <paramref name="fromIndex"/> whose key
    /// starts with <paramref name="prefix"/>, oldest first.</summary>
    public void CopyFrom(long fromIndex, string prefix, List<Change> into)
    {
        foreach (var (index, offset, length) in _records)
        {
            if (index < fromIndex) continue;
            var span = _buffer.AsSpan(offset, length);
            var keyBytes = BinaryPrimitives.ReadInt32LittleEndian(span[1..]);
            var key = Encoding.UTF8.GetString(span.Slice(Header, keyBytes));
            if (!key.StartsWith(prefix, StringComparison.Ordinal)) continue;
            into.Add((ChangeKind)span[0] == ChangeKind.Insert
                ? Change.Inserted(index, key, span[(Header + keyBytes)..].ToArray())
                : Change.Removed(index, key));
        }
    }

    /// <summary>Forgets every change; the history starts after <paramref name="floor"/>.</summary>
    public void Clear(long floor)
    {
        _records.Clear();
        _head = _tail = 0;
        Bytes = 0;
        Floor = floor;
    }

    private void DropOldest()
    {
        var (index, _, length) = _records.Dequeue();
        Bytes -= length;
        Floor = index;
        if (_records.Count == 0) _head = _tail = 0;
        else _head = _records.Peek().Offset;
    }

    /// <summary>Where a record of <paramref name="length"/> bytes goes: after the newest, or at the start when it
    /// does not fit before the end; the buffer grows until there is room (dropping the oldest is only a fallback:
    /// see the constructor).</summary>
    private int Place(int length)
    {
        while (true)
        {
            if (_records.Count == 0) _head = _tail = 0;
            bool wrapped = _records.Count > 0 && _tail <= _head;
            if (!wrapped && _buffer.Length - _tail >= length) return _tail;
            if (!wrapped && _records.Count > 0 && _head >= length) return 0;
            if (wrapped && _head - _tail >= length) return _tail;
            if (_buffer.Length < 2 * _maxBytes) Grow(length);
            else DropOldest();
        }
    }

    /// <summary>Doubles the buffer (at least to fit <paramref name="length"/> more, at most to twice the byte cap),
    /// copying the records kept to its start in order.</summary>
    private void Grow(int length)
    {
        var size = (long)Math.Max(FirstSize, _buffer.Length * 2);
        while (size < Bytes + length) size *= 2;
        var bigger = new byte[(int)Math.Min(size, 2 * _maxBytes)];
        var at = 0;
        var count = _records.Count;
        for (var i = 0; i < count; i++)
        {
            var (index, offset, recordLength) = _records.Dequeue();
            _buffer.AsSpan(offset, recordLength).CopyTo(bigger.AsSpan(at));
            _records.Enqueue((index, at, recordLength));
            at += recordLength;
        }
        _buffer = bigger;
        _head = 0;
        _tail = at;
    }
}
