using System.Collections.Concurrent;
using System.Net;
using System.Runtime.CompilerServices;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using Skiff.Core;

namespace Skiff.Net.Runtime;

/// <summary>
/// One Skiff node: storage, the Raft event loop, the gRPC services (client calls and peer traffic on one port)
/// and the cluster behaviour (forwarding to the leader, joining, removal, watches). The facade wraps this class.
/// </summary>
public sealed class SkiffServer : IAsyncDisposable
{
    private readonly SkiffServerOptions _options;
    private readonly string _dataDir;
    private IDisposable? _storage; // holds the data directory lock
    private ILogStore? _log;
    private IHardStateStore? _hard;
    private ISnapshotStore? _snapshots;
    private IStateMachine? _sm;
    private NodeRuntime? _runtime;
    private PeerTransport? _transport;
    private WebApplication? _app;
    private readonly CancellationTokenSource _shutdown = new();
    private readonly ConcurrentDictionary<string, SkiffGrpcClient> _forwarders = new();
    private readonly ClientSession _ownSession;
    private int _state; // 0 new, 1 started, 2 stopped
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _logger;
    private readonly TaskCompletionSource<Exception?> _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>This node's stable id (kept in the data directory).</summary>
    public Guid Id { get; }

    /// <summary>Where this node listens ("ip:port").</summary>
    public string Address { get; }

    /// <summary>Creates a node: opens and locks its data directory and loads (or creates) its id, as skiff-rs's
    /// build() does. Nothing listens until <see cref="StartAsync"/>.</summary>
    /// <exception cref="SkiffException">DataDirectoryCreateFailed, DataDirectoryLocked, StorageError, StorageCorrupted.</exception>
    public SkiffServer(SkiffServerOptions options)
    {
        _options = options;
        _loggerFactory = options.LoggerFactory ?? Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance;
        _logger = _loggerFactory.CreateLogger("Skiff.Server");
        if (options.MaxValueBytes <= 0)
            throw new SkiffException(ErrorKind.InvalidArgument, $"MaxValueBytes must be positive, not {options.MaxValueBytes}");
        _dataDir = Path.GetFullPath(options.DataDirectory);
        Address = $"{options.Bind}:{options.Port}";
        var storage = Skiff.Net.Storage.NodeStorage.Open(_dataDir, new Skiff.Net.Storage.NodeStorageOptions
        {
            Kv = new Skiff.Net.Storage.KvOptions
            {
                WatchHistory = Math.Max(0, options.WatchHistory), UnsafeNoSessionDedup = options.UnsafeNoSessionDedup,
            },
        });
        _storage = storage;
        Id = storage.HardState.NodeId;
        _log = new FasterLogStore(storage.Log);
        _hard = new FasterHardStateStore(storage.HardState);
        _sm = new FasterStateMachine(storage.Kv);
        _snapshots = new FasterSnapshotStore(storage.Kv, Path.Combine(_dataDir, "snapmeta"));
        if (RequestLimits.LargestCommandBytes(options.MaxValueBytes) > _log.MaxCommandBytes)
        {
            storage.Dispose();
            _storage = null;
            throw new SkiffException(ErrorKind.InvalidArgument,
                $"MaxValueBytes {options.MaxValueBytes} is too large: a compare-and-swap of two such values must fit one log entry " +
                $"({_log.MaxCommandBytes} bytes)");
        }
        _ownSession = new ClientSession(async t => (await OpenSessionAsync(TimeSpan.Zero, false, t).ConfigureAwait(false)).Id);
    }

    private NodeRuntime Runtime => _runtime ?? throw new SkiffException(ErrorKind.StreamClosed, "the node is not running");

    /// <summary>The role this node plays now.</summary>
    public Role Role => _runtime?.Status.Role ?? Role.Follower;

    /// <summary>This node's current term.</summary>
    public long Term => _runtime?.Status.Term ?? 0;

    /// <summary>The leader this node knows, if any.</summary>
    public Guid? LeaderId => _runtime?.Status.Leader;

    /// <summary>The commit index as last reported by the reducer.</summary>
    public long CommitIndex => _runtime?.CommitIndex ?? 0;

    /// <summary>The index applied to this node's state machine.</summary>
    public long AppliedIndex => _sm?.AppliedIndex ?? 0;

    /// <summary>The members (id to address and voter flag) of the configuration in force on this node.</summary>
    public IReadOnlyDictionary<Guid, (string Address, bool Voter)> Members =>
        (_runtime?.Configuration ?? Configuration.Empty).Members.ToDictionary(kv => kv.Key, kv => (kv.Value.Address, kv.Value.Voter));

    /// <summary>Why the node stopped itself (a durable write, an apply, a log read or a snapshot install failed), if it did.</summary>
    public Exception? FatalError { get; private set; }

    /// <summary>Completes once the node has stopped and released its data directory: with null after
    /// <see cref="ShutdownAsync"/>, or with the cause when the node stopped itself (a fail-stop, see
    /// <see cref="FatalError"/>). Never faults.</summary>
    public Task<Exception?> Stopped => _stopped.Task;

    /// <summary>The largest value a put or compare-and-swap may carry (<see cref="SkiffServerOptions.MaxValueBytes"/>).</summary>
    public int MaxValueBytes => _options.MaxValueBytes;

    /// <summary>The largest command one log entry holds.</summary>
    internal int MaxCommandBytes => _log?.MaxCommandBytes ?? int.MaxValue;

    /// <summary>Test hook: makes the node fail-stop with <paramref name="cause"/>, as a failed durable write would.</summary>
    internal void InjectFatal(Exception cause) => (_runtime ?? throw new InvalidOperationException("not started")).RaiseFatal(cause);

