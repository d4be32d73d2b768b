using System.Threading.Channels;
using Microsoft.FSharp.Collections;
using Skiff.Core;

namespace Skiff.Net.Runtime;

/// <summary>
/// Applies committed entries to the state machine in order, on its own task, and answers what depends on it:
/// writes (Accepted: succeed when the entry applied at the index has the proposal's term), linearizable reads
/// (ReadReady: serve once applied ≥ index), snapshots, and watches (every change, in commit order, with a bounded
/// buffer per subscriber and a history for resuming).
/// </summary>
internal sealed class Applier
{
    private abstract record Op;
    private sealed record ApplyOp(FSharpList<Entry> Entries, long Bytes) : Op;
    private sealed record WriteOp(Pending Pending, long Index, long Term) : Op;
    private sealed record ReadOp(List<Pending> Reads, long Index) : Op;
    private sealed record SnapshotOp(SnapshotMeta Meta) : Op;
    private sealed record InstallOp(string Staged, SnapshotMeta Meta, TaskCompletionSource Done) : Op;

    private readonly Channel<Op> _queue = Channel.CreateUnbounded<Op>(new UnboundedChannelOptions { SingleReader = true, AllowSynchronousContinuations = true });
    private readonly IStateMachine _sm;

    /// <summary>Where slow compactions, snapshots and failed observers are reported (the fail-stop itself is logged
    /// by the node).</summary>
    internal Microsoft.Extensions.Logging.ILogger Logger { get; init; } = Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;
    private readonly IChangeHistory? _durable;
    private readonly ISnapshotStore _snapshots;
    private readonly Action<Event> _post;
    private readonly int _watchCapacity;
    private readonly int _historyCapacity;
    // Writes waiting for their index, smallest first (a heap: no allocation per write, unlike a SortedDictionary's
    // enumerator for First()).
    private readonly PriorityQueue<(Pending Pending, long Term), long> _writes = new();
    private readonly List<(long Index, List<Pending> Reads)> _reads = new();
    private readonly Dictionary<long, (long Term, LogResult? Result)> _recent = new();
    private readonly object _subsGate = new();
    private readonly List<Subscription> _subs = new();
    private readonly Queue<Change> _history = new();
    private long _historyFloor;
    private Task _run = Task.CompletedTask;

    /// <summary>The most watches served at once (<see cref="SkiffServerOptions.MaxWatchers"/>): one more is refused
    /// with Overloaded. Each costs a buffer of up to the watch capacity and a prefix test per applied change.</summary>
    internal int MaxWatchers { get; set; } = SkiffServerOptions.DefaultMaxWatchers;

    /// <summary>Raised on the applier task for every change applied (the facade's event hook).</summary>
    public event Action<Change>? Changed;

    private readonly Action<Exception> _fatal;
    private readonly Housekeeping _housekeeping;

    public Applier(IStateMachine sm, ISnapshotStore snapshots, Action<Event> post, int watchCapacity, int historyCapacity,
        Action<Exception> fatal)
    {
        _fatal = fatal;
        _housekeeping = new Housekeeping(sm, fatal);
        _sm = sm;
        _durable = sm as IChangeHistory;
        _snapshots = snapshots;
        _post = post;
        _watchCapacity = watchCapacity;
        _historyCapacity = historyCapacity;
    }

    /// <summary>The index applied so far.</summary>
    public long AppliedIndex => _sm.AppliedIndex;

    /// <summary>Starts applying, from where the state machine is (after it restored its snapshot).</summary>
    public void Initialise()
    {
        _historyFloor = _sm.AppliedIndex;
        _run = DedicatedThread.Start("skiff-applier", Run);
    }

    /// <summary>Entries queued and not yet applied: the node refuses proposals, and drops peer appends, while it is
    /// full (see <see cref="QueueBudget"/>).</summary>
    public QueueBudget Backlog { get; } = new(int.MaxValue, DefaultMaxBacklogBytes);

    /// <summary>The default byte cap of <see cref="Backlog"/>.</summary>
    public const long DefaultMaxBacklogBytes = 64L << 20;

