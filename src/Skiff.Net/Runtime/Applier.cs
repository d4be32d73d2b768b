using System.Threading.Channels;
using Microsoft.FSharp.Collections;
using Skiff.Core;
using Skiff.Net.Storage.Ports;

namespace Skiff.Net.Runtime;

/// <summary>
/// Applies committed entries to the state machine in order, on its own task, and answers what depends on it:
/// writes (Accepted: succeed when the entry applied at the index has the proposal's term), linearizable reads
/// (ReadReady: serve once applied ≥ index), snapshots, and watches (every change, in commit order, with a bounded
/// buffer per subscriber and a history for resuming).
/// </summary>
internal sealed partial class Applier
{
    private abstract record Op;
    private sealed record ApplyOp(FSharpList<Entry> Entries, long Bytes) : Op;
    private sealed record WriteOp(Pending Pending, long Index, long Term) : Op;
    private sealed record ReadOp(List<Pending> Reads, long Index) : Op;
    private sealed record SnapshotOp(SnapshotMeta Meta) : Op;
    private sealed record SnapshotReadyOp : Op;
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
    // Writes waiting for their index, smallest first (a heap: no allocation per write, unlike a SortedDictionary's
    // enumerator for First()). The loop adds to it directly, under the gate, rather than through the queue: a write's
    // registration then costs the applier no wake-up of its own (it is found when its entry is applied).
    private readonly PriorityQueue<(Pending Pending, long Term), long> _writes = new();
    private readonly object _writesGate = new();
    // The index applied so far as the loop may see it (under _writesGate), and whether the applier has stopped.
    private long _appliedMark;
    private bool _closed;
    // Writes answered by the entry just applied (applier only; reused, answered outside the gate).
    private readonly List<((Pending Pending, long Term) Write, long Index)> _due = new();
    private readonly List<(long Index, List<Pending> Reads)> _reads = new();
    private readonly Dictionary<long, (long Term, LogResult? Result)> _recent = new();
    private readonly object _subsGate = new();
    private readonly List<Subscription> _subs = new();
    private readonly ChangeRing _history;

    /// <summary>The in-memory change history keeps no more than this many bytes of records (16 MiB of keys, values
    /// and a few bytes each; and no more than its count of changes): with large values a count alone held gigabytes.
    /// Older changes are read from the state machine's durable history.</summary>
    internal const long MaxHistoryBytes = 16L << 20;

    /// <summary>Bytes of records in the in-memory change history (for tests).</summary>
    internal long HistoryBytes { get { lock (_subsGate) return _history.Bytes; } }
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
        _housekeeping = new Housekeeping(sm, fatal, () => post(Event.SnapshotWanted));
        _sm = sm;
        _durable = sm as IChangeHistory;
        _snapshots = snapshots;
        _post = post;
        _watchCapacity = watchCapacity;
        _history = new ChangeRing(historyCapacity, MaxHistoryBytes);
    }

    /// <summary>The index applied so far.</summary>
    public long AppliedIndex => _sm.AppliedIndex;

    /// <summary>Starts applying, from where the state machine is (after it restored its snapshot).</summary>
    public void Initialise()
    {
        _history.Clear(_sm.AppliedIndex);
        _appliedMark = _sm.AppliedIndex;
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
        lock (_writesGate)
        {
            if (_closed)
            {
                p.Fail(Closed);
                return;
            }
            if (index > _appliedMark)
            {
                _writes.Enqueue((p, term), index);
                return;
            }
        }
        // Already applied (an entry committed before the loop got here): the applier answers from its recent results.
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
                        case SnapshotReadyOp: FinishSnapshot(); break;
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
        lock (_writesGate) _writes.Enqueue((w.Pending, w.Term), w.Index);
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
            lock (_writesGate)
            {
                _appliedMark = e.Index;
                while (_writes.TryPeek(out var w, out var index) && index <= e.Index) _due.Add((_writes.Dequeue(), index));
            }
            // Answered outside the gate: an answer may run its caller's continuation here (see Pending).
            foreach (var (w, index) in _due)
            {
                if (index == e.Index && w.Term == e.Term) w.Pending.Succeed(result);
                else w.Pending.Fail(Overwritten(index));
            }
            _due.Clear();
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

    public async ValueTask DisposeAsync(Exception shutdown)
    {
        _queue.Writer.TryComplete();
        try { await _run.ConfigureAwait(false); } catch (Exception) { }
        lock (_writesGate)
        {
            _closed = true;
            while (_writes.TryDequeue(out var w, out var index)) _due.Add((w, index));
        }
        foreach (var (w, _) in _due) w.Pending.Fail(shutdown);
        _due.Clear();
        foreach (var r in _reads) foreach (var p in r.Reads) p.Fail(shutdown);
        _reads.Clear();
        lock (_subsGate)
        {
            foreach (var s in _subs) s.Channel.Writer.TryComplete(shutdown);
            _subs.Clear();
        }
    }
}
