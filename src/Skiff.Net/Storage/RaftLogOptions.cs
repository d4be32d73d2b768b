namespace Skiff.Net.Storage;

/// <summary>How the FasterLog of older versions made a group of appends durable; only read to migrate such a log
/// (<see cref="LegacyLogReader"/>).</summary>
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
    /// <summary>How an old FasterLog being migrated made commits durable.</summary>
    public LogCommitMode CommitMode { get; init; } = LogCommitMode.InLog;
    /// <summary>log2 of FASTER's page size, for an old FasterLog being migrated that has no <c>geometry</c> file.</summary>
    public int PageSizeBits { get; init; } = 22;
    /// <summary>log2 of the in-memory buffer of an old FasterLog being migrated.</summary>
    public int MemorySizeBits { get; init; } = 26;
    /// <summary>log2 of the largest size of a write-ahead log segment file (default 22 = 4 MiB). Compaction behind
    /// a snapshot frees whole segments, so this is about how much disk a compacted log may keep beyond its live
    /// entries: with 16 MiB segments and a snapshot every 8 MiB of entries a log kept up to 27 MiB (issue 16).
    /// Segments already written keep their size; the setting applies to new ones.</summary>
    public int SegmentSizeBits { get; init; } = 22;

    /// <summary>Fill each new segment with zeros to its full size when it is started (on the writer thread: a
    /// stall of one segment's write every segment), so that appends overwrite instead of growing the file and their
    /// fdatasync need not commit a new size. Off by default until measured on a quiet disk.</summary>
    public bool PreallocateSegments { get; init; }

    /// <summary>The sizes logs made before the <c>geometry</c> file existed were written with.</summary>
    internal static readonly StoreGeometry LegacyGeometry = new(22, 28);
    /// <summary>How many entries before a snapshot's index <see cref="RaftLog.CompactUntil"/> keeps, so slightly
    /// lagging followers can still be served from the log.</summary>
    public long KeepTail { get; init; } = 1000;
    /// <summary>Appends are refused with <see cref="ErrorKind.StorageError"/> while the disk has less free space
    /// than this, so the log stops with a typed error before the disk is exhausted (a write failing on a full disk
    /// fails the log until it is reopened). Null: one segment plus 16 MiB.</summary>
    public long? MinFreeDiskBytes { get; init; }

    internal long EffectiveMinFreeDiskBytes => MinFreeDiskBytes ?? (1L << SegmentSizeBits) + (16L << 20);
}
