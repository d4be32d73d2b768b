namespace Skiff.Net.Storage;

/// <summary>Settings of a <see cref="KvStateMachine"/>. The in-memory sizes bound memory use; data beyond them
/// lives on disk and is read back on demand, so a store larger than memory works.</summary>
internal sealed record KvOptions
{
    /// <summary>Size of FASTER's hash index in bytes (64 bytes a bucket of 7 entries; default 16 MiB).</summary>
    public long IndexSizeBytes { get; init; } = 1L << 24;
    /// <summary>log2 of a page of the hybrid log (default 20 = 1 MiB).</summary>
    public int PageSizeBits { get; init; } = 20;
    /// <summary>log2 of the in-memory part of the hybrid log (default 25 = 32 MiB of records, each holding
    /// references to its key and value objects).</summary>
    public int MemorySizeBits { get; init; } = 25;
    /// <summary>log2 of a log segment file (default 30 = 1 GiB).</summary>
    public int SegmentSizeBits { get; init; } = 30;
    /// <summary>Applies and snapshots are refused with <see cref="ErrorKind.StorageError"/> while the disk has less
    /// free space than this. FASTER cannot report a failed background page flush to the writer (on a full disk its
    /// writers wait for buffer space forever), so we stop before the disk is full. Null: twice the in-memory log
    /// plus the index plus 16 MiB, enough to flush memory and write one checkpoint.</summary>
    public long? MinFreeDiskBytes { get; init; }

    /// <summary>How many of the most recent changes (puts and deletes that took effect) the store keeps as its
    /// change history, for watchers resuming from an index (default 100,000; 0 keeps none). The history lives in
    /// the store under reserved keys, so snapshots carry it and replaying the log after a restart rebuilds it.</summary>
    public int WatchHistory { get; init; } = 100_000;

    /// <summary>How opening the store rebuilds its ordered key index (default <see cref="KeyIndexRebuild.LogScan"/>).
    /// Both give the same index; the other way is kept to compare their cost in the storage benchmark.</summary>
    public KeyIndexRebuild KeyIndexRebuild { get; init; } = KeyIndexRebuild.LogScan;

    /// <summary>Test hook, never for production: apply every write in a client session as if it had none, so a
    /// resent write is applied again. The fault harness uses it to show that it catches duplicated writes.</summary>
    internal bool UnsafeNoSessionDedup { get; init; }

    internal long EffectiveMinFreeDiskBytes => MinFreeDiskBytes ?? (2L << MemorySizeBits) + IndexSizeBytes + (16L << 20);
}

/// <summary>How a <see cref="KvStateMachine"/> rebuilds its ordered key index when it opens.</summary>
internal enum KeyIndexRebuild
{
    /// <summary>One scan of the whole hybrid log in address order, applying each record (a live record adds its
    /// key, a tombstone removes it). The default: the faster of the two here.</summary>
    LogScan,
    /// <summary>FASTER's iterator over the distinct live records.</summary>
    DistinctIterator,
}
