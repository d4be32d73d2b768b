using System.Diagnostics;

namespace Skiff.Net.Storage;

/// <summary>
/// Keeps the state machine's hybrid log near the size of its live data. FASTER appends every new version of a key
/// (and, after a fold-over checkpoint, every update), so without compaction the store grows with the write history.
/// <para>After a snapshot's checkpoint, once the store's files exceed both <see cref="KvOptions.CompactionMinBytes"/>
/// and twice their size after the previous compaction, a pass starts over the records below the checkpoint's
/// read-only boundary: a record that is still its key's newest version is written again (so it moves to the tail);
/// superseded versions and tombstones are left behind. When the pass reaches the boundary the begin address moves up
/// to it; the next checkpoint records that, and FASTER then deletes the segments below it. A crash before that
/// recovers the previous checkpoint, whose files are all still there.</para>
/// <para>The pass runs in small steps (<see cref="Step"/>) on the applying thread, between applies and under the
/// state machine's lock, through the store's one session: every store operation stays on one thread. FASTER's own
/// <c>Log.Compact</c> ran on a second session beside the applier, and with this store's object values that
/// corrupted the managed heap (segfaults in the GC, seen in the cluster benchmark, issue 16). A step is bounded in
/// time, so applying never waits long for it. Not thread-safe: the state machine calls it under its lock.</para>
/// </summary>
internal sealed class KvCompactor
{
    /// <summary>How long one step may run before it yields to applying.</summary>
    public static readonly TimeSpan StepBudget = TimeSpan.FromMilliseconds(2);

    private readonly FasterKvStore _store;
    private readonly string _dir;
    private readonly long _minBytes;
    private CompactionPass? _pass;
    // A pass decided on after a checkpoint but not begun: its scan starts at the first step, once the checkpoint's
    // overlay is in the store, so the snapshot that decides it does not wait for either.
    private long? _passUntil;
    private long _baseline;

    /// <summary>How many compactions have finished (for tests and diagnostics).</summary>
    public int Completed { get; private set; }

    /// <summary>Whether a pass is under way (<see cref="Step"/> has work to do).</summary>
    public bool Pending => _pass is not null || _passUntil is not null;

    /// <param name="store">The store to compact.</param>
    /// <param name="dir">Its directory.</param>
    /// <param name="minBytes">Never compact a store smaller than this.</param>
    public KvCompactor(FasterKvStore store, string dir, long minBytes)
    {
        _store = store;
        _dir = dir;
        _minBytes = minBytes;
    }

    /// <summary>After a checkpoint: starts a pass over everything the checkpoint holds if the store has grown
    /// enough since the last compaction and no pass is under way.</summary>
    public void AfterCheckpoint()
    {
        if (Pending) return;
        var bytes = LiveFileBytes(_dir, _store.BeginAddress >> _store.Geometry.SegmentSizeBits);
        if (bytes <= Math.Max(_minBytes, 2 * _baseline)) return;
        var until = _store.SafeReadOnlyAddress;
        if (until > _store.BeginAddress) _passUntil = until;
    }

    /// <summary>Runs the pass under way for about <paramref name="budget"/> or <paramref name="maxRecords"/>
    /// records, whichever comes first; when it reaches its end, moves the begin address. Does nothing if no pass is
    /// under way.</summary>
    /// <param name="budget">How long to run before returning.</param>
    /// <param name="maxRecords">How many records to look at before returning (tests make passes span many steps).</param>
    public void Step(TimeSpan budget, int maxRecords = int.MaxValue)
    {
        if (_passUntil is { } begin)
        {
            // The scan asks for records' addresses, which drains the overlay whole: drain it within the budget first.
            if (!_store.DrainFor(budget)) return;
            _pass = new CompactionPass(_store, begin);
            _passUntil = null;
            return;
        }
        if (_pass is null) return;
        if (!_pass.Run(budget, maxRecords)) return;
        var until = _pass.Until;
        _pass.Dispose();
        _pass = null;
        _store.ShiftBeginAddress(until);
        // What is left from the new begin on: the live records copied forward and whatever was written meanwhile;
        // the next compaction waits until the store is twice that.
        _baseline = LiveFileBytes(_dir, until >> _store.Geometry.SegmentSizeBits);
        Completed++;
    }

    /// <summary>Abandons a pass under way (the store is closing or being replaced). What it copied is harmless:
    /// newest versions written again.</summary>
    public void Abandon()
    {
        _pass?.Dispose();
        _pass = null;
        _passUntil = null;
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

    /// <summary>One pass: a scan of the records from the begin address up to <see cref="Until"/>, resumable across
    /// steps. Applies between steps only add records above <see cref="Until"/>, so a key they touch is never
    /// copied back over its newer version: its newest record is no longer the one scanned.</summary>
    private sealed class CompactionPass : IDisposable
    {
        private readonly FasterKvStore _store;
        private readonly IDisposable _scan;
        private readonly IEnumerator<(string Key, byte[] Value, long Address)> _records;

        public long Until { get; }

        public CompactionPass(FasterKvStore store, long until)
        {
            _store = store;
            Until = until;
            var scan = store.ScanLiveRecords(store.BeginAddress, until);
            _scan = scan;
            _records = scan.Records.GetEnumerator();
        }

        /// <summary>Copies forward the newest versions met, for about <paramref name="budget"/> or
        /// <paramref name="maxRecords"/> records; true when the scan reached <see cref="Until"/>.</summary>
        public bool Run(TimeSpan budget, int maxRecords)
        {
            var start = Stopwatch.GetTimestamp();
            for (var n = 1; ; n++)
            {
                if (!_records.MoveNext()) return true;
                var (key, value, address) = _records.Current;
                if (_store.NewestAddress(key) == address) _store.Upsert(key, value);
                if (n >= maxRecords || (n % 32 == 0 && Stopwatch.GetElapsedTime(start) >= budget)) return false;
            }
        }

        public void Dispose()
        {
            _records.Dispose();
            _scan.Dispose();
        }
    }
}
