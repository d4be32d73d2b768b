namespace Skiff.Net.Storage;

/// <summary>Settings of a <see cref="KvStateMachine"/>. The in-memory sizes bound memory use; data beyond them
/// lives on disk and is read back on demand, so a store larger than memory works.</summary>
internal sealed record KvOptions
{
    /// <summary>Size of FASTER's hash index in bytes, for a new store (64 bytes a bucket of 7 entries; default 4 MiB,
    /// 65,536 buckets; a store keeps the size its checkpoint has). More keys than the buckets hold go to overflow
    /// buckets, which FASTER allocates as needed and checkpoints with the index, so the index still grows with the
    /// keys. Every snapshot writes the whole index and the previous one stays until it is durable: at 16 MiB that
    /// was 33 MiB of a small store's disk peak, and a million keys recovered and loaded no faster (issue 16; at
    /// 1 MiB loading a million keys took a quarter longer).</summary>
    public long IndexSizeBytes { get; init; } = 1L << 22;
    /// <summary>log2 of a page of the hybrid log, for a new store (default 21 = 2 MiB; a store keeps the sizes it
    /// was made with, see <see cref="StoreGeometry"/>). A record never crosses a page, so a page must hold the largest
    /// record: a value with the longest key, and its copy in the change history (<see cref="PageSizeBitsFor"/>; 21
    /// holds values up to 2 MiB less 8 KiB, the default limit being 1 MiB). A larger value is refused with
    /// <see cref="ErrorKind.StorageError"/>.</summary>
    public int PageSizeBits { get; init; } = 21;
    /// <summary>log2 of the in-memory part of the hybrid log: the memory budget of the data (default 26 = 64 MiB; at
    /// least four pages). Keys and values lie in the log's pages, so this bounds the memory they take however large
    /// the data grows: older pages are flushed and evicted and read back from disk on demand (the operating system's
    /// page cache often serves those reads). 90% of it is the mutable part, where a key written again is updated in
    /// place; what is written between two snapshots (about twice `SnapshotBytes` of values with the change history)
    /// should fit it, or pages are flushed on the applying thread rather than by the snapshot's checkpoint. Stores of
    /// older versions kept the values as objects on the managed heap, which this did not count.</summary>
    public int MemorySizeBits { get; init; } = 26;
    /// <summary>log2 of a hybrid log segment file, for a new store (default 22 = 4 MiB; at least a page). Compaction
    /// frees disk a whole segment at a time; stores made before the <c>geometry</c> file existed have 1 GiB.</summary>
    public int SegmentSizeBits { get; init; } = 22;

    /// <summary>The smallest in-memory log is 2^this pages: FASTER needs a few pages besides the one being filled.</summary>
    internal const int MinMemoryPagesBits = 2;

    /// <summary>Bytes a record may need beyond its value: the record header, the longest key with its length, and in
    /// a change-history record the change's type, the key's length and the key again.</summary>
    internal const int RecordOverheadBytes = 2 * KvStateMachine.MaxKeyBytes + 64;

    /// <summary>The smallest <see cref="PageSizeBits"/> (at least 16) whose pages hold a value of
    /// <paramref name="maxValueBytes"/> under any key, and its change-history record.</summary>
    /// <param name="maxValueBytes">The largest value to be written.</param>
    public static int PageSizeBitsFor(long maxValueBytes)
    {
        var bits = 16;
        while ((1L << bits) < maxValueBytes + RecordOverheadBytes) bits++;
        return bits;
    }

    /// <summary>The largest value a store with pages of 2^<paramref name="pageSizeBits"/> bytes holds under any key.</summary>
    /// <param name="pageSizeBits">log2 of the store's page.</param>
    public static long MaxValueBytesFor(int pageSizeBits) => (1L << pageSizeBits) - RecordOverheadBytes;

    /// <summary>The sizes stores made before the <c>geometry</c> file existed were written with.</summary>
    internal static readonly StoreGeometry LegacyGeometry = new(20, 30);

    /// <summary>Compaction of the hybrid log starts (after a snapshot) once the log spans more than both this and one
    /// and a half times the estimated size of its live records (default 8 MiB): disk stays within a small multiple of
    /// the live data, and a pass copies the live records forward only once half as much garbage has built up.</summary>
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
