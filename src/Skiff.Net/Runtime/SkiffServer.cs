using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Logging;
using Microsoft.FSharp.Core;
using Skiff.Core;
using Skiff.Net.Runtime.Auth;
using Skiff.Net.Runtime.Tls;
using Skiff.Net.Storage.Ports;

namespace Skiff.Net.Runtime;

/// <summary>
/// One Skiff node: storage, the Raft event loop, the gRPC services (client calls and peer traffic on one port)
/// and the cluster behaviour (forwarding to the leader, joining, removal, watches). The facade wraps this class.
/// </summary>
internal sealed class SkiffServer : IAsyncDisposable
{
    private readonly SkiffServerOptions _options;
    private readonly NodeStorageBinding _storage;
    private readonly LeaderRouter _router;
    private NodeRuntime? _runtime;
    private PeerTransport? _transport;
    private WebApplication? _app;
    private readonly CancellationTokenSource _shutdown = new();
    private int _state; // 0 new, 1 started, 2 stopped
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _logger;
    private readonly TaskCompletionSource<Exception?> _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>This node's stable id (kept in the data directory).</summary>
    public Guid Id { get; }

    /// <summary>Where the other members reach this node ("host:port"): <see cref="SkiffServerOptions.AdvertiseAddress"/>,
    /// or the address and port it listens on.</summary>
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
        if (options.StateMachineMemoryBytes <= 0) throw new SkiffException(ErrorKind.InvalidArgument, $"StateMachineMemoryBytes must be positive, not {options.StateMachineMemoryBytes}");
        if (options.NewCluster == true && options.JoinPeers.Count > 0)
            throw new SkiffException(ErrorKind.InvalidArgument, "a node either founds a new cluster or joins one: NewCluster and JoinPeers exclude each other");
        Address = options.AdvertiseAddress is { } advertised
            ? MemberAddress.Validate(advertised, "the advertise address")
            : MemberAddress.Validate(MemberAddress.Of(options.Bind, options.Port), "the bind address (with no advertise address)");
        Tls = options.Tls is { } tls ? new NodeTls(tls) : null;
        _storage = new NodeStorageBinding(options);
        Id = _storage.NodeId;
        _router = new LeaderRouter(Id, () => LeaderId, () => Role, AddressOf, () => Cluster.Id, PeerChannels, options.RequestTimeout, _shutdown.Token);
        KeyValue = new KeyValueCalls(() => Runtime, _storage.StateMachine, _router, options, _shutdown.Token);
        Membership = new MembershipCalls(this, () => Runtime, _router, options.JoinTimeout);
        AuthCalls = new AuthCalls(this, () => Runtime, _router, options.TokenTtl);
        _router.ForwardToken = ForwardToken;
        _router.MemberToken = MemberToken;
    }

    /// <summary>The auth calls (the client service's entry point).</summary>
    internal AuthCalls AuthCalls { get; }

    /// <summary>The replicated auth state as this node has applied it.</summary>
    internal AuthState AuthState => _storage.IsOpen ? _storage.StateMachine.Auth : Core.Auth.empty;

    /// <summary>The token a call forwarded to the leader carries: the client call's (see Auth.AuthForwarding), or for
    /// this node's own calls, with auth on, one it signs for itself.</summary>
    private string? ForwardToken()
    {
        if (AuthForwarding.Token is { } token) return token;
        return MemberToken();
    }

    /// <summary>With auth on, a token this node signs for itself: a forwarded call carries it beside the client's, so
    /// the leader knows a member forwarded it (Auth.AuthCheck's session rule).</summary>
    private string? MemberToken()
    {
        var state = AuthState;
        return state.Enabled ? Tokens.Issue(state, Tokens.MemberPrincipal, DateTimeOffset.UtcNow.AddMinutes(1)) : null;
    }

    /// <summary>Who opened client session <paramref name="session"/> ("" for nobody in particular), or null if this
    /// node does not know it.</summary>
    internal string? SessionOwner(long session) => _storage.IsOpen ? _storage.StateMachine.SessionOwner(session) : null;

    /// <summary>The key-value calls, with their session and origin (the client service's entry point).</summary>
    internal KeyValueCalls KeyValue { get; }

    /// <summary>The membership calls, with their origin (the client service's entry point).</summary>
    internal MembershipCalls Membership { get; }

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
    public long AppliedIndex => _storage.IsOpen ? _storage.StateMachine.AppliedIndex : 0;

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
    internal int MaxCommandBytes => _storage.Log.MaxCommandBytes;

    /// <summary>Test hook: makes the node fail-stop with <paramref name="cause"/>, as a failed durable write would.</summary>
    internal void InjectFatal(Exception cause) => (_runtime ?? throw new InvalidOperationException("not started")).RaiseFatal(cause);

    /// <summary>Test hook (set before <see cref="StartAsync"/>): called before each log read the loader makes; an
    /// exception it returns is thrown as the read's failure.</summary>
    internal Func<LoadPurpose, Exception?>? LoadFault { get; set; }

    /// <summary>Raised for every change this node applies (on the applier's thread; keep handlers short).</summary>
    public event Action<Change>? Changed;

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
        if (!_storage.IsOpen) throw new SkiffException(ErrorKind.StreamClosed, "the node was shut down");
        if (_options.MinThreadPoolThreads > 0)
        {
            ThreadPool.GetMinThreads(out var workers, out var io);
            if (workers < _options.MinThreadPoolThreads) ThreadPool.SetMinThreads(_options.MinThreadPoolThreads, io);
        }
        try
        {
            var stored = _storage.ReadStart(Id, Address, _options.JoinPeers.Count > 0, _options.NewCluster, out var needsToJoin);
            var snapshots = _storage.Snapshots;
            _transport = new PeerTransport(Id, Address, _options.PeerQueueCapacity, () => snapshots, Cluster, PeerChannels);
            _runtime = new NodeRuntime(Id, _storage.Log, _storage.HardState, snapshots, _storage.StateMachine, _options.TickInterval,
                _options.WatchBufferCapacity, _options.WatchHistory, _transport.Send, _transport.SendSnapshot,
                _loggerFactory.CreateLogger("Skiff.Runtime"));
            _runtime.LoadFault = LoadFault;
            _runtime.DiskSpace = _storage.DiskSpace;
            _runtime.Applier.MaxWatchers = _options.MaxWatchers;
            _runtime.Loader.MaxReplicateLoadBytes = (_options.Raft ?? RaftCell.DefaultOptions).MaxBytesPerAppend;
            _runtime.ConfigurationChanged += c => _transport.Update(c);
            _runtime.RoleChanged += (r, t, l) =>
            {
                // A directory older than cluster ids learns one from its peers; a leader that has heard none makes it.
                if (r == Role.Leader && Cluster.Id is null) Cluster.Found();
                _router.NoteLeader(l);
                RoleChanged?.Invoke(r, t, l);
            };
            _runtime.ConfigurationChanged += c => MembershipChanged?.Invoke(c);
            _runtime.ConfigurationChanged += new RecordedAddressWarning(_logger, Id, Address).Check;
            _runtime.SlowFlush += d => SlowFlush?.Invoke(d);
            _runtime.Fatal += OnFatal;
            _runtime.Applier.Changed += c => Changed?.Invoke(c);

            _app = await EmbeddedHost.StartAsync(_options, this).ConfigureAwait(false);
            _runtime.Start(StartModule.ofStore(Id, _options.Raft ?? RaftCell.DefaultOptions, (ulong)Random.Shared.NextInt64(), stored));

            if (needsToJoin) await new JoinProcedure(this, _runtime, _options, _logger).JoinAsync(_shutdown.Token, ct).ConfigureAwait(false);
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
                await TransferLeadershipAsync(null, cts.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is SkiffException or OperationCanceledException) { }
        }
        if (Interlocked.Exchange(ref _state, 2) == 2 && !_storage.IsOpen)
        {
            await _stopped.Task.ConfigureAwait(false); // another shutdown (a fail-stop's) is finishing
            return;
        }
        _shutdown.Cancel();
        if (_app is not null)
        {
            await EmbeddedHost.StopAsync(_app).ConfigureAwait(false);
            _app = null;
        }
        if (_runtime is not null) await _runtime.DisposeAsync().ConfigureAwait(false);
        if (_transport is not null) await _transport.DisposeAsync().ConfigureAwait(false);
        _router.Dispose();
        _storage.Dispose();
        _stopped.TrySetResult(FatalError);
    }

    /// <summary>Same as <see cref="ShutdownAsync"/>.</summary>
    public async ValueTask DisposeAsync() => await ShutdownAsync().ConfigureAwait(false);

    // ------------------------------------------------------------------ calls

    internal string? AddressOf(Guid id) =>
        _runtime?.Configuration.Members.TryFind(id) is { } m && FSharpOption<Member>.get_IsSome(m) ? m.Value.Address : null;

    internal (Guid? Leader, string? Address) LeaderInfo()
    {
        var l = LeaderId;
        return (l, l is { } id ? AddressOf(id) : null);
    }

    /// <summary>Sets a key; returns the commit index of the write.</summary>
    public Task<long> InsertAsync(string key, byte[] value, CancellationToken ct = default) => KeyValue.InsertAsync(key, value, null, CallOrigin.Local, ct);

    /// <summary>Removes a key (absent is fine); returns the commit index.</summary>
    public Task<long> RemoveAsync(string key, CancellationToken ct = default) => KeyValue.RemoveAsync(key, null, CallOrigin.Local, ct);

    /// <summary>Atomically sets <paramref name="key"/> to <paramref name="next"/> (null deletes) if its value equals
    /// <paramref name="expected"/> (null: absent). Returns whether it swapped and the commit index.</summary>
    public Task<(bool Swapped, long Index)> CompareAndSwapAsync(string key, byte[]? expected, byte[]? next, CancellationToken ct = default) =>
        KeyValue.CompareAndSwapAsync(key, expected, next, null, CallOrigin.Local, ct);

    /// <summary>The value of a key, or null.</summary>
    public Task<byte[]?> GetAsync(string key, ReadConsistency consistency = ReadConsistency.Linearizable, CancellationToken ct = default) =>
        KeyValue.GetAsync(key, consistency, CallOrigin.Local, ct);

    /// <summary>Keys that start with <paramref name="prefix"/>, in order.</summary>
    public Task<IReadOnlyList<string>> ListKeysAsync(string prefix, ReadConsistency consistency = ReadConsistency.Linearizable, CancellationToken ct = default) =>
        KeyValue.ListKeysAsync(prefix, consistency, CallOrigin.Local, ct);

    /// <summary>One page of the keys that start with <paramref name="prefix"/>, after <paramref name="startAfter"/>
    /// (at most <paramref name="limit"/>; 0: the largest page).</summary>
    public Task<ListPage> ListKeysPageAsync(string prefix, string? startAfter, int limit, ReadConsistency consistency = ReadConsistency.Linearizable,
        CancellationToken ct = default) =>
        KeyValue.ListKeysPageAsync(prefix, startAfter, limit, consistency, CallOrigin.Local, ct);

    /// <summary>One page of the directory parts of the stored keys, after <paramref name="startAfter"/>.</summary>
    public Task<ListPage> GetPrefixesPageAsync(string? startAfter, int limit, ReadConsistency consistency = ReadConsistency.Linearizable,
        CancellationToken ct = default) =>
        KeyValue.GetPrefixesPageAsync(startAfter, limit, consistency, CallOrigin.Local, ct);

    /// <summary>Every directory part of the stored keys.</summary>
    public Task<IReadOnlyList<string>> GetPrefixesAsync(ReadConsistency consistency = ReadConsistency.Linearizable, CancellationToken ct = default) =>
        KeyValue.GetPrefixesAsync(consistency, CallOrigin.Local, ct);

    /// <summary>Streams changes under <paramref name="prefix"/> as this node applies them, in commit order. With
    /// <paramref name="fromIndex"/> &gt; 0 the changes from that index come first, from the node's history of the
    /// last <see cref="SkiffServerOptions.WatchHistory"/> changes (durable with FASTER storage, so it survives
    /// restarts); StreamClosed naming the oldest index still available if they were compacted away. A watcher that
    /// falls too far behind is ended with StreamClosed.</summary>
    /// <remarks>The watch is registered when this method returns, before the first item is asked for.</remarks>
    public IAsyncEnumerable<Change> WatchAsync(string prefix, long fromIndex = 0, CancellationToken ct = default) =>
        KeyValue.WatchAsync(prefix, fromIndex, ct);

    /// <summary>Adds a member (as a learner that the leader promotes once caught up). A no-op if it is already a
    /// member at that address. Retries while another change is in progress, within the deadline.</summary>
    public Task AddServerAsync(Guid id, string address, CancellationToken ct = default) => Membership.AddServerAsync(id, address, CallOrigin.Local, ct);

    /// <summary>Gives member <paramref name="id"/> a new address (<c>host:port</c>); see
    /// <see cref="MembershipCalls.UpdateServerAsync"/>.</summary>
    public Task UpdateServerAsync(Guid id, string address, CancellationToken ct = default) =>
        Membership.UpdateServerAsync(id, address, CallOrigin.Local, ct);

    /// <summary>Removes a member. Removing the leader hands leadership to another voter first.</summary>
    public Task RemoveServerAsync(Guid id, CancellationToken ct = default) => Membership.RemoveServerAsync(id, CallOrigin.Local, ct);

    /// <summary>Hands leadership to <paramref name="target"/> (any other voter when null); returns the new leader.</summary>
    public Task<Guid> TransferLeadershipAsync(Guid? target, CancellationToken ct = default) =>
        Membership.TransferLeadershipAsync(target, CallOrigin.Local, ct);

    // ------------------------------------------------------------------ peer side

    internal void DeliverPeerMessage(Envelope envelope)
    {
        if (IsIsolated || envelope.To != Id) return;
        if (RequestLimits.PeerMessage(envelope, MaxCommandBytes) is { } tooLarge)
        {
            _logger.LogWarning("Skiff node {NodeId}: dropped a peer message: {Reason}", Id, tooLarge);
            return;
        }
        _runtime?.PostPeer(envelope);
    }

    /// <summary>The node's TLS, or null when it serves plain HTTP/2.</summary>
    internal NodeTls? Tls { get; }

    /// <summary>How this node dials other members.</summary>
    internal ChannelSecurity PeerChannels => Tls?.PeerChannels ?? ChannelSecurity.Plaintext;

    /// <summary>The cluster this node belongs to.</summary>
    internal ClusterIdentity Cluster => _storage.Cluster;

    /// <summary>The server's logger (for the services).</summary>
    internal ILogger Logger => _logger;

    /// <summary>Peer messages refused because the caller's certificate does not cover the member they claim to be
    /// from; for tests.</summary>
    /// <summary>The commit index last handed to the log to record (tests await it before a restart).</summary>
    internal long MarkedCommitIndex => _runtime?.MarkedCommit ?? 0;

    internal long DeniedPeerMessages => Interlocked.Read(ref _deniedPeerMessages);

    private long _deniedPeerMessages;

    internal void NotePeerMessageDenied() => Interlocked.Increment(ref _deniedPeerMessages);

    /// <summary>Peer messages this node refused as coming from another cluster; for tests.</summary>
    internal long ForeignPeerMessages => Interlocked.Read(ref _foreignPeerMessages);

    private long _foreignPeerMessages;

    /// <summary>Counts a peer message refused as another cluster's and, when asked, logs it.</summary>
    internal void NotePeerMessageRefused(Google.Protobuf.ByteString cluster, string? from, bool logIt)
    {
        Interlocked.Increment(ref _foreignPeerMessages);
        RuntimeMetrics.ForeignPeerMessages.Add(1);
        if (logIt)
            _logger.LogWarning("Skiff node {NodeId} of cluster {Cluster}: refused peer messages from {From} of cluster {Other}",
                Id, Cluster.Id, from ?? "an unnamed member", cluster.Length == 16 ? new Guid(cluster.Span) : "(malformed)");
    }

    internal void EnsurePeer(Guid id, string address) => _transport?.Ensure(id, address);

    internal IStagedSnapshot BeginStaging() => _storage.Snapshots.BeginStaging();

    /// <summary>Index of the latest snapshot this node holds (0: none); for tests.</summary>
    internal long LatestSnapshotIndex => _storage.IsOpen ? _storage.Snapshots.Latest?.Index ?? 0 : 0;

    internal CancellationToken ShutdownToken => _shutdown.Token;
}
