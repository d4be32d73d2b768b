namespace Skiff.Net.Storage;

/// <summary>
/// Keeps the state machine's hybrid log near the size of its live data. FASTER appends every new version of a key
/// (and, after a fold-over checkpoint, every update), so without compaction the store grows with the write history.
/// After each snapshot's checkpoint, once the store's files exceed both <see cref="KvOptions.CompactionMinBytes"/>
/// and twice their size after the previous compaction, this copies the live records of everything the checkpoint
/// holds to the tail, on a thread of its own while applying goes on (<see cref="FasterKvStore.Compact"/>). The next
/// checkpoint records the new begin address and FASTER then deletes the segments below it: a crash before that
/// recovers the previous checkpoint, whose files are all still there. Not thread-safe: the state machine calls it
/// under its lock, and waits for a running compaction before each checkpoint and before closing the store.
/// </summary>
internal sealed class KvCompactor
{
    private readonly FasterKvStore _store;
    private readonly string _dir;
    private readonly long _minBytes;
    private Task<long> _running = Task.FromResult(0L);
    private long _baseline;

    /// <summary>How many compactions have finished (for tests and diagnostics).</summary>
    public int Completed { get; private set; }

    /// <param name="store">The store to compact.</param>
    /// <param name="dir">Its directory.</param>
    /// <param name="minBytes">Never compact a store smaller than this.</param>
    public KvCompactor(FasterKvStore store, string dir, long minBytes)
    {
        _store = store;
        _dir = dir;
        _minBytes = minBytes;
    }

    /// <summary>Waits for a running compaction; throws if it failed (a storage error: the node stops).</summary>
    public void WaitIdle()
    {
        try
        {
            _running.GetAwaiter().GetResult();
        }
        catch (Exception e) when (e is not SkiffException)
        {
            if (e is IOException or UnauthorizedAccessException) throw StorageIo.Wrap(_dir, e);
            throw new SkiffException(ErrorKind.StorageError, $"compacting the key-value store in {_dir} failed: {e.Message}", e);
        }
    }

    /// <summary>After a checkpoint (nothing running): starts a compaction of everything it holds if the store has
    /// grown enough since the last one.</summary>
    public void AfterCheckpoint()
    {
        var bytes = LiveFileBytes(_dir, _store.BeginAddress >> _store.Geometry.SegmentSizeBits);
        if (bytes <= Math.Max(_minBytes, 2 * _baseline)) return;
        var until = _store.SafeReadOnlyAddress;
        _running = Task.Factory.StartNew(() =>
        {
            var begin = _store.Compact(until);
            // What is left from the new begin on: the live records copied forward and whatever was written
            // meanwhile; the next compaction waits until the store is twice that.
            _baseline = LiveFileBytes(_dir, begin >> _store.Geometry.SegmentSizeBits);
            Completed++;
            return begin;
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
    }

    /// <summary>Bytes of the hybrid log's segment files (and their object-log files) from segment
    /// <paramref name="firstSegment"/> on: what stays once the segments below are deleted.</summary>
    public static long LiveFileBytes(string dir, long firstSegment)
    {
        long total = 0;
        foreach (var path in Directory.EnumerateFiles(dir, "hlog.*"))
        {
            var dot = path.LastIndexOf('.');
            if (!long.TryParse(path.AsSpan(dot + 1), out var segment) || segment < firstSegment) continue;
            try { total += new FileInfo(path).Length; }
            catch (FileNotFoundException) { } // deleted by FASTER's truncation meanwhile
        }
        return total;
    }
}
