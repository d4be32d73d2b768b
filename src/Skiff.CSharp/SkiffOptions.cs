using System.Net;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Skiff;

/// <summary>Every setting of a node. The defaults are skiff-rs's: 127.0.0.1, port 9400, data in /tmp/skiff, no peers
/// (a new one-node cluster, or a restart of whatever cluster the data directory remembers).</summary>
public sealed class SkiffOptions
{
    /// <summary>The address the node listens on (IPv4 or IPv6).</summary>
    public IPAddress Address { get; set; } = IPAddress.Loopback;

    /// <summary>The port of the client and peer services (each member may have its own; see <see cref="AdvertiseAddress"/>).</summary>
    public int Port { get; set; } = 9400;

    /// <summary>Where the other members and clients reach this node, as <c>host:port</c> with a host name or an IP
    /// address (as etcd's <c>--initial-advertise-peer-urls</c>), e.g. <c>skiff-0.skiff.default.svc:9400</c> in
    /// Kubernetes. Null (the default): <see cref="Address"/>:<see cref="Port"/>. Needed when the node listens on a
    /// wildcard (0.0.0.0) or behind a name. The cluster's configuration records it when the node founds or joins a
    /// cluster; afterwards only <see cref="SkiffNode.UpdateMemberAsync"/> (<c>skiff member update</c>) changes the
    /// recorded address, and a node restarted with another one logs a warning. See README, "Names and ports".</summary>
    public string? AdvertiseAddress { get; set; }

    /// <summary>Members to join through on start by host name or IP address, as <c>host</c> or <c>host:port</c>
    /// (the port defaults to <see cref="Port"/>), in addition to <see cref="JoinCluster"/>.</summary>
    public IReadOnlyList<string> JoinEndpoints { get; set; } = Array.Empty<string>();

    /// <summary>The data directory, created if missing. Reusing it keeps identity, term, vote, log and data.</summary>
    public string DataDirectory { get; set; } = "/tmp/skiff";

    /// <summary>Members to join through on start. Empty: start (or restart) a cluster of this node (see
    /// <see cref="NewCluster"/>).</summary>
    public IReadOnlyList<IPAddress> JoinCluster { get; set; } = Array.Empty<IPAddress>();

    /// <summary>Whether this node may found a new cluster when its data directory holds none. Null (the default):
    /// a node given no <see cref="JoinCluster"/> members founds one, as a single node does. True: found one; for the
    /// first start of a cluster's first member only (it cannot be combined with <see cref="JoinCluster"/>). False:
    /// never; a node with an empty data directory and no members to join fails to start with
    /// <see cref="ErrorKind.ClusterInitFailed"/>. A directory that already holds a cluster restarts whatever this
    /// says. Set it to false on every member of a multi-member cluster whose configuration does not change between
    /// restarts, so that a member that lost its data directory never founds a second cluster at its old address.</summary>
    public bool? NewCluster { get; set; }

