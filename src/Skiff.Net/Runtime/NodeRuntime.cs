using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using Skiff.Core;
using Skiff.Net.Storage.Ports;

namespace Skiff.Net.Runtime;

/// <summary>
/// The effect interpreter of one node: a single event loop reads events (ticks, peer messages, client requests,
/// storage completions), feeds them to the reducer and carries out its effects. Durable writes run on a storage
/// writer (group commit: everything queued is written, then flushed once), applying runs on an applier, sends go
/// to the transport; the loop itself never blocks on I/O.
/// </summary>
internal sealed class NodeRuntime : IAsyncDisposable
{
    // Unbounded as a channel, bounded by admission (Admission, QueueBudget): the loop must never wait on it.
    private readonly Channel<object> _inbox = Channel.CreateUnbounded<object>(new UnboundedChannelOptions { SingleReader = true, AllowSynchronousContinuations = true });
    private readonly Admission _admission;
    // Ticks waiting in the inbox; a stalled loop gets at most MaxQueuedTicks (as etcd's tick channel holds 128), not
    // one more per tick interval for as long as it stalls.
    private int _queuedTicks;
    private const int MaxQueuedTicks = 128;

    /// <summary>A peer message admitted to the inbox, with the bytes it counts for.</summary>
    private sealed record Admitted(Event Event, long Bytes);

    /// <summary>A client request for the loop: one object per request (a closure and its captures were two).</summary>
    private sealed record Submitted(Event Event, Pending Pending, long Bytes);
    private readonly RaftCell _reducer = new();
    private readonly Dictionary<long, Pending> _pending = new();
    private readonly StorageWriter _writer;
    private readonly CommitMarks _commitMarks = new();

    /// <summary>The commit index last handed to the writer to record (read from any thread, for tests).</summary>
    internal long MarkedCommit => _commitMarks.Marked;
    private readonly Applier _applier;
    private readonly ILogStore _log;
    private readonly ISnapshotStore _snapshots;
    private readonly IStateMachine _sm;
    private readonly Action<Envelope> _send;
    private readonly Action<Guid, long, SnapshotMeta> _sendSnapshot;
    private readonly CancellationTokenSource _stop = new();
    private readonly TimeSpan _tick;
    private Task _loop = Task.CompletedTask, _ticker = Task.CompletedTask;
    private readonly LogLoader _loader;

    private long _nextRequestId;
    private volatile bool _stopped;
    private readonly ILogger _logger;

    /// <summary>Test hook: consulted before each log read of the loader; an exception it returns is thrown as the read's failure.</summary>
    internal Func<LoadPurpose, Exception?>? LoadFault
    {
        get => _loader.Fault;
        set => _loader.Fault = value;
    }

    /// <summary>The log loader (its byte caps are set by the node from the reducer's options).</summary>
    internal LogLoader Loader => _loader;

    /// <summary>This node's id.</summary>
    public Guid Id { get; }

    /// <summary>The role, term and leader as last reported by the reducer.</summary>
    public (Role Role, long Term, Guid? Leader) Status { get; private set; } = (Role.Follower, 0, null);

    /// <summary>The configuration in force, as last reported by the reducer.</summary>
    public Configuration Configuration { get; private set; } = Configuration.Empty;

    /// <summary>Raised (on the loop thread) when role, term or leader change.</summary>
    public event Action<Role, long, Guid?>? RoleChanged;

    /// <summary>Called once when the node cannot go on safely (a durable write or a snapshot install failed):
    /// the owner must stop the node (fail-stop, as etcd does) rather than let it diverge.</summary>
    public event Action<Exception>? Fatal;

    private int _fatal;

    internal void RaiseFatal(Exception error)
    {
        if (Interlocked.Exchange(ref _fatal, 1) == 1) return;
        try { Fatal?.Invoke(error); }
        catch (Exception ex) { _logger.LogError(ex, "Skiff node {NodeId}: a fail-stop handler failed", Id); }
    }

    /// <summary>Raised (on the loop thread) when the configuration changes.</summary>
    public event Action<Configuration>? ConfigurationChanged;

    /// <summary>Raised after a durable log write slower than <see cref="RuntimeMetrics.SlowFlush"/>.</summary>
    public event Action<TimeSpan>? SlowFlush
    {
        add => _writer.SlowFlush += value;
        remove => _writer.SlowFlush -= value;
    }

