using System.Net;
using Skiff.Net.Runtime;

namespace Skiff;

/// <summary>A client of a Skiff cluster over gRPC, as skiff-rs's <c>Client</c>: give it some members' addresses; it
/// talks to one that answers, and that member forwards writes and linearizable reads to the leader.</summary>
/// <remarks>Writes are exactly-once: the client opens a session with the cluster on its first write, numbers its
/// writes, and sends a write again (with the same number) through the next member after any failure that may have
/// hidden its outcome, until the call's deadline; the cluster applies it once, and a compare-and-swap reports what
/// it did the first time. An error says in <see cref="SkiffException.Outcome"/> whether the write surely did not
/// take effect or may have. Dispose the client to close its session (otherwise it expires after
/// <see cref="WithSessionTimeout"/> without writes).</remarks>
/// <example><code>
/// await using var client = new Client(new[] { IPAddress.Parse("127.0.0.1") }).WithPort(9400);
/// await client.ConnectAsync(ct);
/// await client.InsertAsync("users/alice", alice, ct);
/// </code></example>
public sealed partial class Client : KeyValueStoreBase, IAsyncDisposable
{
    private readonly IPAddress[] _addresses;
    private readonly string[]? _endpoints;
    private int _port = 9400;
    private TimeSpan _sessionTimeout = TimeSpan.Zero;
    private SkiffGrpcClient? _grpc;
    private Skiff.Net.Runtime.Tls.ChannelSecurity _security = Skiff.Net.Runtime.Tls.ChannelSecurity.Plaintext;

    /// <summary>A client of the members at <paramref name="addresses"/> (port 9400 unless <see cref="WithPort"/>).</summary>
    /// <exception cref="SkiffException">With <see cref="ErrorKind.InvalidAddress"/> for an empty list or a null address.</exception>
    public Client(IEnumerable<IPAddress> addresses)
        : base(JsonSkiffSerializer.Default, TimeSpan.FromSeconds(5), KeyRules.DefaultMaxValueBytes)
    {
        ArgumentNullException.ThrowIfNull(addresses);
        _addresses = addresses.ToArray();
        if (_addresses.Length == 0 || _addresses.Any(a => a is null))
            throw new SkiffException(ErrorKind.InvalidAddress, "a client needs at least one member address, and no null ones");
    }

    private Client(string[] endpoints)
        : base(JsonSkiffSerializer.Default, TimeSpan.FromSeconds(5), KeyRules.DefaultMaxValueBytes)
    {
        _endpoints = endpoints;
        _addresses = Array.Empty<IPAddress>();
    }