    /// <summary>The deadline of a call that is given none (default 5 s, as skiff-rs).</summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>How long joining may take before start fails with <see cref="ErrorKind.ClusterJoinFailed"/>.</summary>
    public TimeSpan JoinTimeout { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>How long the cluster keeps a client session without writes, when its client asks for no timeout of
    /// its own (default 10 minutes; 1 s to 7 days). Also the timeout of this node's own session, which carries the
    /// node's writes. See README, "Writes are exactly-once".</summary>
    public TimeSpan SessionTimeout { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>How long an auth token is valid (default 5 minutes, as etcd's simple tokens; 1 s to 1 day). Any auth
    /// change also ends every token made before it. See README, "Users and roles".</summary>
    public TimeSpan TokenTtl { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>The largest value accepted, in bytes (default 1 MiB).</summary>
    public int MaxValueBytes { get; set; } = KeyRules.DefaultMaxValueBytes;

    /// <summary>The memory budget of the state machine's data, in bytes (default 64 MiB): the in-memory part of the
    /// store that holds the keys and values; older data stays on disk and is read back on demand, so data larger than
    /// memory keeps to it. Rounded down to a power of two, and up to four pages of the store (8 MiB with the default
    /// <see cref="MaxValueBytes"/>). The process needs more besides (the hash index, about 100 bytes a key for the
    /// key index, the runtime, requests in flight).</summary>
    public long StateMachineMemoryBytes { get; set; } = Skiff.Net.Runtime.SkiffServerOptions.DefaultStateMachineMemoryBytes;

    /// <summary>The most watches the node serves at once, for the embedding application and every client together
    /// (default 1024, as etcd's default stream limits are of that order). One more is refused with
    /// <see cref="ErrorKind.Overloaded"/> (gRPC ResourceExhausted); the watches already open are unaffected, and a
    /// slot is free again as soon as its watch ends or is cancelled.</summary>
    public int MaxWatchers { get; set; } = Skiff.Net.Runtime.SkiffServerOptions.DefaultMaxWatchers;

    /// <summary>The most keys (or prefixes) one page of a listing holds, whatever a client asks for (default
    /// 10,000). Longer listings are read in pages (see <see cref="IKeyValueStore.EnumerateKeysAsync"/>).</summary>
    public int MaxListPage { get; set; } = Skiff.Net.Runtime.Paging.DefaultMaxPage;

    /// <summary>If positive, the node raises the thread pool's minimum worker threads to at least this many when it
    /// starts. Default 0: the node changes no process-wide setting. FASTER completes commits and checkpoints on pool
    /// threads, so on a small machine where other code blocks pool threads, 64 keeps checkpoints fast
    /// (<c>skiff serve</c> sets it).</summary>
    public int MinThreadPoolThreads { get; set; }

    /// <summary>TLS for the node's port and mutual TLS between members (default null: plain HTTP/2, for a trusted
    /// network). See README, "Securing a cluster".</summary>
    public TlsOptions? Tls { get; set; }

    /// <summary>Turns typed values into bytes (default: System.Text.Json).</summary>
    public ISkiffSerializer Serializer { get; set; } = JsonSkiffSerializer.Default;

    /// <summary>Where the node logs elections, membership changes and slow disk writes (default: nowhere).</summary>
    public ILoggerFactory LoggerFactory { get; set; } = NullLoggerFactory.Instance;

    /// <summary>Adjusts the runtime's settings (tick, Raft timing) before the server is built; used by
    /// <c>skiff serve --heartbeat-ms/--election-ms</c>. Not public API.</summary>
    internal Action<Skiff.Net.Runtime.SkiffServerOptions>? ConfigureServer { get; set; }

    /// <summary>Throws <see cref="SkiffException"/> if a setting is out of range; called before anything starts.</summary>
    public void Validate()
    {
        if (Address is null)
            throw new SkiffException(ErrorKind.InvalidAddress, "no address to bind to");
        if (Port is < 1 or > 65535)
            throw new SkiffException(ErrorKind.InvalidAddress, $"port {Port} is not between 1 and 65535");
        if (string.IsNullOrWhiteSpace(DataDirectory))
            throw new SkiffException(ErrorKind.DataDirectoryCreateFailed, "no data directory given");
        if (JoinCluster is null || JoinCluster.Any(a => a is null))
            throw new SkiffException(ErrorKind.InvalidAddress, "the join list holds a null address");
        if (AdvertiseAddress is not null)
            Skiff.Net.Runtime.MemberAddress.Validate(AdvertiseAddress, nameof(AdvertiseAddress));
        if (JoinEndpoints is null || JoinEndpoints.Any(e => e is null))
            throw new SkiffException(ErrorKind.InvalidAddress, "the join list holds a null address");
        foreach (var endpoint in JoinEndpoints)
            Skiff.Net.Runtime.MemberAddress.Validate(endpoint.Contains(':') ? endpoint : $"{endpoint}:{Port}", "a member to join through");
        if (NewCluster == true && JoinCluster.Count + JoinEndpoints.Count > 0)
            throw new SkiffException(ErrorKind.InvalidArgument, "a node either founds a new cluster or joins one: NewCluster and JoinCluster exclude each other");
        RequirePositive(RequestTimeout, nameof(RequestTimeout));
        RequirePositive(JoinTimeout, nameof(JoinTimeout));
        if (TokenTtl < TimeSpan.FromSeconds(1) || TokenTtl > TimeSpan.FromDays(1))
            throw new SkiffException(ErrorKind.InvalidArgument, $"{nameof(TokenTtl)} must be between 1 s and 1 day, not {TokenTtl}");
        if (SessionTimeout < TimeSpan.FromSeconds(1) || SessionTimeout > TimeSpan.FromDays(7))
            throw new SkiffException(ErrorKind.InvalidArgument, $"{nameof(SessionTimeout)} must be between 1 s and 7 days, not {SessionTimeout}");
        if (MaxValueBytes <= 0)
            throw new SkiffException(ErrorKind.InvalidArgument, $"{nameof(MaxValueBytes)} must be positive, not {MaxValueBytes}");
        if (StateMachineMemoryBytes <= 0)
            throw new SkiffException(ErrorKind.InvalidArgument, $"{nameof(StateMachineMemoryBytes)} must be positive, not {StateMachineMemoryBytes}");
        if (MaxWatchers <= 0)
            throw new SkiffException(ErrorKind.InvalidArgument, $"{nameof(MaxWatchers)} must be positive, not {MaxWatchers}");
        if (MaxListPage <= 0)
            throw new SkiffException(ErrorKind.InvalidArgument, $"{nameof(MaxListPage)} must be positive, not {MaxListPage}");
        if (MinThreadPoolThreads < 0)
            throw new SkiffException(ErrorKind.InvalidArgument, $"{nameof(MinThreadPoolThreads)} must not be negative, not {MinThreadPoolThreads}");
        Tls?.Validate();
        if (Serializer is null)
            throw new SkiffException(ErrorKind.InvalidArgument, "no serializer given");
    }

    internal static void RequirePositive(TimeSpan value, string name)
    {
        if (value <= TimeSpan.Zero)
            throw new SkiffException(ErrorKind.InvalidArgument, $"{name} must be positive, not {value}");
    }
}