    /// <summary>On a leader, how many entries each follower lags behind its last index; empty elsewhere.</summary>
    public IReadOnlyDictionary<Guid, long> PeerLag() => _reducer.PeerLag();

    /// <summary>Number of log flushes so far.</summary>
    public long WriterFlushes => _writer.Flushes;

    /// <summary>The largest command one log entry holds (see <see cref="ILogStore.MaxCommandBytes"/>).</summary>
    public int MaxCommandBytes => _log.MaxCommandBytes;

    /// <summary>The applier, for reads and watches.</summary>
    public Applier Applier => _applier;

    /// <summary>The commit index the reducer reports (read on the loop thread; approximate elsewhere).</summary>
    public long CommitIndex { get; private set; }

    public NodeRuntime(Guid id, ILogStore log, IHardStateStore hard, ISnapshotStore snapshots, IStateMachine sm,
        TimeSpan tick, int watchCapacity, int watchHistory,
        Action<Envelope> send, Action<Guid, long, SnapshotMeta> sendSnapshot, ILogger? logger = null)
    {
        Id = id;
        _logger = logger ?? NullLogger.Instance;
        _log = log;
        _snapshots = snapshots;
        _sm = sm;
        _tick = tick;
        _send = send;
        _sendSnapshot = sendSnapshot;
        _writer = new StorageWriter(log, hard, Post, RaiseFatal) { Logger = _logger };
        _loader = new LogLoader(id, log, Post, RaiseFatal, () => _stopped, _logger);
        _applier = new Applier(sm, snapshots, Post, watchCapacity, watchHistory, RaiseFatal) { Logger = _logger };
        _admission = new Admission(new QueueBudget(Admission.DefaultMaxInboxItems, Admission.DefaultMaxInboxBytes), _writer.Backlog, _applier.Backlog);
    }

    /// <summary>The data directory's free space, watched by admission (null: not watched).</summary>
    public DiskSpaceGate? DiskSpace { get => _admission.DiskSpace; set => _admission.DiskSpace = value; }
    /// <summary>Peer messages dropped because this node was over a queue budget.</summary>
    public long DroppedPeerMessages => _admission.DroppedPeerMessages;

    /// <summary>Posts a peer's message for the loop, or drops it when the node is over a queue budget.</summary>
    public void PostPeer(Envelope envelope)
    {
        if (!_admission.PeerMessage(envelope, out var bytes)) return;
        if (!_inbox.Writer.TryWrite(new Admitted(Event.NewReceive(envelope), bytes))) _admission.Leave(bytes);
    }

    /// <summary>Starts the reducer from storage and runs the loop and the ticker.</summary>
    public void Start(Skiff.Core.Start start)
    {
        _applier.Initialise();
        var first = _reducer.Init(start);
        _loop = DedicatedThread.Start("skiff-loop", () => RunLoop(first));
        _ticker = Task.Run(RunTicker);
        _loader.Start();
    }

    /// <summary>Posts an event for the loop. Safe from any thread; ignored after shutdown.</summary>
    public void Post(Event ev) => _inbox.Writer.TryWrite(ev);

    private async Task RunTicker()
    {
        using var timer = new PeriodicTimer(_tick);
        try
        {
            while (await timer.WaitForNextTickAsync(_stop.Token))
            {
                if (Interlocked.Increment(ref _queuedTicks) <= MaxQueuedTicks) Post(Event.Tick);
                else Interlocked.Decrement(ref _queuedTicks);
            }
        }
        catch (OperationCanceledException) { }
    }

    private void RunLoop(FSharpList<Effect> first)
    {
        Execute(first);
        var reader = _inbox.Reader;
        while (DedicatedThread.WaitToRead(reader))
        {
            while (reader.TryRead(out var item))
            {
                try
                {
                    switch (item)
                    {
                        case Admitted a:
                            _admission.Leave(a.Bytes);
                            Execute(_reducer.Step(a.Event));
                            break;
                        case Event ev:
                            if (ev.IsTick) Interlocked.Decrement(ref _queuedTicks);
                            if (!ev.IsTick && _logger.IsEnabled(LogLevel.Trace)) _logger.LogTrace("Skiff node {Node} <- {Event}", ShortId, Show(ev));
                            Execute(_reducer.Step(ev));
                            if (ev.IsTick) _commitMarks.OnTick(_reducer.CommitIndex, _writer);
                            break;
                        case Submitted s:
                            _admission.Leave(s.Bytes);
                            if (s.Pending.IsAnswered) break;
                            s.Pending.Stepped = System.Diagnostics.Stopwatch.GetTimestamp();
                            _pending[s.Pending.Id] = s.Pending;
                            Execute(_reducer.Step(s.Event));
                            break;
                        case Action a: a(); break;
                    }
                }
                catch (Exception ex)
                {
                    // A bug in the reducer or here must not kill the node silently.
                    _logger.LogError(ex, "Skiff node {NodeId}: event loop error", Id);
                }
            }
        }
    }

