using System.Net;
using System.Reactive.Linq;
using System.Reactive.Subjects;
using Microsoft.Extensions.Logging;
using Skiff.Core;
using Skiff.Diagnostics;
using Skiff.Net.Runtime;

namespace Skiff;

/// <summary>An embedded Skiff node: a member of a Raft cluster that serves the key-value calls in process (no network
/// hop for the embedding application) and to other processes over gRPC. Build one with <see cref="Builder"/> or
/// <see cref="Create"/>, then <see cref="StartAsync"/>.</summary>
public sealed class SkiffNode : KeyValueStoreBase, IAsyncDisposable
{
    private readonly SkiffServer _server;
    private readonly SkiffOptions _options;
    private readonly Subject<Change> _changes = new();
    private readonly Subject<ElectionState> _electionStates = new();
    private readonly ILogger _logger;

    private SkiffNode(SkiffOptions options, SkiffServer server)
        : base(options.Serializer, options.RequestTimeout, options.MaxValueBytes)
    {
        _options = options;
        _server = server;
        // The runtime raises these on its applying thread, one at a time and in commit order, so the subjects see a
        // well-ordered sequence without extra locking.
        _logger = options.LoggerFactory.CreateLogger("Skiff.Node");
        Metrics = new SkiffMetrics(this);
        Stopped = _server.Stopped.ContinueWith(t => t.Result switch
        {
            null => null,
            SkiffException e => e,
            var e => new SkiffException(ErrorKind.StorageError, "the node stopped itself: " + e.Message, e),
        }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        _server.Changed += e =>
        {
            Metrics.ChangeApplied();
            _changes.OnNext(e);
        };
        _server.RoleChanged += (role, term, leader) =>
        {
            // Elections are rare and worth a line each; nothing on the per-write path logs at Information.
            _logger.LogInformation("Skiff node {NodeId}: {Role} in term {Term}, leader {Leader}", Id, role, term,
                leader is { } l ? l.ToString() : "unknown");
            _electionStates.OnNext(ToElectionState(role));
        };
        _server.MembershipChanged += configuration =>
            _logger.LogInformation("Skiff node {NodeId}: members now {Members}", Id,
                string.Join(", ", configuration.Members.Select(m => $"{m.Key} at {m.Value.Address}{(m.Value.Voter ? "" : " (learner)")}")));
        _server.SlowFlush += took =>
            _logger.LogWarning("Skiff node {NodeId}: a durable log write took {Milliseconds:0} ms", Id, took.TotalMilliseconds);
    }

    /// <summary>Completes once the node has stopped and released its data directory: with null after
    /// <see cref="ShutdownAsync"/>, or with the cause when the node stopped itself (a fail-stop: a durable write, an
    /// apply, a log read or a snapshot install failed, so it could no longer go on safely; usually
    /// <see cref="ErrorKind.StorageError"/>). A fail-stop is also logged at Critical and counted on the meter
    /// (<c>skiff.fail_stops</c>). The task never faults; await it to notice that the node is gone.</summary>
    public Task<SkiffException?> Stopped { get; }

    /// <summary>The runtime node, for the integration tests' fault hooks.</summary>
    internal SkiffServer Server => _server;

    /// <summary>Test hook (integration tests, <c>skiff serve</c>'s hidden <c>--fault-after-ms</c>): makes the node
    /// fail-stop with <paramref name="cause"/> as a failed durable write would.</summary>
    internal void InjectFatal(Exception cause) => _server.InjectFatal(cause);

    /// <summary>This node's instruments on the <c>Skiff</c> meter.</summary>
    public SkiffMetrics Metrics { get; }

    /// <summary>On the leader, how many log entries each follower lags behind; empty on other nodes.</summary>
    public IReadOnlyDictionary<Guid, long> PeerLag() => _server.PeerLag();

    /// <summary>Durable log writes so far (each one fsync).</summary>
    public long Flushes => _server.Flushes;

    /// <summary>Checks the settings, prepares the data directory and loads or creates the node's identity.</summary>
    /// <exception cref="SkiffException">For a bad setting or a data directory that cannot be created.</exception>
    public static SkiffNode Create(SkiffOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var copy = new SkiffOptions
        {
            Address = options.Address,
            Port = options.Port,
            DataDirectory = options.DataDirectory,
            JoinCluster = options.JoinCluster.ToArray(),
            JoinEndpoints = options.JoinEndpoints.ToArray(),
            AdvertiseAddress = options.AdvertiseAddress,
            NewCluster = options.NewCluster,
            Tls = options.Tls,
            RequestTimeout = options.RequestTimeout,
            JoinTimeout = options.JoinTimeout,
            SessionTimeout = options.SessionTimeout,
            TokenTtl = options.TokenTtl,
            MaxValueBytes = options.MaxValueBytes,
            StateMachineMemoryBytes = options.StateMachineMemoryBytes,
            MaxWatchers = options.MaxWatchers,
            MaxListPage = options.MaxListPage,
            MinThreadPoolThreads = options.MinThreadPoolThreads,
            Serializer = options.Serializer,
            LoggerFactory = options.LoggerFactory ?? Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance,
            ConfigureServer = options.ConfigureServer,
        };
        var serverOptions = new SkiffServerOptions
        {
            Bind = copy.Address,
            Port = copy.Port,
            DataDirectory = copy.DataDirectory,
            AdvertiseAddress = copy.AdvertiseAddress,
            JoinPeers = copy.JoinCluster.Select(a => Endpoint(a, copy.Port)).Concat(copy.JoinEndpoints).ToArray(),
            NewCluster = copy.NewCluster,
            Tls = copy.Tls,
            RequestTimeout = copy.RequestTimeout,
            JoinTimeout = copy.JoinTimeout,
            SessionTimeout = copy.SessionTimeout,
            TokenTtl = copy.TokenTtl,
            MaxValueBytes = copy.MaxValueBytes,
            StateMachineMemoryBytes = copy.StateMachineMemoryBytes,
            MaxWatchers = copy.MaxWatchers,
            MaxListPage = copy.MaxListPage,
            MinThreadPoolThreads = copy.MinThreadPoolThreads,
            LoggerFactory = copy.LoggerFactory,
        };
        copy.ConfigureServer?.Invoke(serverOptions);
        var server = new SkiffServer(serverOptions);
        return new SkiffNode(copy, server);
    }

    internal static string Endpoint(IPAddress address, int port) =>
        new IPEndPoint(address, port).ToString();

    /// <summary>This node's stable id, kept in its data directory across restarts.</summary>
    public Guid Id => _server.Id;

    /// <summary>The id of the cluster this node belongs to, kept in its data directory: made when the cluster was
    /// founded, learned when the node joined. Null before a joining node has reached a member.</summary>
    public Guid? ClusterId => _server.Cluster.Id;

    /// <summary>The address this node listens on.</summary>
    public IPAddress Address => _options.Address;

    /// <summary>The port this node listens on.</summary>
    public int Port => _options.Port;

    /// <summary>Where the other members and clients reach this node (<c>host:port</c>): the advertise address, or the
    /// address and port it listens on.</summary>
    public string AdvertisedAddress => _server.Address;

    /// <summary>The role this node plays now.</summary>
    public ElectionState ElectionState => ToElectionState(_server.Role);

    /// <summary>True once this node knows a leader (itself or another).</summary>
    public bool IsLeaderElected => _server.LeaderId is not null;

    /// <summary>The leader this node knows of, if any.</summary>
    public Guid? LeaderId => _server.LeaderId;

    /// <summary>The current Raft term.</summary>
    public long Term => _server.Term;

    /// <summary>The highest log index this node knows to be committed.</summary>
    public long CommitIndex => _server.CommitIndex;

    /// <summary>The highest log index this node has applied to its store.</summary>
    public long AppliedIndex => _server.AppliedIndex;

    /// <summary>Every committed change this node applies, in commit order.</summary>
    public IObservable<Change> Changes => _changes.AsObservable();

    /// <summary>This node's role each time it changes.</summary>
    public IObservable<ElectionState> ElectionStates => _electionStates.DistinctUntilChanged().AsObservable();

    /// <summary>Opens storage, starts serving and joins the cluster if configured to; returns once serving and, for
    /// a joining node, once the cluster has made it a voter (it is added as a learner and promoted when caught up;
    /// <see cref="ErrorKind.ClusterJoinFailed"/> if that does not happen within the join timeout). The node then runs
    /// in the background until <see cref="ShutdownAsync"/>.</summary>
    /// <exception cref="SkiffException">RpcBindFailed, DataDirectoryLocked, StorageCorrupted, ClusterJoinFailed…</exception>
    public Task StartAsync(CancellationToken cancellationToken = default) => _server.StartAsync(cancellationToken);

    /// <summary>Returns once this node knows a leader.</summary>
    /// <exception cref="SkiffException">With <see cref="ErrorKind.LeaderElectionTimeout"/> when none is known in time.</exception>
    public Task WaitForLeaderAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        SkiffOptions.RequirePositive(timeout, nameof(timeout));
        return _server.WaitForLeaderAsync(timeout, cancellationToken);
    }

