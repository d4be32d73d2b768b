using System.Diagnostics;

namespace Skiff.Net.Storage;

/// <summary>
/// Keeps the state machine's hybrid log near the size of its live data. FASTER appends every new version of a key
/// (and, after a fold-over checkpoint, every update), so without compaction the store grows with the write history.
/// <para>After a snapshot's checkpoint, once the log spans more than both <see cref="KvOptions.CompactionMinBytes"/>
/// and one and a half times the live records' estimated size (<see cref="EstimatedLiveBytes"/>), a pass starts over
/// the records below the checkpoint's read-only boundary: a record that is still its key's newest version is written
/// again (so it moves to the tail); superseded versions and tombstones are left behind. Each time the pass has read past a whole
/// segment, the begin address moves up to where it has read; the next checkpoint records that, and FASTER then
/// deletes the segments below it. A crash before that recovers the previous checkpoint, whose files are all still
/// there. So a long pass frees the front of the log as it goes instead of holding all of it until it ends.</para>
/// <para>The pass keeps a pace (<see cref="Behind"/>): it must have read through its range by the time the applies
/// since it began have written half the live size again. Without that, a store larger than memory grew without
/// bound: applies wrote faster than the fixed share of the applying thread could copy, and each pass started from a
/// larger log than the one before (100 MB of live data reached 2 GB, issue 16).</para>
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
    private readonly Func<long> _liveRecords;
    private readonly long _minBytes;
    private CompactionPass? _pass;
    // A pass decided on after a checkpoint but not begun: its scan starts at the first step, once the checkpoint's
    // overlay is in the store, so the snapshot that decides it does not wait for either.
    private (long Until, long Live, long Allowance)? _passUntil;
    // The last finished pass: the bytes and records it copied (exactly the live records of the range it read) and
    // the store's write counters when it began (the writes since, its copies aside, sample the size of the rest).
    private long _copiedBytes, _copiedRecords, _markBytes, _markRecords;
    // The begin address the last checkpoint recorded: segments below it are gone, the ones from it up to the begin
    // address now go with the next checkpoint.
    private long _checkpointBegin;
    private bool _finishedSinceCheckpoint;

    /// <summary>How many compactions have finished (for tests and diagnostics).</summary>
    public int Completed { get; private set; }

    /// <summary>Whether a pass is under way (<see cref="Step"/> has work to do).</summary>
    public bool Pending => _pass is not null || _passUntil is not null;

    /// <summary>Whether the pass under way is behind its pace: the applying thread should step it before applying
    /// more.</summary>
    public bool Behind => _passUntil is not null || (_pass?.Behind() ?? false);

    /// <summary>Bytes of whole segments that the next checkpoint frees: the pass moved the begin address past them
    /// since the last checkpoint.</summary>
    public long FreeableBytes
    {
        get
        {
            var bits = _store.Geometry.SegmentSizeBits;
            return Math.Max(0, (_store.BeginAddress >> bits) - (_checkpointBegin >> bits)) << bits;
        }
    }

    /// <summary>Whether a checkpoint now would free enough to ask for one: a pass finished since the last
    /// checkpoint, or the pass under way has freed twice <see cref="KvOptions.CompactionMinBytes"/> while what the last
    /// checkpoint holds on to has grown past twice the live size. That happens when the live data outgrows the
    /// memory budget: the pass is long, and its copies and the applies reach the disk before the next snapshot due by
    /// the Raft log's own threshold would free the front of the log (30 MB of values in 8 MiB: 131-137 MB of files
    /// against 92 MB). Not sooner: each snapshot writes the hash index and syncs, and a pass pauses for it; asking at
    /// every 4 MiB segment cost a fifth of the writes per second, at every 25 MB of a 100 MB store a third.</summary>
    public bool WantsCheckpoint
    {
        get
        {
            var freeable = FreeableBytes;
            if (freeable == 0) return false;
            if (_finishedSinceCheckpoint) return true;
            return _pass is { } p && freeable >= 2 * _minBytes && _store.TailAddress - _checkpointBegin > 2 * p.Live;
        }
    }

    /// <param name="store">The store to compact.</param>
    /// <param name="liveRecords">How many records are live now (keys, kept changes, sessions).</param>
    /// <param name="minBytes">Never compact a log smaller than this.</param>
    public KvCompactor(FasterKvStore store, Func<long> liveRecords, long minBytes)
    {
        _store = store;
        _checkpointBegin = store.BeginAddress;
        _liveRecords = liveRecords;
        _minBytes = minBytes;
    }

    /// <summary>The live records' size: what the last pass copied (exactly the live records of the range it read),
    /// plus the records it did not see at the mean size of the records written since it began (before any pass: the
    /// records at the mean size of those written since opening). The writes include the state machine's small
    /// bookkeeping records, rewritten with every apply, so the estimate errs low: compaction starts early rather than
    /// late.</summary>
    public long EstimatedLiveBytes()
    {
        var records = _liveRecords();
        if (_copiedRecords > 0 && records <= _copiedRecords) return _copiedBytes * records / _copiedRecords;
        var sampleRecords = _store.WrittenRecords - _markRecords - _copiedRecords;
        var sampleBytes = _store.WrittenBytes - _markBytes - _copiedBytes;
        var perRecord = sampleRecords > 0 ? (double)sampleBytes / sampleRecords
            : _copiedRecords > 0 ? (double)_copiedBytes / _copiedRecords : 0;
        return _copiedBytes + (long)((records - _copiedRecords) * perRecord);
    }

    /// <summary>After a checkpoint: starts a pass over everything the checkpoint holds if the log spans more than
    /// one and a half times the live records and no pass is under way. Each pass copies about the live size, so this
    /// trades copying (the live size again for every half of it written) for disk: issue 16 bounds the whole
    /// directory, checkpoint files and the Raft log included, by three times the live data, and a log allowed twice
    /// the live records peaked too close to that (285 MB for 102 MB of values, against 241 MB at one and a half).</summary>
    public void AfterCheckpoint()
    {
        _checkpointBegin = _store.BeginAddress;
        _finishedSinceCheckpoint = false;
        if (Pending) return;
        var live = EstimatedLiveBytes();
        if (_store.TailAddress - _store.BeginAddress <= Math.Max(_minBytes, live + live / 2)) return;
        var until = _store.SafeReadOnlyAddress;
        if (until > _store.BeginAddress) _passUntil = (until, live, Math.Max(_minBytes, live / 2));
    }

    /// <summary>Runs the pass under way for about <paramref name="budget"/> or <paramref name="maxRecords"/>
    /// records, whichever comes first, moving the begin address past each whole segment read. Does nothing if no
    /// pass is under way.</summary>
    /// <param name="budget">How long to run before returning.</param>
    /// <param name="maxRecords">How many records to look at before returning (tests make passes span many steps).</param>
    public void Step(TimeSpan budget, int maxRecords = int.MaxValue)
    {
        if (_passUntil is { } next)
        {
            // The scan asks for records' addresses, which drains the overlay whole: drain it within the budget first.
            if (!_store.DrainFor(budget)) return;
            _pass = new CompactionPass(_store, next.Until, next.Live, next.Allowance);
            _passUntil = null;
            return;
        }
        if (_pass is not { } pass) return;
        var done = pass.Run(budget, maxRecords);
        var read = done ? pass.Until : pass.ReadUntil;
        var segmentBits = _store.Geometry.SegmentSizeBits;
        if (done || read >> segmentBits > _store.BeginAddress >> segmentBits) _store.ShiftBeginAddress(read);
        if (!done) return;
        pass.Dispose();
        _pass = null;
        _finishedSinceCheckpoint = true;
        (_copiedBytes, _copiedRecords, _markBytes, _markRecords) = (pass.CopiedBytes, pass.CopiedRecords, pass.StartBytes, pass.StartRecords);
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

    /// <summary>One pass: a scan of the records from the begin address up to <see cref="Until"/>, resumable across
    /// steps. Applies between steps only add records above <see cref="Until"/>, so a key they touch is never
    /// copied back over its newer version: its newest record is no longer the one scanned.</summary>
    private sealed class CompactionPass : IDisposable
    {
        private readonly FasterKvStore _store;
        private readonly FasterKvStore.RecordScan _scan;
        private readonly IEnumerator<(string Key, long Address)> _records;
        private readonly long _from;
        // The records of one step's batch and their values if newest: looked up together, so lookups that go to
        // disk wait once per batch rather than once each. Small enough that a batch stays within a step's budget.
        private const int Batch = 64;
        private readonly (string Key, long Address)[] _batch = new (string, long)[Batch];
        private readonly byte[]?[] _values = new byte[]?[Batch];

        public long Until { get; }
        /// <summary>The live size estimated when the pass began.</summary>
        public long Live { get; }
        /// <summary>What the applies may write before the pass must have read its whole range.</summary>
        public long Allowance { get; }
        public long StartBytes { get; }
        public long StartRecords { get; }
        public long CopiedBytes { get; private set; }
        public long CopiedRecords { get; private set; }

        /// <summary>Everything below this has been read (a record boundary).</summary>
        public long ReadUntil => Math.Min(Until, _scan.NextAddress);

        public CompactionPass(FasterKvStore store, long until, long live, long allowance)
        {
            Live = live;
            _store = store;
            Until = until;
            _from = store.BeginAddress;
            Allowance = Math.Max(1, allowance);
            StartBytes = store.WrittenBytes;
            StartRecords = store.WrittenRecords;
            _scan = store.ScanLiveRecords(_from, until);
            _records = _scan.Records.GetEnumerator();
        }

        /// <summary>Whether the pass has read less of its range than the applies' writes since it began allow: all of
        /// it by the time they reach the allowance.</summary>
        public bool Behind()
        {
            var written = _store.WrittenBytes - StartBytes - CopiedBytes;
            var due = (Until - _from) * Math.Min(1.0, (double)written / Allowance);
            return ReadUntil - _from < due;
        }

        /// <summary>Copies forward the newest versions met, for about <paramref name="budget"/> or
        /// <paramref name="maxRecords"/> records; true when the scan reached <see cref="Until"/>.</summary>
        public bool Run(TimeSpan budget, int maxRecords)
        {
            var start = Stopwatch.GetTimestamp();
            for (var looked = 0; ;)
            {
                var wanted = Math.Min(Batch, maxRecords - looked);
                var met = 0;
                while (met < wanted && _records.MoveNext()) _batch[met++] = _records.Current;
                CopyNewest(met);
                looked += met;
                if (met < wanted) return true;
                if (looked >= maxRecords || Stopwatch.GetElapsedTime(start) >= budget) return false;
            }
        }

        /// <summary>Writes again those of the first <paramref name="count"/> records of the batch that are still
        /// their keys' newest versions (looked up together, <see cref="FasterKvStore.ValuesIfNewestAt"/>).</summary>
        private void CopyNewest(int count)
        {
            if (count == 0) return;
            _store.ValuesIfNewestAt(_batch.AsSpan(0, count), _values);
            for (var i = 0; i < count; i++)
            {
                if (_values[i] is not { } value) continue;
                _values[i] = null;
                var before = _store.WrittenBytes;
                _store.Upsert(_batch[i].Key, value);
                CopiedBytes += _store.WrittenBytes - before;
                CopiedRecords++;
            }
        }

        public void Dispose()
        {
            _records.Dispose();
            _scan.Dispose();
        }
    }
}
