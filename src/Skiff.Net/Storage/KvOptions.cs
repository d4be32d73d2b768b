namespace Skiff.Net.Storage;

/// <summary>Settings of a <see cref="KvStateMachine"/>. The in-memory sizes bound memory use; data beyond them
/// lives on disk and is read back on demand, so a store larger than memory works.</summary>
internal sealed record KvOptions
{
    /// <summary>Size of FASTER's hash index in bytes (64 bytes a bucket of 7 entries; default 16 MiB).</summary>
    public long IndexSizeBytes { get; init; } = 1L << 24;
    /// <summary>log2 of a page of the hybrid log, for a new store (default 16 = 64 KiB; a store keeps the sizes it
    /// was made with, see <see cref="StoreGeometry"/>).</summary>
    public int PageSizeBits { get; init; } = 16;
    /// <summary>log2 of the in-memory part of the hybrid log (default 23 = 8 MiB of records, each 24 bytes holding
    /// references to its key and value objects: about 350,000 records, whose objects are what the store keeps on the
    /// managed heap). Older records are read from disk on demand; a write never reads. At 25 (the default before)
    /// a million 100-byte values all stayed on the heap (~200 MB) and opening read them all back from disk (~0.6 s
    /// of the open here). At 22 the records written between two snapshots (about 100 bytes of this log per put, 8
    /// MiB of log entries apart) no longer fit its mutable part, so pages were flushed and evicted on the applying
    /// thread rather than by the snapshot's checkpoint: at 256 writers 7.4-9.4k writes/s and p99 72-151 ms against
    /// 8.7-9.9k and 82-105 ms at 23 (six runs and four, alternated). At a million keys 23 costs ~90 MB of RSS and ~130 ms of
    /// open against 22 (`Skiff.Bench recovery --keys 1000000 --memory-bits N`).</summary>
    public int MemorySizeBits { get; init; } = 23;
    /// <summary>log2 of a hybrid log segment file, for a new store (default 16 = 64 KiB). Compaction frees disk a
    /// whole segment at a time, and each segment has an object-log file holding the keys and values of its records
    /// (a record takes about 24 bytes here, so 1 KiB values make that file about 3 MiB); stores made before 1 GiB.</summary>
    public int SegmentSizeBits { get; init; } = 16;

    /// <summary>The sizes stores made before the <c>geometry</c> file existed were written with.</summary>
    internal static readonly StoreGeometry LegacyGeometry = new(20, 30);

    /// <summary>Compaction of the hybrid log starts (after a snapshot) once the store's files exceed both this and
    /// twice their size after the previous compaction (default 8 MiB): disk stays within a small multiple of the
    /// live data, and a compaction copies each live record forward only after as much garbage has built up.</summary>
    public long CompactionMinBytes { get; init; } = 8L << 20;
    /// <summary>Applies and snapshots are refused with <see cref="ErrorKind.StorageError"/> while the disk has less
    /// free space than this. FASTER cannot report a failed background page flush to the writer (on a full disk its
    /// writers wait for buffer space forever), so we stop before the disk is full. Null: twice the in-memory log
    /// plus the index plus 64 MiB, enough to flush memory and write one checkpoint with its index file (which grows
    /// with the keys: 17 MB at a million 16-byte keys).</summary>
    public long? MinFreeDiskBytes { get; init; }

    /// <summary>How many of the most recent changes (puts and deletes that took effect) the store keeps as its
    /// change history, for watchers resuming from an index (default 100,000; 0 keeps none). The history lives in
    /// the store under reserved keys, so snapshots carry it and replaying the log after a restart rebuilds it.</summary>
    public int WatchHistory { get; init; } = 100_000;

    /// <summary>The change history also keeps no more than this many bytes of keys and values (default 4 MiB; the
    /// oldest changes go first), so its disk use does not grow with the size of the values.</summary>
    public long WatchHistoryBytes { get; init; } = 4L << 20;

    /// <summary>How opening the store rebuilds its ordered key index (default <see cref="KeyIndexRebuild.LogScan"/>).
    /// Both give the same index; the other way is kept to compare their cost in the storage benchmark.</summary>
    public KeyIndexRebuild KeyIndexRebuild { get; init; } = KeyIndexRebuild.LogScan;

    /// <summary>Write the in-memory indexes (keys, change history, sessions) beside each checkpoint and read them when
    /// opening, instead of rebuilding them with a scan of the whole store (default true; a missing or damaged file
    /// falls back to the scan). Off only to measure or test the scan.</summary>
    public bool KeyIndexFile { get; init; } = true;

    /// <summary>Test hook, never for production: apply every write in a client session as if it had none, so a
    /// resent write is applied again. The fault harness uses it to show that it catches duplicated writes.</summary>
    internal bool UnsafeNoSessionDedup { get; init; }

    /// <summary>Where FASTER's devices come from: the real files, or (tests) a recording of them.</summary>
    internal IKvDevices Devices { get; init; } = RealKvDevices.Instance;

    internal long EffectiveMinFreeDiskBytes => MinFreeDiskBytes ?? (2L << MemorySizeBits) + IndexSizeBytes + (64L << 20);
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