    /// <summary>A client of the members at <paramref name="endpoints"/>, each <c>host:port</c> with a host name or an
    /// IP address and its own port, as the cluster's configuration records them (e.g.
    /// <c>skiff-0.skiff.default.svc:9400</c>). <see cref="WithPort"/> plays no part for them.</summary>
    /// <exception cref="SkiffException">With <see cref="ErrorKind.InvalidAddress"/> for an empty list or an address that
    /// is not <c>host:port</c>.</exception>
    public static Client ForEndpoints(IEnumerable<string> endpoints)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        var checkedEndpoints = endpoints.Select(e => MemberAddress.Validate(e, "a member's endpoint")).ToArray();
        if (checkedEndpoints.Length == 0) throw new SkiffException(ErrorKind.InvalidAddress, "a client needs at least one member endpoint");
        return new Client(checkedEndpoints);
    }

    /// <summary>The port the members listen on (default 9400).</summary>
    /// <exception cref="SkiffException">With <see cref="ErrorKind.InvalidAddress"/> outside 1–65535.</exception>
    public Client WithPort(int port)
    {
        if (port is < 1 or > 65535) throw new SkiffException(ErrorKind.InvalidAddress, $"port {port} is not between 1 and 65535");
        EnsureNotConnected();
        _port = port;
        return this;
    }

    /// <summary>Talks TLS to the members, verifying them against <see cref="ClientTlsOptions.CaFile"/> (each
    /// member's certificate must name the address dialled), and presents a client certificate if one is given (for
    /// members that require one). Without it the client talks plain HTTP/2.</summary>
    /// <exception cref="SkiffException">With <see cref="ErrorKind.InvalidArgument"/> for incomplete settings or files that cannot be read.</exception>
    public Client WithTls(ClientTlsOptions tls)
    {
        ArgumentNullException.ThrowIfNull(tls);
        EnsureNotConnected();
        _security = Skiff.Net.Runtime.Tls.ChannelSecurity.ForClient(tls);
        return this;
    }

    /// <summary>The deadline of every call (default 5 s).</summary>
    /// <exception cref="SkiffException">With <see cref="ErrorKind.InvalidArgument"/> for a timeout that is not positive.</exception>
    public Client WithTimeout(TimeSpan timeout)
    {
        SkiffOptions.RequirePositive(timeout, nameof(timeout));
        Timeout = timeout;
        return this;
    }

    /// <summary>How long the cluster keeps this client's session without writes (default: the members' own
    /// setting, 10 minutes unless changed; 1 s to 7 days). A write after that opens a new session by itself; only a
    /// write whose earlier attempt was cut off when its session expired fails, with
    /// <see cref="ErrorKind.SessionExpired"/>.</summary>
    /// <exception cref="SkiffException">With <see cref="ErrorKind.InvalidArgument"/> outside 1 s to 7 days.</exception>
    public Client WithSessionTimeout(TimeSpan timeout)
    {
        if (timeout < TimeSpan.FromSeconds(1) || timeout > TimeSpan.FromDays(7))
            throw new SkiffException(ErrorKind.InvalidArgument, $"the session timeout must be between 1 s and 7 days, not {timeout}");
        EnsureNotConnected();
        _sessionTimeout = timeout;
        return this;
    }

    /// <summary>The id of this client's session with the cluster (0 before the first write).</summary>
    public long SessionId => _grpc?.SessionId ?? 0;

    /// <summary>The serializer for typed values (default System.Text.Json).</summary>
    public Client WithSerializer(ISkiffSerializer serializer)
    {
        Serializer = serializer ?? throw new ArgumentNullException(nameof(serializer));
        return this;
    }

    /// <summary>The largest value this client sends, in bytes (default 1 MiB).</summary>
    public Client WithMaxValueBytes(int bytes)
    {
        if (bytes <= 0) throw new SkiffException(ErrorKind.InvalidArgument, $"the value limit must be positive, not {bytes}");
        MaxValueBytes = bytes;
        return this;
    }

    /// <summary>Checks that some member answers.</summary>
    /// <exception cref="SkiffException">With <see cref="ErrorKind.ClientConnectFailed"/> when none does in time.</exception>
    public async Task ConnectAsync(CancellationToken cancellationToken = default)
    {
        try
        {
            await WithDeadline(cancellationToken, t => Grpc.ClusterStatusAsync(t)).ConfigureAwait(false);
        }
        catch (SkiffException e) when (e.Kind is ErrorKind.Timeout or ErrorKind.RpcCallFailed)
        {
            throw new SkiffException(ErrorKind.ClientConnectFailed, $"no member answered at {string.Join(", ", Endpoints)}: {e.Message}", e);
        }
    }

    /// <summary>The members of the cluster by id, with their IP addresses, as the contacted member knows them
    /// (skiff-rs's <c>get_cluster</c>). A member addressed by host name maps to <see cref="IPAddress.None"/>;
    /// <see cref="GetStatusAsync"/> gives every member's <c>host:port</c>.</summary>
    public Task<IReadOnlyDictionary<Guid, IPAddress>> GetClusterAsync(CancellationToken cancellationToken = default) =>
        WithDeadline(cancellationToken, async t =>
        {
            var status = await Grpc.ClusterStatusAsync(t).ConfigureAwait(false);
            IReadOnlyDictionary<Guid, IPAddress> members = status.Members.ToDictionary(m => Guid.Parse(m.Id), m => SkiffNode.HostOf(m.Address));
            return members;
        });

    /// <summary>Every member's own view of itself: role, term, commit and applied index, the leader it knows. The
    /// member list comes from the first member that answers; each member is then asked directly, and one that does
    /// not answer is listed with <see cref="MemberStatus.Reachable"/> false rather than failing the call.</summary>
    /// <exception cref="SkiffException">With <see cref="ErrorKind.ClientConnectFailed"/> when no member answers.</exception>
    public async Task<ClusterStatus> GetStatusAsync(CancellationToken cancellationToken = default)
    {
        var first = await WithDeadline(cancellationToken, t => Grpc.ClusterStatusAsync(t)).ConfigureAwait(false);
        Guid? cluster = Guid.TryParse(first.ClusterId, out var firstCluster) ? firstCluster : null;
        var known = first.Members.Select(m => (Id: Guid.Parse(m.Id), m.Address, m.Voter)).ToList();
        if (known.Count == 0 && Guid.TryParse(first.Id, out var self))
            known.Add((self, Grpc.Addresses[0], true));
        var members = await Task.WhenAll(known.Select(async m =>
        {
            try
            {
                using var one = new SkiffGrpcClient(new[] { m.Address }, _security);
                if (cluster is { } id) one.ExpectCluster(id); // a member of another cluster answers ClusterMismatch
                var s = await WithDeadline(cancellationToken, t => one.ClusterStatusAsync(t)).ConfigureAwait(false);
                return new MemberStatus(m.Id, m.Address, m.Voter, true, s.Role, s.Term, s.CommitIndex, s.AppliedIndex,
                    Guid.TryParse(s.LeaderId, out var l) ? l : null, null);
            }
            catch (SkiffException e)
            {
                return new MemberStatus(m.Id, m.Address, m.Voter, false, null, 0, 0, 0, null, e.Message);
            }
        })).ConfigureAwait(false);
        var leader = members.Where(m => m.Reachable && m.LeaderId is not null).OrderByDescending(m => m.Term)
            .Select(m => m.LeaderId).FirstOrDefault();
        return new ClusterStatus(members.OrderBy(m => m.Address, StringComparer.Ordinal).ToArray(), leader) { ClusterId = cluster };
    }

    /// <summary>Adds the node serving at <paramref name="address"/> (on this client's port) to the cluster; see
    /// <see cref="AddNodeAsync(string, CancellationToken)"/>.</summary>
    /// <exception cref="SkiffException">With <see cref="ErrorKind.ClientConnectFailed"/> when the node does not answer,
    /// <see cref="ErrorKind.InvalidArgument"/> when it is already a member or runs a cluster of its own.</exception>
    public Task<Guid> AddNodeAsync(IPAddress address, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(address);
        return AddNodeAsync(SkiffNode.Endpoint(address, _port), cancellationToken);
    }

    /// <summary>Adds the node serving at <paramref name="endpoint"/> (<c>host:port</c>, by host name or IP address, as
    /// the node advertises itself) to the cluster: asks that node for its id, then asks the cluster to add it under
    /// that id (as a learner, promoted once caught up). The node must be running and must not lead a cluster of its
    /// own: start it with <c>JoinCluster</c> (or <c>skiff serve --join</c>), which also joins by itself. Returns the
    /// node's id.</summary>
    /// <exception cref="SkiffException">With <see cref="ErrorKind.InvalidAddress"/> for an address that is not
    /// <c>host:port</c>, <see cref="ErrorKind.ClientConnectFailed"/> when the node does not answer,
    /// <see cref="ErrorKind.InvalidArgument"/> when it is already a member or runs a cluster of its own.</exception>
    public async Task<Guid> AddNodeAsync(string endpoint, CancellationToken cancellationToken = default)
    {
        MemberAddress.Validate(endpoint, "the node's address");
        using var target = new SkiffGrpcClient(new[] { endpoint }, _security);
        var theirs = await WithDeadline(cancellationToken, t => target.ClusterStatusAsync(t)).ConfigureAwait(false);
        var id = Guid.Parse(theirs.Id);
        var ours = await WithDeadline(cancellationToken, t => Grpc.ClusterStatusAsync(t)).ConfigureAwait(false);
        if (ours.Members.Any(m => m.Id == theirs.Id))
            throw new SkiffException(ErrorKind.InvalidArgument, $"node {id} at {endpoint} is already a member");
        if (theirs.Members.Any(m => m.Id == theirs.Id) && theirs.Members.All(m => ours.Members.All(o => o.Id != m.Id)))
            throw new SkiffException(ErrorKind.InvalidArgument,
                $"node {id} at {endpoint} runs a cluster of its own; start it with a join list to add it");
        await WithDeadline(cancellationToken, async t =>
        {
            await Grpc.AddServerAsync(id, endpoint, t).ConfigureAwait(false);
            return true;
        }).ConfigureAwait(false);
        return id;
    }

    /// <summary>Watches <paramref name="prefix"/> replaying committed changes from <paramref name="fromIndex"/> first
    /// (0: live changes only), as far back as the contacted member's change history reaches (its last
    /// <c>WatchHistory</c> changes, kept across restarts); older than that fails with
    /// <see cref="ErrorKind.StreamClosed"/> naming the oldest index still available.</summary>
    public Task<Subscriber> WatchAsync(string prefix, long fromIndex, CancellationToken cancellationToken = default)
    {
        KeyRules.ValidatePrefix(prefix);
        if (fromIndex < 0) throw new SkiffException(ErrorKind.InvalidArgument, $"the start index must not be negative, not {fromIndex}");
        return WithDeadline(cancellationToken, t => WatchFromAsync(prefix, fromIndex, t));
    }

    /// <summary>Gives member <paramref name="id"/> a new address (<c>host:port</c>, by host name or IP address); see
    /// <see cref="SkiffNode.UpdateMemberAsync"/>. With auth enabled it needs the root role.</summary>
    /// <exception cref="SkiffException">With <see cref="ErrorKind.InvalidAddress"/> for a malformed address or one
    /// another member has, <see cref="ErrorKind.PeerNotFound"/> for an id that is not a member.</exception>
    public Task UpdateMemberAsync(Guid id, string address, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(address);
        MemberAddress.Validate(address, "the member's new address");
        return WithDeadline(cancellationToken, async t =>
        {
            await Grpc.UpdateServerAsync(id, address, t).ConfigureAwait(false);
            return true;
        });
    }

    /// <summary>Hands leadership to <paramref name="target"/> (any other voter when null); returns the new leader.</summary>
    public Task<Guid> TransferLeadershipAsync(Guid? target, CancellationToken cancellationToken = default) =>
        WithDeadline(cancellationToken, t => Grpc.TransferLeadershipAsync(target, t));

    private IEnumerable<string> Endpoints => _endpoints ?? _addresses.Select(a => SkiffNode.Endpoint(a, _port));

    // How long one attempt of a write waits for its member before the write is sent through the next one: long
    // enough for an election, short enough that a paused or cut-off member does not use up the whole deadline.
    private TimeSpan AttemptTimeout => TimeSpan.FromMilliseconds(Math.Clamp(Timeout.TotalMilliseconds / 4, 500, 2000));

    private SkiffGrpcClient Grpc
    {
        get
        {
            if (_grpc is { } grpc) return grpc;
            var created = new SkiffGrpcClient(Endpoints, _security).UseSessions(_sessionTimeout, AttemptTimeout);
            if (_credentials is { } c) created.WithCredentials(c.User, c.Password);
            var won = Interlocked.CompareExchange(ref _grpc, created, null);
            if (won is null) return created;
            created.Dispose();
            return won;
        }
    }

    private void EnsureNotConnected()
    {
        if (_grpc is not null) throw new InvalidOperationException("set the port, TLS and credentials before the first call");
    }

    private protected override Task PutCoreAsync(string key, byte[] value, CancellationToken cancellationToken) =>
        Grpc.InsertAsync(key, value, cancellationToken);

    private protected override Task<byte[]?> GetCoreAsync(string key, ReadConsistency consistency, CancellationToken cancellationToken) =>
        Grpc.GetAsync(key, consistency, cancellationToken);

    private protected override Task DeleteCoreAsync(string key, CancellationToken cancellationToken) =>
        Grpc.RemoveAsync(key, cancellationToken);

    private protected override Task<bool> CompareAndSwapCoreAsync(string key, byte[]? expected, byte[]? next, CancellationToken cancellationToken) =>
        Grpc.CompareAndSwapAsync(key, expected, next, cancellationToken);

    private protected override Task<ListPage> ListKeysPageCoreAsync(string prefix, string? startAfter, int limit, CancellationToken cancellationToken) =>
        Grpc.ListKeysPageAsync(prefix, startAfter, limit, ReadConsistency.Linearizable, cancellationToken);

    private protected override Task<ListPage> GetPrefixesPageCoreAsync(string? startAfter, int limit, CancellationToken cancellationToken) =>
        Grpc.GetPrefixesPageAsync(startAfter, limit, cancellationToken);

    private protected override Task<Subscriber> WatchCoreAsync(string prefix, CancellationToken cancellationToken) =>
        WatchFromAsync(prefix, 0, cancellationToken);

    private async Task<Subscriber> WatchFromAsync(string prefix, long fromIndex, CancellationToken cancellationToken)
    {
        // The stream outlives the call's deadline: it gets its own token, cancelled when the subscriber is disposed.
        var stop = new CancellationTokenSource();
        IAsyncEnumerable<Change> events;
        using (cancellationToken.Register(stop.Cancel))
        {
            try
            {
                events = await Grpc.SubscribeAsync(prefix, fromIndex, stop.Token).ConfigureAwait(false);
            }
            catch
            {
                stop.Dispose();
                throw;
            }
        }
        var changes = WatchPump.CreateBuffer();
        _ = WatchPump.Run(events, changes.Writer, stop.Token);
        return new Subscriber(prefix, changes.Reader, () =>
        {
            stop.Cancel();
            stop.Dispose();
            return ValueTask.CompletedTask;
        }, Serializer);
    }

    private protected override Task RemoveNodeCoreAsync(Guid id, CancellationToken cancellationToken) =>
        Grpc.RemoveServerAsync(id, "", cancellationToken);

    /// <summary>Closes the client's session (best effort, for at most a second) and its connections.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _grpc, null) is not { } grpc) return;
        await grpc.CloseSessionAsync(TimeSpan.FromSeconds(1)).ConfigureAwait(false);
        grpc.Dispose();
    }
}