    /// <summary>Test hook (set before <see cref="StartAsync"/>): called before each log read the loader makes; an
    /// exception it returns is thrown as the read's failure.</summary>
    internal Func<LoadPurpose, Exception?>? LoadFault { get; set; }

    /// <summary>Raised for every change this node applies (on the applier's thread; keep handlers short).</summary>
    public event Action<WatchEvent>? Changed;

    /// <summary>Raised when role, term or known leader change (on the event loop; keep handlers short).</summary>
    public event Action<Role, long, Guid?>? RoleChanged;

    /// <summary>Raised when the configuration in force changes (a member added, promoted or removed).</summary>
    public event Action<Configuration>? MembershipChanged;

    /// <summary>Raised after a durable log write slower than 100 ms.</summary>
    public event Action<TimeSpan>? SlowFlush;

    /// <summary>On the leader, how many entries each follower lags behind; empty on other nodes.</summary>
    public IReadOnlyDictionary<Guid, long> PeerLag() => _runtime?.PeerLag() ?? new Dictionary<Guid, long>();

    /// <summary>Test hook: drop all of this node's peer traffic, both ways (simulates a network partition).</summary>
    public bool Isolated
    {
        get => _transport?.Isolated ?? false;
        set { if (_transport is not null) _transport.Isolated = value; }
    }

    internal bool IsIsolated => _transport?.Isolated ?? false;

    /// <summary>Number of log flushes (each one fsync), for measurements.</summary>
    public long Flushes => _runtime?.WriterFlushes ?? 0;

    // ------------------------------------------------------------------ lifecycle