    /// <summary>The members of the cluster by id, with their IP addresses, as this node knows them: voters and
    /// learners alike (skiff-rs's <c>get_cluster</c>). A member addressed by host name maps to
    /// <see cref="IPAddress.None"/>; <see cref="GetMembersAsync"/> gives every member's <c>host:port</c> and says
    /// which are voters.</summary>
    public Task<IReadOnlyDictionary<Guid, IPAddress>> GetClusterAsync(CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        IReadOnlyDictionary<Guid, IPAddress> members = _server.Members.ToDictionary(m => m.Key, m => HostOf(m.Value.Address));
        return Task.FromResult(members);
    }

    /// <summary>The members of the cluster as this node knows them, each with whether it is a voter or a learner
    /// (a learner does not count toward a majority yet), ordered by address.</summary>
    public Task<IReadOnlyList<ClusterMember>> GetMembersAsync(CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        IReadOnlyList<ClusterMember> members = _server.Members
            .Select(m => new ClusterMember(m.Key, m.Value.Address, m.Value.Voter))
            .OrderBy(m => m.Endpoint, StringComparer.Ordinal).ToList();
        return Task.FromResult(members);
    }

    /// <summary>Gives member <paramref name="id"/> a new address (<c>host:port</c>, by host name or IP address), as
    /// etcd's <c>member update</c>: one replicated configuration change that keeps its id, vote and data. The other
    /// members dial it at the new address as soon as they have the change; restart the member there (with that
    /// <see cref="SkiffOptions.AdvertiseAddress"/>) and it catches up. A no-op if it already has that address.</summary>
    /// <exception cref="SkiffException">With <see cref="ErrorKind.InvalidAddress"/> for a malformed address or one
    /// another member has, <see cref="ErrorKind.PeerNotFound"/> for an id that is not a member.</exception>
    public Task UpdateMemberAsync(Guid id, string address, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(address);
        return WithDeadline(cancellationToken, async t =>
        {
            await _server.UpdateServerAsync(id, address, t).ConfigureAwait(false);
            return true;
        });
    }