    // ---------------- client requests (called from any thread) ----------------

    private Pending Register(CancellationToken ct, out long id)
    {
        id = Interlocked.Increment(ref _nextRequestId);
        var p = new Pending(id);
        // The registration is disposed by the Pending when it is answered (no continuation task per request).
        if (ct.CanBeCanceled) p.Registration = ct.UnsafeRegister(CancelPending, p);
        return p;
    }

    private static readonly Action<object?, CancellationToken> CancelPending =
        static (state, token) => ((Pending)state!).Fail(new OperationCanceledException(token));

    private Task<LogResult?> Submit(Event ev, Pending p, long commandBytes = 0)
    {
        if (_stopped) throw new SkiffException(ErrorKind.StreamClosed, "the node is shutting down");
        long bytes;
        try { bytes = _admission.Request(commandBytes); }
        catch (SkiffException refused)
        {
            p.Fail(refused);
            return p.Task;
        }
        // This throws only once the node is stopping, when what was admitted no longer matters.
        if (!_inbox.Writer.TryWrite(new Submitted(ev, p, bytes))) throw new SkiffException(ErrorKind.StreamClosed, "the node is shutting down");
        return p.Task;
    }

    /// <summary>Proposes a command; completes with its result and log index once applied here.</summary>
    public async Task<(LogResult? Result, long Index)> ProposeAsync(byte[] command, CancellationToken ct)
    {
        RequestLimits.Command(command.Length, MaxCommandBytes);
        var p = Register(ct, out var id);
        var result = await Submit(Event.NewPropose(id, command), p, command.Length).ConfigureAwait(false);
        WriteStages.Record(p);
        return (result, p.Index);
    }

    /// <summary>A linearizable read barrier: completes once the local state machine may serve a read.</summary>
    public Task ReadBarrierAsync(CancellationToken ct)
    {
        var p = Register(ct, out var id);
        return Submit(Event.NewRead(id), p);
    }

    /// <summary>Asks for a membership change; completes once committed.</summary>
    public Task ChangeConfigAsync(ConfigChange change, CancellationToken ct)
    {
        var p = Register(ct, out var id);
        return Submit(Event.NewChangeConfig(id, change), p);
    }

    /// <summary>Asks to hand leadership to <paramref name="target"/>; completes once handed over.</summary>
    public Task TransferLeadershipAsync(Guid target, CancellationToken ct)
    {
        var p = Register(ct, out var id);
        return Submit(Event.NewTransferLeadership(id, target), p);
    }

    // ---------------- effects (loop thread) ----------------

