using System.Buffers.Binary;
using System.Globalization;

namespace Skiff.Net.Storage;

/// <summary>One segment file of the write-ahead log: <c>NNNNNNNNNNNNNNNNNNNN.wal</c> (its sequence number),
/// a 16-byte header (<see cref="WalSegments.Magic"/>, version, CRC32C of both), then records back to back.</summary>
internal sealed class WalSegment(long seq, string path, IWalFile file, long length)
{
    /// <summary>The segment's sequence number (from its name); later segments have larger ones.</summary>
    public long Seq { get; } = seq;

    /// <summary>The file's path, for errors.</summary>
    public string Path { get; } = path;

    /// <summary>The open file.</summary>
    public IWalFile File { get; } = file;

    /// <summary>Where the next record goes (the end of the last record written).</summary>
    public long Length { get; set; } = length;
}

/// <summary>
/// The write-ahead log's segment files: naming, the header, and the set of open segments that the writer thread
/// appends to (the last one) and deletes from (the oldest ones), and that readers look up by sequence number.
/// A record's address is its segment's sequence number times 2^32 plus its offset in the segment.
/// </summary>
internal sealed class WalSegments : IDisposable
{
    /// <summary>"SKIFFWAL", the first bytes of every segment.</summary>
    public static readonly ulong Magic = BinaryPrimitives.ReadUInt64LittleEndian("SKIFFWAL"u8);

    /// <summary>The format version in the header.</summary>
    public const uint Version = 1;

    /// <summary>Bytes of the header; the first record starts here.</summary>
    public const int HeaderSize = 16;

    /// <summary>The segment files' name suffix.</summary>
    public const string Suffix = ".wal";

    private readonly object _gate = new();
    private readonly SortedDictionary<long, WalSegment> _open = new(); // guarded by _gate

    /// <summary>The file system.</summary>
    public IWalFileSystem Fs { get; }

    /// <summary>The log directory.</summary>
    public string Dir { get; }

    /// <summary>The largest a segment grows (a record that does not fit starts the next one).</summary>
    public long SegmentBytes { get; }

    /// <param name="fs">The file system.</param>
    /// <param name="dir">The log directory.</param>
    /// <param name="segmentBytes">The largest a segment grows.</param>
    /// <param name="preallocate">Fill each new segment with zeros up to its full size before using it.</param>
    public WalSegments(IWalFileSystem fs, string dir, long segmentBytes, bool preallocate)
    {
        Fs = fs;
        Dir = dir;
        SegmentBytes = segmentBytes;
        _preallocate = preallocate;
    }

    private readonly bool _preallocate;

    /// <summary>The address of <paramref name="offset"/> in segment <paramref name="seq"/>.</summary>
    public static long Address(long seq, long offset) => (seq << 32) | offset;

    /// <summary>The segment name for <paramref name="seq"/>.</summary>
    public static string NameOf(long seq) => seq.ToString("D20", CultureInfo.InvariantCulture) + Suffix;

    /// <summary>The sequence number in a segment's file name, or null if the name is not one.</summary>
    public static long? SeqOf(string name) =>
        name.Length == 20 + Suffix.Length && name.EndsWith(Suffix, StringComparison.Ordinal)
        && long.TryParse(name.AsSpan(0, 20), NumberStyles.None, CultureInfo.InvariantCulture, out var seq) ? seq : null;

    /// <summary>The header bytes of a segment.</summary>
    public static byte[] Header()
    {
        var h = new byte[HeaderSize];
        BinaryPrimitives.WriteUInt64LittleEndian(h, Magic);
        BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(8), Version);
        BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(12), Crc32C.Compute(h.AsSpan(0, 12)));
        return h;
    }

    /// <summary>Whether <paramref name="h"/> is a valid header of a version this code reads.</summary>
    public static bool IsHeader(ReadOnlySpan<byte> h) =>
        h.Length >= HeaderSize && BinaryPrimitives.ReadUInt64LittleEndian(h) == Magic
        && BinaryPrimitives.ReadUInt32LittleEndian(h[8..]) == Version
        && BinaryPrimitives.ReadUInt32LittleEndian(h[12..]) == Crc32C.Compute(h[..12]);

    /// <summary>The segment being appended to.</summary>
    public WalSegment Last
    {
        get { lock (_gate) return _open.Values.Last(); }
    }

    /// <summary>Whether any segment is open.</summary>
    public bool Any
    {
        get { lock (_gate) return _open.Count > 0; }
    }

    /// <summary>Adds a recovered segment (in order).</summary>
    public void Add(WalSegment segment)
    {
        lock (_gate) _open.Add(segment.Seq, segment);
    }

    /// <summary>The open segment <paramref name="seq"/>, or null if it was deleted.</summary>
    public WalSegment? Find(long seq)
    {
        lock (_gate) return _open.GetValueOrDefault(seq);
    }

    /// <summary>Creates the next segment (header written and synced, its directory entry durable) and makes it the
    /// one appended to. The previous last segment must already be synced.</summary>
    public WalSegment Create()
    {
        long seq;
        lock (_gate) seq = _open.Count == 0 ? 1 : _open.Keys.Last() + 1;
        var path = System.IO.Path.Combine(Dir, NameOf(seq));
        var file = Fs.Open(path, create: true);
        try
        {
            file.Truncate(0);
            // Preallocated: later appends overwrite zeros, so their fdatasync need not commit a new file size.
            if (_preallocate) file.Write(0, new ReadOnlyMemory<byte>[] { new byte[SegmentBytes] });
            file.Write(0, new ReadOnlyMemory<byte>[] { Header() });
            file.Sync();
            Fs.SyncDirectory(Dir);
        }
        catch
        {
            file.Dispose();
            throw;
        }
        var segment = new WalSegment(seq, path, file, HeaderSize);
        Add(segment);
        return segment;
    }

    /// <summary>Deletes every segment before <paramref name="seq"/> and makes the deletions durable. Called only
    /// once the record that makes them unnecessary is durable.</summary>
    public int DeleteBefore(long seq)
    {
        List<WalSegment> doomed;
        lock (_gate)
        {
            doomed = _open.Values.Where(s => s.Seq < seq).ToList();
            foreach (var s in doomed) _open.Remove(s.Seq);
        }
        if (doomed.Count == 0) return 0;
        // A crash before the directory sync may keep any subset of these: the survivors are a suffix of the history
        // (harmless to scan again) or leave a gap before the kept segments, and recovery deletes what is before a gap.
        foreach (var s in doomed)
        {
            s.File.Dispose();
            Fs.Delete(s.Path);
        }
        Fs.SyncDirectory(Dir);
        return doomed.Count;
    }

    /// <summary>Number of open segments.</summary>
    public int Count
    {
        get { lock (_gate) return _open.Count; }
    }

    /// <summary>Closes every open segment file.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            foreach (var s in _open.Values) s.File.Dispose();
            _open.Clear();
        }
    }
}