    /// <summary>Hands leadership to <paramref name="target"/> (any other voter when null); returns the new leader.</summary>
    public Task<Guid> TransferLeadershipAsync(Guid? target, CancellationToken cancellationToken = default) =>
        WithDeadline(cancellationToken, t => _server.TransferLeadershipAsync(target, t));

    /// <summary>Stops serving, fails calls in flight, flushes storage and releases the data directory. Safe to call
    /// more than once.</summary>
    public async Task ShutdownAsync()
    {
        await _server.ShutdownAsync().ConfigureAwait(false);
        await Stopped.ConfigureAwait(false); // completed by the server's shutdown; its continuation may still be queued
        if (Interlocked.Exchange(ref _streamsEnded, 1) == 0)
        {
            _changes.OnCompleted();
            _electionStates.OnCompleted();
        }
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        await ShutdownAsync().ConfigureAwait(false);
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _changes.Dispose();
        _electionStates.Dispose();
        Metrics.Dispose();
    }

    private int _streamsEnded;
    private int _disposed;

    private protected override Task PutCoreAsync(string key, byte[] value, CancellationToken cancellationToken) =>
        _server.InsertAsync(key, value, cancellationToken);

    private protected override Task<byte[]?> GetCoreAsync(string key, ReadConsistency consistency, CancellationToken cancellationToken) =>
        _server.GetAsync(key, consistency, cancellationToken);

    private protected override Task DeleteCoreAsync(string key, CancellationToken cancellationToken) =>
        _server.RemoveAsync(key, cancellationToken);

    private protected override async Task<bool> CompareAndSwapCoreAsync(string key, byte[]? expected, byte[]? next, CancellationToken cancellationToken) =>
        (await _server.CompareAndSwapAsync(key, expected, next, cancellationToken).ConfigureAwait(false)).Swapped;

    private protected override Task<ListPage> ListKeysPageCoreAsync(string prefix, string? startAfter, int limit, CancellationToken cancellationToken) =>
        _server.ListKeysPageAsync(prefix, startAfter, limit, ReadConsistency.Linearizable, cancellationToken);

    private protected override Task<ListPage> GetPrefixesPageCoreAsync(string? startAfter, int limit, CancellationToken cancellationToken) =>
        _server.GetPrefixesPageAsync(startAfter, limit, ReadConsistency.Linearizable, cancellationToken);

    private protected override Task<Subscriber> WatchCoreAsync(string prefix, CancellationToken cancellationToken)
    {
        // Registration is synchronous, so every change applied after this returns reaches the subscriber.
        var stop = new CancellationTokenSource();
        var events = _server.WatchAsync(prefix, 0, stop.Token);
        var changes = WatchPump.CreateBuffer();
        _ = WatchPump.Run(events, changes.Writer, stop.Token);
        return Task.FromResult(new Subscriber(prefix, changes.Reader, () =>
        {
            stop.Cancel();
            stop.Dispose();
            return ValueTask.CompletedTask;
        }, Serializer));
    }

    private protected override Task RemoveNodeCoreAsync(Guid id, CancellationToken cancellationToken) =>
        _server.RemoveServerAsync(id, cancellationToken);

    internal static ElectionState ToElectionState(Role role) =>
        role.Tag switch
        {
            Role.Tags.Leader => ElectionState.Leader,
            Role.Tags.Candidate or Role.Tags.PreCandidate => ElectionState.Candidate,
            _ => ElectionState.Follower,
        };

    internal static IPAddress HostOf(string endpoint) => IpOf(endpoint) ?? IPAddress.None;

    /// <summary>The IP address of a <c>host:port</c> whose host is one; null for a host name.</summary>
    internal static IPAddress? IpOf(string endpoint) =>
        MemberAddress.TryParse(endpoint, out var host, out _, out _)
        && IPAddress.TryParse(host.TrimStart('[').TrimEnd(']'), out var ip) ? ip : null;
}