    private void Execute(FSharpList<Effect> effects)
    {
        Task? barrier = null;
        List<Envelope>? delayed = null;
        // Walked by hand: a foreach over an F# list allocates an enumerator, and this runs on every step.
        for (var rest = effects; !rest.IsEmpty; rest = rest.Tail)
        {
            var effect = rest.Head;
            if (_logger.IsEnabled(LogLevel.Trace)) _logger.LogTrace("Skiff node {Node} -> {Effect}", ShortId, Show(effect));
            switch (effect)
            {
                case Effect.PersistHardState h:
                    barrier = _writer.SaveHardState(h.HardState);
                    break;
                case Effect.PersistEntries p:
                    // The commit index after the step that asked for the write: every entry up to it is committed
                    // in the log as it stands once this write (and every one queued before it) is done.
                    barrier = _writer.Append(p.Entries, _commitMarks.WithAppend(_reducer.CommitIndex));
                    break;
                case Effect.InstallSnapshot i:
                    barrier = _writer.Reset(i.Meta, _applier.Install(i.Staged, i.Meta));
                    break;
                case Effect.Send s:
                    if (barrier is null || barrier.IsCompletedSuccessfully) _send(s.Envelope);
                    else (delayed ??= new()).Add(s.Envelope);
                    break;
                case Effect.Apply a:
                    _applier.Apply(a.Entries);
                    break;
                case Effect.LoadEntries l:
                    _loader.Load(l.Purpose, l.From, l.To);
                    break;
                case Effect.Accepted acc:
                    if (_pending.Remove(acc.Id, out var pa))
                    {
                        pa.AcceptedAt = System.Diagnostics.Stopwatch.GetTimestamp();
                        _applier.WaitWrite(pa, acc.Index, acc.Term);
                    }
                    break;
                case Effect.Reject r:
                    if (_pending.Remove(r.Id, out var pr)) pr.Fail(RejectionErrors.ToException(r.Rejection));
                    break;
                case Effect.ReadReady rr:
                    var reads = new List<Pending>();
                    foreach (var rid in rr.Ids)
                        if (_pending.Remove(rid, out var pread)) reads.Add(pread);
                    if (reads.Count > 0) _applier.WaitRead(reads, rr.Index);
                    break;
                case Effect.Completed c:
                    if (_pending.Remove(c.Id, out var pc)) pc.Succeed(null);
                    break;
                case Effect.TakeSnapshot t:
                    _applier.TakeSnapshot(t.Meta);
                    break;
                case Effect.CompactLog c:
                    _writer.Compact(c.UpTo);
                    break;
                case Effect.SendSnapshot ss:
                    _sendSnapshot(ss.To, ss.Term, ss.Meta);
                    break;
                case Effect.RoleChanged rc:
                    var leader = FSharpOption<Guid>.get_IsSome(rc.Leader) ? rc.Leader!.Value : (Guid?)null;
                    Status = (rc.Role, rc.Term, leader);
                    SafeRaise(() => RoleChanged?.Invoke(rc.Role, rc.Term, leader));
                    break;
                case Effect.ConfigurationChanged cc:
                    Configuration = cc.Configuration;
                    SafeRaise(() => ConfigurationChanged?.Invoke(cc.Configuration));
                    break;
            }
        }
        if (delayed is not null && barrier is not null)
        {
            var sends = delayed;
            barrier.ContinueWith(t =>
            {
                if (t.IsCompletedSuccessfully) foreach (var env in sends) _send(env);
            }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }
        CommitIndex = _reducer.CommitIndex;
    }

    // Tracing (every event but ticks, every effect) is logged at Trace level: the host turns it on through its
    // logging configuration (skiff serve: SKIFF_TRACE=1); the library reads no environment variables.
    private string ShortId => Id.ToString()[..4];

    private static string Show(object o)
    {
        var text = o.ToString() ?? "";
        text = System.Text.RegularExpressions.Regex.Replace(text, @"\s+", " ");
        return text.Length > 300 ? text[..300] : text;
    }

    private void SafeRaise(Action a)
    {
        try { a(); }
        catch (Exception ex) { _logger.LogWarning(ex, "Skiff node {NodeId}: an observer failed", Id); }
    }

    /// <summary>Stops the loop, fails every waiting request, flushes storage.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_stopped) return;
        _stopped = true;
        _stop.Cancel();
        var shutdown = new SkiffException(ErrorKind.StreamClosed, "the node is shutting down");
        _inbox.Writer.TryWrite((Action)(() =>
        {
            foreach (var p in _pending.Values) p.Fail(shutdown);
            _pending.Clear();
        }));
        _inbox.Writer.TryComplete();
        try { await _loop.ConfigureAwait(false); } catch (Exception) { }
        try { await _ticker.ConfigureAwait(false); } catch (Exception) { }
        await _loader.StopAsync().ConfigureAwait(false);
        // The last commit index learned, recorded after everything queued: a member restarted at once then applies
        // all it had applied, without waiting for a leader (a mark on its own waits for a tick otherwise).
        // Not for a node that failed before its reducer started (a port in use, say): it learned nothing.
        if (_reducer.Started) _commitMarks.OnStop(_reducer.CommitIndex, _writer);
        await _writer.DisposeAsync().ConfigureAwait(false);
        await _applier.DisposeAsync(shutdown).ConfigureAwait(false);
    }
}