    public void Apply(FSharpList<Entry> entries)
    {
        var op = new ApplyOp(entries, QueueBudget.SizeOf(entries));
        Backlog.Add(op.Bytes);
        if (!_queue.Writer.TryWrite(op)) Backlog.Remove(op.Bytes);
    }

    public void WaitWrite(Pending p, long index, long term)
    {
        p.Index = index;
        RuntimeMetrics.Proposals.Add(1);
        if (!_queue.Writer.TryWrite(new WriteOp(p, index, term))) p.Fail(Closed);
    }

    public void WaitRead(List<Pending> reads, long index)
    {
        if (!_queue.Writer.TryWrite(new ReadOp(reads, index))) foreach (var p in reads) p.Fail(Closed);
    }

    public void TakeSnapshot(SnapshotMeta meta) => _queue.Writer.TryWrite(new SnapshotOp(meta));

    public Task Install(string staged, SnapshotMeta meta)
    {
        var op = new InstallOp(staged, meta, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
        if (!_queue.Writer.TryWrite(op)) op.Done.TrySetException(Closed);
        return op.Done.Task;
    }

    private static SkiffException Closed => new(ErrorKind.StreamClosed, "the node is shutting down");

    private void Run()
    {
        var reader = _queue.Reader;
        while (true)
        {
            // Compaction advances in short steps on this thread (Housekeeping): here while nothing else is queued.
            if (_housekeeping.Pending && !reader.TryPeek(out _) && !reader.Completion.IsCompleted)
            {
                if (!_housekeeping.Step()) return;
                continue;
            }
            if (!DedicatedThread.WaitToRead(reader)) return;
            while (reader.TryRead(out var op))
            {
                try
                {
                    switch (op)
                    {
                        case ApplyOp a:
                            Backlog.Remove(a.Bytes);
                            DoApply(a.Entries);
                            if (!_housekeeping.StepIfDue()) return;
                            break;
                        case WriteOp w: DoWaitWrite(w); break;
                        case ReadOp r:
                            if (_sm.AppliedIndex >= r.Index) foreach (var p in r.Reads) p.Succeed(null);
                            else _reads.Add((r.Index, r.Reads));
                            break;
                        case SnapshotOp s: DoSnapshot(s.Meta); break;
                        case InstallOp i: DoInstall(i); break;
                    }
                }
                catch (Exception ex)
                {
                    // The state machine may now differ from the log: stop rather than serve or apply on top of it.
                    _fatal(ex as SkiffException ?? new SkiffException(ErrorKind.StorageError, "applying failed: " + ex.Message, ex));
                    return;
                }
            }
        }
    }

    private void DoWaitWrite(WriteOp w)
    {
        if (w.Index <= _sm.AppliedIndex)
        {
            if (_recent.TryGetValue(w.Index, out var r) && r.Term == w.Term) w.Pending.Succeed(r.Result);
            else w.Pending.Fail(Overwritten(w.Index));
            return;
        }
        _writes.Enqueue((w.Pending, w.Term), w.Index);
    }

    private static SkiffException Overwritten(long index) =>
        new(ErrorKind.InsertFailed, $"the proposal at index {index} was replaced by another leader's entry; it did not take effect");

    private void DoApply(FSharpList<Entry> entries)
    {
        foreach (var e in entries)
        {
            if (e.Index <= _sm.AppliedIndex) continue;
            LogResult? result = null;
            Change? change = null;
            switch (e.Payload)
            {
                case Payload.Command c:
                    var decoded = LogCommandCodec.decodeArray(c.Bytes);
                    // A committed command this member cannot read (written by a newer version, or damaged) must stop
                    // it: skipping it would leave its state machine different from every other member's.
                    if (decoded.IsError)
                        throw new SkiffException(ErrorKind.StorageCorrupted,
                            $"the committed entry {e.Index} holds a command this member cannot decode ({decoded.ErrorValue}); " +
                            "it stops rather than diverge from the other members (is it older than they are?)");
                    result = _sm.Apply(e.Index, e.Term, decoded.ResultValue, out change);
                    break;
                default:
                    _sm.Skip(e.Index, e.Term);
                    break;
            }
            _recent[e.Index] = (e.Term, result);
            if (_recent.Count > 8192) _recent.Remove(e.Index - 8192);
            while (_writes.TryPeek(out var w, out var index) && index <= e.Index)
            {
                _writes.Dequeue();
                if (index == e.Index && w.Term == e.Term) w.Pending.Succeed(result);
                else w.Pending.Fail(Overwritten(index));
            }
            if (change is { } ch) Publish(ch);
        }
        ServeReads();
    }

    private void ServeReads()
    {
        if (_reads.Count == 0) return;
        var applied = _sm.AppliedIndex;
        _reads.RemoveAll(r =>
        {
            if (r.Index > applied) return false;
            foreach (var p in r.Reads) p.Succeed(null);
            return true;
        });
    }

    private void DoSnapshot(SnapshotMeta asked)
    {
        if (_sm.AppliedIndex == 0) return;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var meta = _snapshots.Take(asked.Term, asked.Configuration);
        if (sw.ElapsedMilliseconds > 100) Microsoft.Extensions.Logging.LoggerExtensions.LogWarning(Logger, "Skiff: snapshot at {Index} took {Milliseconds} ms (applying waited)", meta.Index, sw.ElapsedMilliseconds);
        _post(Event.NewSnapshotTaken(meta));
    }

    private void DoInstall(InstallOp op)
    {
        try
        {
            var before = _sm.AppliedIndex;
            _snapshots.Install(op.Staged, op.Meta);
            while (_writes.TryPeek(out var w, out var index) && index <= op.Meta.Index)
            {
                _writes.Dequeue();
                w.Pending.Fail(Overwritten(index));
            }
            ServeReads();
            CatchUpWatchers(before, op.Meta.Index);
            op.Done.TrySetResult();
        }
        catch (Exception ex)
        {
            op.Done.TrySetException(ex);
            _fatal(new SkiffException(ErrorKind.StorageError, "installing a snapshot failed: " + ex.Message, ex));
        }
    }

    // ---------------- watches ----------------

    /// <summary>A watcher of changes under a prefix.</summary>
    internal sealed class Subscription
    {
        public required string Prefix { get; init; }
        public required long FromIndex { get; init; }
        public required Channel<Change> Channel { get; init; }
    }

    /// <summary>After a snapshot install moved the state machine from <paramref name="before"/> to
    /// <paramref name="installed"/>: the changes in between were never applied here, so they are published from the
    /// installed snapshot's change history (everything up to <paramref name="before"/> was committed, so it agrees
    /// with that history). If the history does not reach back that far, watchers would miss changes: they are
    /// ended with StreamClosed naming the index to resume from, and the in-memory history restarts after the
    /// snapshot.</summary>
    private void CatchUpWatchers(long before, long installed)
    {
        var missed = new List<Change>();
        long floor = installed;
        if (installed >= before && _durable is not null && _durable.TryReadChanges(before + 1, installed, "", missed, out floor))
        {
            foreach (var c in missed) Publish(c);
            return;
        }
        lock (_subsGate)
        {
            _history.Clear();
            _historyFloor = installed;
            var gone = new SkiffException(ErrorKind.StreamClosed,
                $"watch ended: this node installed a snapshot at index {installed} and no longer has the changes after {before} up to {floor}; list the keys and watch from {installed + 1}");
            foreach (var s in _subs) s.Channel.Writer.TryComplete(gone);
            _subs.Clear();
        }
    }

    private void Publish(Change change)
    {
        SafeChanged(change);
        lock (_subsGate)
        {
            _history.Enqueue(change);
            while (_history.Count > _historyCapacity) _historyFloor = _history.Dequeue().Index;
            for (var i = _subs.Count - 1; i >= 0; i--)
            {
                var s = _subs[i];
                if (change.Index < s.FromIndex || !change.Key.StartsWith(s.Prefix, StringComparison.Ordinal)) continue;
                if (!s.Channel.Writer.TryWrite(change))
                {
                    s.Channel.Writer.TryComplete(new SkiffException(ErrorKind.StreamClosed,
                        $"watch dropped: the subscriber fell more than {_watchCapacity} changes behind at index {change.Index}; resume from that index"));
                    _subs.RemoveAt(i);
                }
            }
        }
    }

    private void SafeChanged(Change change)
    {
        try { Changed?.Invoke(change); }
        catch (Exception ex) { Microsoft.Extensions.Logging.LoggerExtensions.LogWarning(Logger, ex, "Skiff: a change observer failed"); }
    }

    private static SkiffException Compacted(long fromIndex, long floor) =>
        new(ErrorKind.StreamClosed,
            $"cannot resume from index {fromIndex}: changes up to index {floor} are compacted away on this node; the oldest index still available is {floor + 1} (list the keys and watch from there)");

    /// <summary>Starts a watch. With <paramref name="fromIndex"/> &gt; 0, changes at or after that index that were
    /// already applied come first, then live ones, with no gap and no duplicate. Recent changes come from the
    /// in-memory history; older ones from the state machine's durable change history (which survives restarts);
    /// older than both is refused with StreamClosed naming the oldest index still available.</summary>
    public ChannelReader<Change> Subscribe(string prefix, long fromIndex, CancellationToken ct)
    {
        // The bulk of a backlog older than the in-memory history is read before taking the lock, so applying is
        // not held up by it; under the lock only what left the in-memory history meanwhile is added.
        List<Change>? older = null;
        long olderTo = 0;
        if (fromIndex > 0 && _durable is not null)
        {
            var memoryFloor = Volatile.Read(ref _historyFloor);
            if (fromIndex <= memoryFloor)
            {
                older = new();
                if (!_durable.TryReadChanges(fromIndex, memoryFloor, prefix, older, out var floor)) throw Compacted(fromIndex, floor);
                olderTo = memoryFloor;
            }
        }
        lock (_subsGate)
        {
            // A slot is held from here until the watch leaves _subs: cancelled, dropped as too slow, ended by a
            // snapshot install or by shutdown.
            if (_subs.Count >= MaxWatchers)
                throw new SkiffException(ErrorKind.Overloaded,
                    $"this node already serves {_subs.Count} watches, its limit (MaxWatchers); end one or watch through another member");
            var backlog = new List<Change>();
            if (fromIndex > 0)
            {
                if (fromIndex <= _historyFloor && fromIndex <= _sm.AppliedIndex)
                {
                    // Published changes at or below _historyFloor are no longer in memory; every one above it is.
                    if (_durable is null) throw Compacted(fromIndex, _historyFloor);
                    older ??= new();
                    var from = Math.Max(fromIndex, olderTo + 1);
                    if (from <= _historyFloor && !_durable.TryReadChanges(from, _historyFloor, prefix, older, out var floor))
                        throw Compacted(fromIndex, floor);
                    backlog.AddRange(older);
                }
                foreach (var c in _history)
                    if (c.Index >= fromIndex && c.Key.StartsWith(prefix, StringComparison.Ordinal)) backlog.Add(c);
            }
            var channel = Channel.CreateBounded<Change>(new BoundedChannelOptions(_watchCapacity + backlog.Count)
            {
                SingleReader = true,
                SingleWriter = true,
                FullMode = BoundedChannelFullMode.Wait,
            });
            foreach (var c in backlog) channel.Writer.TryWrite(c);
            var sub = new Subscription { Prefix = prefix, FromIndex = fromIndex, Channel = channel };
            _subs.Add(sub);
            ct.Register(() =>
            {
                lock (_subsGate) _subs.Remove(sub);
                channel.Writer.TryComplete();
            });
            return channel.Reader;
        }
    }

    public async ValueTask DisposeAsync(Exception shutdown)
    {
        _queue.Writer.TryComplete();
        try { await _run.ConfigureAwait(false); } catch (Exception) { }
        while (_writes.TryDequeue(out var w, out _)) w.Pending.Fail(shutdown);
        foreach (var r in _reads) foreach (var p in r.Reads) p.Fail(shutdown);
        _reads.Clear();
        lock (_subsGate)
        {
            foreach (var s in _subs) s.Channel.Writer.TryComplete(shutdown);
            _subs.Clear();
        }
    }
}
