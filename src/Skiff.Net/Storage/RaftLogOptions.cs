namespace Skiff.Net.Storage;

/// <summary>How a <see cref="RaftLog"/> makes a group of appends durable.</summary>
internal enum LogCommitMode
{
    /// <summary>FASTER's own commit: a new metadata file per commit, the old one deleted, the directory never
    /// synced. Several syncs per commit, and the newest commit may be lost on power loss. Kept to compare.</summary>
    FasterDefault,
    /// <summary>Our <see cref="SlotCommitManager"/>: log pages, then the metadata into a preallocated two-slot
    /// file with one fdatasync.</summary>
    SlotFile,
    /// <summary>Commit records kept inside the log (FASTER fast-commit mode); the slot file is written only now and
    /// then, and recovery scans forward from it. One sync per commit. The default.</summary>
    InLog,
}

/// <summary>Settings of a <see cref="RaftLog"/>.</summary>
internal sealed record RaftLogOptions
{
    /// <summary>How commits are made durable.</summary>
    public LogCommitMode CommitMode { get; init; } = LogCommitMode.InLog;
    /// <summary>log2 of FASTER's page size, for a new log (default 22 = 4 MiB; a log keeps the sizes it was made
    /// with, see <see cref="StoreGeometry"/>).</summary>
    public int PageSizeBits { get; init; } = 22;
    /// <summary>log2 of the log's in-memory buffer (default 26 = 64 MiB); bounds memory use.</summary>
    public int MemorySizeBits { get; init; } = 26;
    /// <summary>log2 of a log segment file's size, for a new log (default 22 = 4 MiB; logs made before 256 MiB).
    /// Compaction behind a snapshot frees whole segments, so this is how much disk a compacted log may keep beyond
    /// its live entries.</summary>
    public int SegmentSizeBits { get; init; } = 22;

    /// <summary>The sizes logs made before the <c>geometry</c> file existed were written with.</summary>
    internal static readonly StoreGeometry LegacyGeometry = new(22, 28);
    /// <summary>How many entries before a snapshot's index <see cref="RaftLog.CompactUntil"/> keeps, so slightly
    /// lagging followers can still be served from the log.</summary>
    public long KeepTail { get; init; } = 1000;
    /// <summary>Appends are refused with <see cref="ErrorKind.StorageError"/> while the disk has less free space
    /// than this: once FASTER's in-memory buffer is full, an append waits for page flushes, which never complete on
    /// a full disk. Null: the in-memory buffer plus 16 MiB.</summary>
    public long? MinFreeDiskBytes { get; init; }

    internal long EffectiveMinFreeDiskBytes => MinFreeDiskBytes ?? (1L << MemorySizeBits) + (16L << 20);
}