    /// <summary>Opens storage, starts the services and the event loop, and joins the cluster if asked to.</summary>
    public async Task StartAsync(CancellationToken ct = default)
    {
        if (Interlocked.CompareExchange(ref _state, 1, 0) != 0) throw new InvalidOperationException("already started");
        if (_storage is null) throw new SkiffException(ErrorKind.StreamClosed, "the node was shut down");
        if (_options.MinThreadPoolThreads > 0)
        {
            ThreadPool.GetMinThreads(out var workers, out var io);
            if (workers < _options.MinThreadPoolThreads) ThreadPool.SetMinThreads(_options.MinThreadPoolThreads, io);
        }
        try
        {
            var snapshot = _snapshots!.Latest;
            var log = _log!;
            var from = Math.Max(log.SnapshotIndex, snapshot?.Index ?? 0) + 1;
            var entries = log.LastIndex >= from ? log.Read(from, log.LastIndex) : Array.Empty<Entry>();
            var fresh = log.LastIndex == 0 && snapshot is null;
            var joining = _options.JoinPeers.Count > 0;
            var self = new Member(Id, Address, true);
            var bootstrap = joining
                ? Configuration.Empty
                : new Configuration(MapModule.OfSeq(new[] { Tuple.Create(Id, self) }));
            var known = KnownConfiguration(snapshot, entries);
            var start = new StartInfo(Id, (ulong)Random.Shared.NextInt64(), _hard!.Load() ?? new HardState(0, FSharpOption<Guid>.None),
                snapshot, entries, _sm!.AppliedIndex, bootstrap);

            _transport = new PeerTransport(Id, Address, _options.PeerQueueCapacity, () => _snapshots!);
            _runtime = new NodeRuntime(Id, log, _hard, _snapshots, _sm, _options.TickInterval,
                _options.WatchBufferCapacity, _options.WatchHistory, _transport.Send, _transport.SendSnapshot,
                _loggerFactory.CreateLogger("Skiff.Runtime"));
            _runtime.LoadFault = LoadFault;
            _runtime.ConfigurationChanged += c => _transport.Update(c);
            _runtime.RoleChanged += (r, t, l) =>
            {
                NoteLeader(l);
                RoleChanged?.Invoke(r, t, l);
            };
            _runtime.ConfigurationChanged += c => MembershipChanged?.Invoke(c);
            _runtime.SlowFlush += d => SlowFlush?.Invoke(d);
            _runtime.Fatal += OnFatal;
            _runtime.Applier.Changed += c => Changed?.Invoke(new WatchEvent(c.Index, c.Key, c.Value));

            await StartHostAsync().ConfigureAwait(false);
            _runtime.Start(start, _options.Raft ?? Reducer.DefaultOptions);

            if (joining && (fresh || !known.Members.ContainsKey(Id))) await JoinAsync(ct).ConfigureAwait(false);
        }
        catch
        {
            await ShutdownAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>A fail-stop: counted, logged at Critical, then the node stops as a crash would (no hand-off) and
    /// <see cref="Stopped"/> completes with the cause.</summary>
    private void OnFatal(Exception e)
    {
        FatalError = e;
        RuntimeMetrics.FailStops.Add(1);
        _logger.LogCritical(e, "Skiff node {NodeId} at {Address} stops itself (fail-stop): {Cause}", Id, Address, e.Message);
        _ = Task.Run(() => ShutdownAsync(false));
    }

    private static Configuration KnownConfiguration(SnapshotMeta? snapshot, IReadOnlyList<Entry> entries)
    {
        for (var i = entries.Count - 1; i >= 0; i--)
            if (entries[i].Payload is Payload.Config c) return c.Item;
        return snapshot?.Configuration ?? Configuration.Empty;
    }

    private async Task StartHostAsync()
    {
        // An empty builder: no configuration sources (the application's appsettings.json, ASPNETCORE_* variables and
        // command line must not add endpoints or settings to the node's server), no logging providers, and no
        // ConsoleLifetime: the host process, not the node, owns SIGTERM, SIGINT and Ctrl-C.
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions { Args = Array.Empty<string>() });
        builder.Services.AddSingleton<IHostLifetime, EmbeddedHostLifetime>();
        builder.WebHost.UseKestrelCore();
        builder.Services.AddRoutingCore();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Listen(_options.Bind, _options.Port, l => l.Protocols = HttpProtocols.Http2);
            k.Limits.Http2.MaxStreamsPerConnection = 4096;
            k.Limits.Http2.InitialConnectionWindowSize = 4 << 20;
            k.Limits.Http2.InitialStreamWindowSize = 2 << 20;
        });
        builder.WebHost.UseShutdownTimeout(TimeSpan.FromSeconds(1));
        builder.Services.AddGrpc(o =>
        {
            // Peer messages (append batches, snapshot chunks) may be larger than one client request.
            o.MaxReceiveMessageSize = 64 << 20;
            o.MaxSendMessageSize = 64 << 20;
        }).AddServiceOptions<ClientService>(o =>
        {
            // No client request may be larger than a compare-and-swap at the value limit: gRPC refuses a larger
            // message before reading it (ResourceExhausted; EmbeddedHost tags it ValueTooLarge).
            o.MaxReceiveMessageSize = RequestLimits.MaxRequestBytes(_options.MaxValueBytes);
        });
        builder.Services.AddSingleton(this);
        var app = builder.Build();
        app.UseRouting();
        app.Use(EmbeddedHost.TagOversizedRequests);
        app.MapGrpcService<ClientService>();
        app.MapGrpcService<PeerService>();
        try
        {
            await app.StartAsync().ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException || e.InnerException is IOException || e is System.Net.Sockets.SocketException)
        {
            await app.DisposeAsync().ConfigureAwait(false);
            throw new SkiffException(ErrorKind.RpcBindFailed, $"cannot listen on {Address}: {e.Message}", e);
        }
        _app = app;
    }

    /// <summary>Joins through <see cref="SkiffServerOptions.JoinPeers"/>: asks for this node to be added (as a learner),
    /// then waits until the leader promotes it, which takes as long as catching up takes. Every attempt has its own
    /// deadline (a member that dies mid-call must not hold the join); the whole join has <see
    /// cref="SkiffServerOptions.JoinTimeout"/>, or none with <see cref="SkiffServerOptions.KeepJoining"/> (as
    /// <c>skiff serve</c>). Fails at once only on a definitive refusal: the cluster holds this id at another address.
    /// A node dropped from the configuration while it waits (an uncommitted add lost with its leader) asks again.</summary>
    private async Task JoinAsync(CancellationToken ct)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct, _shutdown.Token);
        if (!_options.KeepJoining) cts.CancelAfter(_options.JoinTimeout);
        var peers = _options.JoinPeers.Select(p => p.Contains(':') ? p : $"{p}:{_options.Port}").ToArray();
        Exception? last = null;
        var delay = 50;
        var added = false;
        var trying = System.Diagnostics.Stopwatch.StartNew();
        while (!cts.IsCancellationRequested)
        {
            foreach (var peer in peers)
            {
                if (peer == Address || cts.IsCancellationRequested) continue;
                try
                {
                    using (var attempt = CancellationTokenSource.CreateLinkedTokenSource(cts.Token))
                    using (var client = new SkiffGrpcClient(new[] { peer }))
                    {
                        attempt.CancelAfter(_options.RequestTimeout);
                        await client.AddServerAsync(Id, Address, attempt.Token).ConfigureAwait(false);
                    }
                }
                catch (SkiffException e) when (e.Kind == ErrorKind.PeerNotFound)
                {
                    // The leader refused the change itself ("already a member with another address"): asking again
                    // cannot help.
                    throw new SkiffException(ErrorKind.ClusterJoinFailed, $"the cluster refused to add this node through {peer}: {e.Message}", e);
                }
                catch (Exception e) when (e is SkiffException or OperationCanceledException)
                {
                    last = e;
                    continue;
                }
                // Added as a learner: joining is done when the leader has promoted this node, so that a caller
                // who stops it next does not leave the others a majority that does not count it.
                added = true;
                try
                {
                    if (await WaitUntilVoterAsync(peer, cts.Token).ConfigureAwait(false)) return;
                    _logger.LogWarning("Skiff node {NodeId}: no longer in the configuration while waiting to be promoted; asking to be added again", Id);
                }
                catch (OperationCanceledException) when (!ct.IsCancellationRequested && !_shutdown.IsCancellationRequested)
                {
                    throw new SkiffException(ErrorKind.ClusterJoinFailed,
                        $"added to the cluster through {peer} as a learner, but not promoted to voter within {_options.JoinTimeout.TotalSeconds:0.#} s");
                }
            }
            try { await Task.Delay(delay, cts.Token).ConfigureAwait(false); }
            catch (OperationCanceledException) { break; }
            delay = Math.Min(500, delay * 2);
            if (trying.Elapsed >= TimeSpan.FromSeconds(5))
            {
                _logger.LogInformation("Skiff node {NodeId}: still trying to join through {Peers}: {Error}", Id, string.Join(", ", peers), last?.Message);
                trying.Restart();
            }
        }
        if (ct.IsCancellationRequested) throw new OperationCanceledException(ct);
        throw new SkiffException(ErrorKind.ClusterJoinFailed,
            $"could not {(added ? "stay in the cluster" : "join")} through {string.Join(", ", peers)} within {_options.JoinTimeout.TotalSeconds:0.#} s: {last?.Message}", last);
    }

    /// <summary>Completes with true once the configuration in force on this node lists it as a voter, with false
    /// if a configuration that listed it no longer does. Logs its progress every 5 s while it waits.</summary>
    private async Task<bool> WaitUntilVoterAsync(string through, CancellationToken ct)
    {
        var runtime = Runtime;
        var done = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var listed = false;
        void Check(Configuration c)
        {
            if (c.Members.TryFind(Id) is { } m && FSharpOption<Member>.get_IsSome(m))
            {
                listed = true;
                if (m.Value.Voter) done.TrySetResult(true);
            }
            else if (listed) done.TrySetResult(false);
        }
        runtime.ConfigurationChanged += Check;
        try
        {
            Check(runtime.Configuration);
            var waited = System.Diagnostics.Stopwatch.StartNew();
            while (true)
            {
                var finished = await Task.WhenAny(done.Task, Task.Delay(TimeSpan.FromSeconds(5), ct)).ConfigureAwait(false);
                if (finished == done.Task) return await done.Task.ConfigureAwait(false);
                ct.ThrowIfCancellationRequested();
                _logger.LogInformation(
                    "Skiff node {NodeId}: added through {Peer}, a learner for {Seconds:0} s, catching up: commit {Commit}, applied {Applied}, leader {Leader}",
                    Id, through, waited.Elapsed.TotalSeconds, CommitIndex, AppliedIndex, LeaderId?.ToString() ?? "unknown");
            }
        }
        finally
        {
            runtime.ConfigurationChanged -= Check;
        }
    }

    /// <summary>Waits until this node knows a leader; LeaderElectionTimeout otherwise.</summary>
    public async Task WaitForLeaderAsync(TimeSpan timeout, CancellationToken ct = default)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (LeaderId is null)
        {
            if (DateTime.UtcNow > deadline) throw new SkiffException(ErrorKind.LeaderElectionTimeout, $"no leader within {timeout.TotalSeconds:0.#} s");
            await Task.Delay(10, ct).ConfigureAwait(false);
        }
    }

    /// <summary>Stops accepting calls, fails those in flight, flushes storage and releases the data directory.
    /// A leader first hands leadership to another voter (the reducer gives up after an election timeout), so that the cluster does
    /// not wait an election timeout; pass false to stop as abruptly as a crash would (for tests).</summary>
    public async Task ShutdownAsync(bool handOffLeadership = true)
    {
        if (handOffLeadership && Volatile.Read(ref _state) == 1 && Role == Role.Leader
            && Members.Any(m => m.Key != Id && m.Value.Voter))
        {
            try
            {
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(1)); // the reducer gives up after an election timeout
                await TransferLeadershipAsync(null, true, cts.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is SkiffException or OperationCanceledException) { }
        }
        if (Interlocked.Exchange(ref _state, 2) == 2 && _storage is null)
        {
            await _stopped.Task.ConfigureAwait(false); // another shutdown (a fail-stop's) is finishing
            return;
        }
        _shutdown.Cancel();
        if (_app is not null)
        {
            try { await _app.StopAsync(new CancellationTokenSource(TimeSpan.FromSeconds(2)).Token).ConfigureAwait(false); } catch (Exception) { }
            await _app.DisposeAsync().ConfigureAwait(false);
            _app = null;
        }
        if (_runtime is not null) await _runtime.DisposeAsync().ConfigureAwait(false);
        if (_transport is not null) await _transport.DisposeAsync().ConfigureAwait(false);
        foreach (var f in _forwarders.Values) f.Dispose();
        _forwarders.Clear();
        _snapshots?.Dispose();
        _log?.Dispose();
        _hard?.Dispose();
        _sm?.Dispose();
        _storage?.Dispose();
        _storage = null;
        _stopped.TrySetResult(FatalError);
    }

    /// <summary>Same as <see cref="ShutdownAsync"/>.</summary>
    public async ValueTask DisposeAsync() => await ShutdownAsync().ConfigureAwait(false);

    // ------------------------------------------------------------------ routing

    private string? AddressOf(Guid id) =>
        _runtime?.Configuration.Members.TryFind(id) is { } m && FSharpOption<Member>.get_IsSome(m) ? m.Value.Address : null;

    internal (Guid? Leader, string? Address) LeaderInfo()
    {
        var l = LeaderId;
        return (l, l is { } id ? AddressOf(id) : null);
    }

    private SkiffGrpcClient ForwarderFor(string address) =>
        _forwarders.GetOrAdd(address, a => new SkiffGrpcClient(new[] { a }, forwarded: true));

    // Completed (and replaced) whenever the leader this node knows changes, so a call forwarded to a leader that
    // stopped answering is sent to the next one as soon as it is known.
    private TaskCompletionSource _leaderChange = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Guid? _knownLeader;

    private void NoteLeader(Guid? leader)
    {
        if (leader == _knownLeader) return;
        _knownLeader = leader;
        Interlocked.Exchange(ref _leaderChange, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
    }

    /// <summary>Errors after which a call is tried again (on this node or forwarded to the leader) within its deadline:
    /// the node was not the leader or lost leadership, the leader was unreachable or broke the call, the request's
    /// entry was replaced, or a transfer or membership change was under way.</summary>
    private static bool Retryable(SkiffException e) => e.Kind is ErrorKind.NotLeader or ErrorKind.ClientConnectFailed
        or ErrorKind.RpcCallFailed or ErrorKind.StreamClosed or ErrorKind.Timeout or ErrorKind.NoQuorum or ErrorKind.InsertFailed;

    /// <summary>Runs a call locally, forwarding it to the leader when this node is not it, and tries again within the
    /// deadline while no leader is known or a retryable failure comes back.</summary>
    /// <remarks>An <paramref name="idempotent"/> call (a read, a membership call, a write in a client session, which
    /// the state machine applies once however often it is proposed) is tried again after any retryable failure,
    /// including one that may have hidden its outcome, and a forwarded attempt is abandoned for the new leader as
    /// soon as the leader changes. Any other call is tried again only after a failure that proves it did not take
    /// effect. Every error thrown says, in <see cref="SkiffException.Outcome"/>, whether some attempt may have taken
    /// effect.</remarks>
    internal async Task<T> RouteAsync<T>(Func<CancellationToken, Task<T>> local, Func<SkiffGrpcClient, CancellationToken, Task<T>>? remote,
        bool forwarded, CancellationToken ct, TimeSpan? timeout = null, bool idempotent = true)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct, _shutdown.Token);
        cts.CancelAfter(timeout ?? _options.RequestTimeout);
        var token = cts.Token;
        var delay = 5;
        Exception? last = null;
        var mayHaveApplied = false; // an earlier attempt may have taken effect
        var inFlight = false;       // an attempt is under way (so the deadline may cut it after it took effect)
        while (true)
        {
            try
            {
                try
                {
                    inFlight = true;
                    return await local(token).ConfigureAwait(false);
                }
                catch (NotLeaderException nl)
                {
                    inFlight = false;
                    var leader = nl.Hint ?? LeaderId;
                    if (forwarded || remote is null)
                    {
                        var addr = leader is { } l0 ? AddressOf(l0) : null;
                        throw new SkiffException(ErrorKind.NotLeader,
                            leader is null ? "no leader is known" : $"the leader is {leader} at {addr}", null,
                            mayHaveApplied ? WriteOutcome.Unknown : WriteOutcome.NotApplied);
                    }
                    last = nl;
                    if (leader is { } l && l != Id && AddressOf(l) is { } address)
                    {
                        try
                        {
                            inFlight = true;
                            return await ForwardAsync(remote, address, idempotent, token).ConfigureAwait(false);
                        }
                        catch (SkiffException e) when (Retryable(e) && (idempotent || e.Outcome == WriteOutcome.NotApplied))
                        {
                            last = e;
                            mayHaveApplied |= e.Outcome == WriteOutcome.Unknown;
                        }
                        inFlight = false;
                    }
                }
                catch (RetryableException r) { last = r; }
                catch (SkiffException e) when (Retryable(e) && !forwarded && (idempotent || e.Outcome == WriteOutcome.NotApplied))
                {
                    last = e;
                    mayHaveApplied |= e.Outcome == WriteOutcome.Unknown;
                }
                catch (SkiffException e) when (mayHaveApplied && e.Outcome == WriteOutcome.NotApplied)
                {
                    // This attempt did nothing, but an earlier one may have: whatever ends the call must say so.
                    throw new SkiffException(e.Kind, e.Detail + "; an earlier attempt may have taken effect", e, WriteOutcome.Unknown);
                }
                inFlight = false;
                await Task.Delay(delay, token).ConfigureAwait(false);
                delay = Math.Min(100, delay * 2);
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                var outcome = mayHaveApplied || inFlight ? WriteOutcome.Unknown : WriteOutcome.NotApplied;
                if (_shutdown.IsCancellationRequested) throw new SkiffException(ErrorKind.StreamClosed, "the node is shutting down", null, outcome);
                var what = outcome == WriteOutcome.Unknown ? "its outcome is unknown" : "it did not take effect";
                if (LeaderId is null || (Role == Role.Leader && last is null))
                    throw new SkiffException(ErrorKind.NoQuorum,
                        LeaderId is null ? $"no leader could be reached before the deadline; {what}"
                            : $"no quorum of members answered before the deadline; {what}", null, outcome);
                throw new SkiffException(ErrorKind.Timeout, $"the request did not complete before the deadline ({last?.Message}); {what}", null, outcome);
            }
        }
    }

    /// <summary>One forwarded attempt. An idempotent one is abandoned (its outcome unknown) when the leader changes,
    /// so a call sent to a leader that was paused or cut off goes to the new leader at once, not at its deadline.</summary>
    private async Task<T> ForwardAsync<T>(Func<SkiffGrpcClient, CancellationToken, Task<T>> remote, string address, bool idempotent,
        CancellationToken token)
    {
        if (!idempotent) return await remote(ForwarderFor(address), token).ConfigureAwait(false);
        var changed = Volatile.Read(ref _leaderChange).Task;
        using var attempt = CancellationTokenSource.CreateLinkedTokenSource(token);
        var call = remote(ForwarderFor(address), attempt.Token);
        if (await Task.WhenAny(call, changed).ConfigureAwait(false) == call) return await call.ConfigureAwait(false);
        attempt.Cancel();
        _ = call.ContinueWith(t => _ = t.Exception, TaskScheduler.Default); // observed: the attempt is abandoned
        throw new SkiffException(ErrorKind.RpcCallFailed, $"the leader changed while {address} handled the call", null, WriteOutcome.Unknown);
    }

    // ------------------------------------------------------------------ client sessions and key-value writes

    private static long NowMs() => DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();

    private long SessionTimeoutMs(TimeSpan requested)
    {
        var chosen = requested > TimeSpan.Zero ? requested : _options.SessionTimeout;
        return Math.Clamp((long)chosen.TotalMilliseconds, Sessions.MinTimeoutMs, Sessions.MaxTimeoutMs);
    }

    /// <summary>Opens a client session through the log (expiring after <paramref name="timeout"/> without writes;
    /// zero: the node's <see cref="SkiffServerOptions.SessionTimeout"/>); returns its id and timeout.</summary>
    internal Task<(long Id, long TimeoutMs)> OpenSessionAsync(TimeSpan timeout, bool forwarded, CancellationToken ct)
    {
        var ms = SessionTimeoutMs(timeout);
        return RouteAsync(async t =>
        {
            var (result, _) = await Runtime.ProposeAsync(LogCommandCodec.encode(LogCommand.NewOpenSession(NowMs(), ms)), t).ConfigureAwait(false);
            return result is LogResult.SessionOpened opened
                ? (opened.session, ms)
                : throw new SkiffException(ErrorKind.StorageError, $"opening a session gave {result}");
        }, async (c, t) => (await c.OpenSessionAsync(TimeSpan.FromMilliseconds(ms), t).ConfigureAwait(false), ms),
            forwarded, ct, idempotent: false);
    }

    /// <summary>Closes a client session (an unknown one is fine).</summary>
    internal Task CloseSessionAsync(long id, bool forwarded, CancellationToken ct) =>
        RouteAsync(async t =>
        {
            await Runtime.ProposeAsync(LogCommandCodec.encode(LogCommand.NewCloseSession(id, NowMs())), t).ConfigureAwait(false);
            return true;
        }, async (c, t) =>
        {
            await c.CloseSessionAsync(id, t).ConfigureAwait(false);
            return true;
        }, forwarded, ct);

    /// <summary>Applies a key-value write exactly once: in the caller's session when one is given; otherwise in this
    /// node's own session, so that sending it again to a new leader, after a lost connection or a deposed leader,
    /// cannot apply it twice.</summary>
    internal async Task<(CommandResult Result, long Index)> WriteAsync(Command command, SessionRef? session, bool forwarded, CancellationToken ct)
    {
        CheckLimits(command);
        if (session is { } given) return await WriteInSessionAsync(command, given, forwarded, ct).ConfigureAwait(false);
        var own = _ownSession;
        var sequence = own.Begin();
        try
        {
            while (true)
            {
                long id;
                using (var opening = CancellationTokenSource.CreateLinkedTokenSource(ct))
                {
                    opening.CancelAfter(_options.RequestTimeout);
                    try { id = await own.EnsureOpenAsync(opening.Token).ConfigureAwait(false); }
                    catch (OperationCanceledException) when (!ct.IsCancellationRequested)
                    {
                        throw new SkiffException(ErrorKind.NoQuorum,
                            "could not open this node's session before the deadline; the write did not take effect", null, WriteOutcome.NotApplied);
                    }
                }
                try
                {
                    return await WriteInSessionAsync(command, own.Stamp(id, sequence), forwarded, ct).ConfigureAwait(false);
                }
                catch (SkiffException e) when (e.Kind == ErrorKind.SessionExpired && e.Outcome == WriteOutcome.NotApplied)
                {
                    own.Forget(id); // this node's session expired while it was idle: open a new one and write in it
                }
            }
        }
        finally
        {
            own.End(sequence);
        }
    }

    private Task<(CommandResult Result, long Index)> WriteInSessionAsync(Command command, SessionRef session, bool forwarded, CancellationToken ct) =>
        RouteAsync(t => ProposeInSessionAsync(command, session, t), (c, t) => ForwardWrite(c, command, session, t), forwarded, ct);

    private async Task<(CommandResult Result, long Index)> ProposeInSessionAsync(Command command, SessionRef session, CancellationToken ct)
    {
        var stamp = new SessionStamp(session.Id, session.Sequence, session.Acknowledged, NowMs());
        var (result, index) = await Runtime.ProposeAsync(LogCommandCodec.encode(LogCommand.NewInSession(stamp, command)), ct).ConfigureAwait(false);
        return result switch
        {
            LogResult.Applied applied => (applied.Item, index),
            LogResult.Repeated repeated => (repeated.Item1, repeated.index),
            _ when result is not null && result.IsSessionUnknown => throw new SkiffException(ErrorKind.SessionExpired,
                $"session {session.Id} no longer exists (it was idle longer than its timeout, or was closed); this attempt did not take effect",
                null, WriteOutcome.NotApplied),
            _ when result is not null && result.IsResultDiscarded => throw new SkiffException(ErrorKind.SessionExpired,
                $"request {session.Sequence} of session {session.Id} is older than the results the session keeps; this attempt did not take effect",
                null, WriteOutcome.NotApplied),
            _ => throw new SkiffException(ErrorKind.StorageError, $"the write at index {index} gave {result}"),
        };
    }

    private static async Task<(CommandResult Result, long Index)> ForwardWrite(SkiffGrpcClient leader, Command command, SessionRef session, CancellationToken ct)
    {
        switch (command)
        {
            case Command.Put put:
                return (CommandResult.Done, await leader.InsertOnceAsync(put.key, put.value, session, ct).ConfigureAwait(false));
            case Command.Delete delete:
                return (CommandResult.Done, await leader.DeleteOnceAsync(delete.key, session, ct).ConfigureAwait(false));
            case Command.CompareAndSwap cas:
                var (swapped, index) = await leader.CompareAndSwapOnceAsync(cas.key, cas.expected?.Value, cas.next?.Value, session, ct).ConfigureAwait(false);
                return (CommandResult.NewSwapped(swapped), index);
            default:
                throw new SkiffException(ErrorKind.InvalidArgument, $"unknown command {command}");
        }
    }

    /// <summary>The node's limits on keys and values (<see cref="RequestLimits"/>), checked before anything is
    /// proposed, whichever entry point the write came through (the client service checks them too, before forwarding).</summary>
    private void CheckLimits(Command command)
    {
        switch (command)
        {
            case Command.Put p: RequestLimits.Put(p.key, p.value.Length, MaxValueBytes); break;
            case Command.Delete d: RequestLimits.Key(d.key); break;
            case Command.CompareAndSwap c:
                RequestLimits.CompareAndSwap(c.key, c.expected?.Value.Length, c.next?.Value.Length, MaxValueBytes);
                break;
        }
    }

    /// <summary>Sets a key; returns the commit index of the write.</summary>
    public Task<long> PutAsync(string key, byte[] value, CancellationToken ct = default) => PutAsync(key, value, null, false, ct);

    internal async Task<long> PutAsync(string key, byte[] value, SessionRef? session, bool forwarded, CancellationToken ct) =>
        (await WriteAsync(Command.NewPut(key, value), session, forwarded, ct).ConfigureAwait(false)).Index;

    /// <summary>Removes a key (absent is fine); returns the commit index.</summary>
    public Task<long> DeleteAsync(string key, CancellationToken ct = default) => DeleteAsync(key, null, false, ct);

    internal async Task<long> DeleteAsync(string key, SessionRef? session, bool forwarded, CancellationToken ct) =>
        (await WriteAsync(Command.NewDelete(key), session, forwarded, ct).ConfigureAwait(false)).Index;

    /// <summary>Atomically sets <paramref name="key"/> to <paramref name="next"/> (null deletes) if its value equals
    /// <paramref name="expected"/> (null: absent). Returns whether it swapped and the commit index.</summary>
    public Task<(bool Swapped, long Index)> CasAsync(string key, byte[]? expected, byte[]? next, CancellationToken ct = default) =>
        CasAsync(key, expected, next, null, false, ct);

    internal async Task<(bool Swapped, long Index)> CasAsync(string key, byte[]? expected, byte[]? next, SessionRef? session, bool forwarded,
        CancellationToken ct)
    {
        var cmd = Command.NewCompareAndSwap(key,
            expected is null ? FSharpOption<byte[]>.None : FSharpOption<byte[]>.Some(expected),
            next is null ? FSharpOption<byte[]>.None : FSharpOption<byte[]>.Some(next));
        var (result, index) = await WriteAsync(cmd, session, forwarded, ct).ConfigureAwait(false);
        return (result is CommandResult.Swapped s && s.Item, index);
    }

    /// <summary>Waits until this node may serve a linearizable read (forwarding is done by the callers).</summary>
    private Task<bool> ReadBarrier(CancellationToken t) => Runtime.ReadBarrierAsync(t).ContinueWith(x =>
    {
        if (x.IsFaulted) throw x.Exception!.InnerException!;
        if (x.IsCanceled) throw new OperationCanceledException();
        return true;
    }, TaskScheduler.Default);

    /// <summary>The value of a key, or null.</summary>
    public Task<byte[]?> GetAsync(string key, ReadConsistency consistency = ReadConsistency.Linearizable, CancellationToken ct = default) =>
        GetAsync(key, consistency, false, ct);

    internal async Task<byte[]?> GetAsync(string key, ReadConsistency consistency, bool forwarded, CancellationToken ct)
    {
        if (consistency == ReadConsistency.Stale) return _sm!.Get(key);
        return await RouteAsync(async t =>
        {
            await ReadBarrier(t).ConfigureAwait(false);
            return _sm!.Get(key);
        }, (c, t) => c.GetAsync(key, ReadConsistency.Linearizable, t), forwarded, ct).ConfigureAwait(false);
    }

    /// <summary>Keys that start with <paramref name="prefix"/>, in order.</summary>
    public Task<IReadOnlyList<string>> ListKeysAsync(string prefix, ReadConsistency consistency = ReadConsistency.Linearizable, CancellationToken ct = default) =>
        ListKeysAsync(prefix, consistency, false, ct);

    internal async Task<IReadOnlyList<string>> ListKeysAsync(string prefix, ReadConsistency consistency, bool forwarded, CancellationToken ct)
    {
        if (consistency == ReadConsistency.Stale) return _sm!.ListKeys(prefix);
        return await RouteAsync(async t =>
        {
            await ReadBarrier(t).ConfigureAwait(false);
            return _sm!.ListKeys(prefix);
        }, (c, t) => c.ListKeysAsync(prefix, ReadConsistency.Linearizable, t), forwarded, ct).ConfigureAwait(false);
    }

    /// <summary>Every directory part of the stored keys.</summary>
    public Task<IReadOnlyList<string>> GetPrefixesAsync(ReadConsistency consistency = ReadConsistency.Linearizable, CancellationToken ct = default) =>
        GetPrefixesAsync(consistency, false, ct);

    internal async Task<IReadOnlyList<string>> GetPrefixesAsync(ReadConsistency consistency, bool forwarded, CancellationToken ct)
    {
        if (consistency == ReadConsistency.Stale) return _sm!.GetPrefixes();
        return await RouteAsync(async t =>
        {
            await ReadBarrier(t).ConfigureAwait(false);
            return _sm!.GetPrefixes();
        }, (c, t) => c.GetPrefixesAsync(t), forwarded, ct).ConfigureAwait(false);
    }

    /// <summary>Streams changes under <paramref name="prefix"/> as this node applies them, in commit order. With
    /// <paramref name="fromIndex"/> &gt; 0 the changes from that index come first, from the node's history of the
    /// last <see cref="SkiffServerOptions.WatchHistory"/> changes (durable with FASTER storage, so it survives
    /// restarts); StreamClosed naming the oldest index still available if they were compacted away. A watcher that
    /// falls too far behind is ended with StreamClosed.</summary>
    /// <remarks>The watch is registered when this method returns, before the first item is asked for.</remarks>
    public IAsyncEnumerable<WatchEvent> WatchAsync(string prefix, long fromIndex = 0, CancellationToken ct = default)
    {
        var cts = CancellationTokenSource.CreateLinkedTokenSource(ct, _shutdown.Token);
        try
        {
            var reader = Runtime.Applier.Subscribe(prefix, fromIndex, cts.Token);
            return Drain(reader, cts, ct);
        }
        catch
        {
            cts.Dispose();
            throw;
        }
    }

    private async IAsyncEnumerable<WatchEvent> Drain(System.Threading.Channels.ChannelReader<KvChange> reader, CancellationTokenSource cts,
        [EnumeratorCancellation] CancellationToken ct = default)
    {
        using var _ = cts;
        using var link = ct.Register(cts.Cancel);
        while (true)
        {
            bool more;
            try { more = await reader.WaitToReadAsync(cts.Token).ConfigureAwait(false); }
            catch (OperationCanceledException) when (_shutdown.IsCancellationRequested && !ct.IsCancellationRequested)
            {
                throw new SkiffException(ErrorKind.StreamClosed, "the node is shutting down");
            }
            if (!more) yield break;
            while (reader.TryRead(out var c)) yield return new WatchEvent(c.Index, c.Key, c.Value);
        }
    }

    // ------------------------------------------------------------------ membership

    /// <summary>Adds a member (as a learner that the leader promotes once caught up). A no-op if it is already a
    /// member at that address. Retries while another change is in progress, within the deadline.</summary>
    public Task AddServerAsync(Guid id, string address, CancellationToken ct = default) => AddServerAsync(id, address, false, ct);

    internal Task AddServerAsync(Guid id, string address, bool forwarded, CancellationToken ct) =>
        RouteAsync(async t =>
        {
            if (Role == Role.Leader && AddressOf(id) == address) return true;
            await Runtime.ChangeConfigAsync(ConfigChange.NewAddServer(id, address), t).ConfigureAwait(false);
            return true;
        }, async (c, t) =>
        {
            await c.AddServerAsync(id, address, t).ConfigureAwait(false);
            return true;
        }, forwarded, ct, _options.JoinTimeout);

    /// <summary>Removes a member. Removing the leader hands leadership to another voter first.</summary>
    public Task RemoveServerAsync(Guid id, CancellationToken ct = default) => RemoveServerAsync(id, false, ct);

    internal Task RemoveServerAsync(Guid id, bool forwarded, CancellationToken ct) =>
        RouteAsync(async t =>
        {
            if (Role == Role.Leader && !Members.ContainsKey(id)) return true;
            if (Role == Role.Leader && id == Id)
            {
                var target = Members.Where(m => m.Key != Id && m.Value.Voter).Select(m => (Guid?)m.Key).FirstOrDefault();
                if (target is { } tgt)
                {
                    await Runtime.TransferLeadershipAsync(tgt, t).ConfigureAwait(false);
                    throw new NotLeaderException(tgt);
                }
            }
            await Runtime.ChangeConfigAsync(ConfigChange.NewRemoveServer(id), t).ConfigureAwait(false);
            return true;
        }, async (c, t) =>
        {
            await c.RemoveServerAsync(id, "", t).ConfigureAwait(false);
            return true;
        }, forwarded, ct, _options.JoinTimeout);

    /// <summary>Hands leadership to <paramref name="target"/> (any other voter when null); returns the new leader.</summary>
    public Task<Guid> TransferLeadershipAsync(Guid? target, CancellationToken ct = default) => TransferLeadershipAsync(target, false, ct);

    internal Task<Guid> TransferLeadershipAsync(Guid? target, bool forwarded, CancellationToken ct) =>
        RouteAsync(async t =>
        {
            if (Role != Role.Leader) throw new NotLeaderException(LeaderId);
            var to = target ?? Members.Where(m => m.Key != Id && m.Value.Voter).Select(m => (Guid?)m.Key).FirstOrDefault()
                ?? throw new SkiffException(ErrorKind.PeerNotFound, "no other voter to hand leadership to");
            if (to == Id) return Id;
            await Runtime.TransferLeadershipAsync(to, t).ConfigureAwait(false);
            return to;
        }, (c, t) => c.TransferLeadershipAsync(target, t), forwarded, ct);

    // ------------------------------------------------------------------ peer side

    internal void DeliverPeerMessage(Envelope envelope)
    {
        if (IsIsolated || envelope.To != Id) return;
        if (RequestLimits.PeerMessage(envelope, MaxCommandBytes) is { } tooLarge)
        {
            _logger.LogWarning("Skiff node {NodeId}: dropped a peer message: {Reason}", Id, tooLarge);
            return;
        }
        _runtime?.Post(Event.NewReceive(envelope));
    }

    internal void EnsurePeer(Guid id, string address) => _transport?.Ensure(id, address);

    internal IStagedSnapshot BeginStaging() => _snapshots!.BeginStaging();

    /// <summary>Index of the latest snapshot this node holds (0: none); for tests.</summary>
    internal long LatestSnapshotIndex => _snapshots?.Latest?.Index ?? 0;

    internal CancellationToken ShutdownToken => _shutdown.Token;
}
