using System.Net;

namespace Skiff.Net.Runtime;

/// <summary>Settings of one Skiff node.</summary>
internal sealed class SkiffServerOptions
{
    /// <summary>The IP address the node listens on (default 127.0.0.1).</summary>
    public IPAddress Bind { get; set; } = IPAddress.Loopback;

    /// <summary>The port of both the client and the peer services (default 9400).</summary>
    public int Port { get; set; } = 9400;

    /// <summary>The address the other members and clients reach this node at, as <c>host:port</c> with a host name or
    /// an IP address (as etcd's <c>--initial-advertise-peer-urls</c>): what the configuration records when this node
    /// founds or joins a cluster. Null (the default): <see cref="Bind"/>:<see cref="Port"/>. Set it when the node
    /// listens on one address and is reached at another: a wildcard bind (0.0.0.0) or a container behind a service
    /// name. It is read when the node enters a configuration; a member already in one keeps its recorded address
    /// until <c>skiff member update</c> changes it (see README, "Names and ports").</summary>
    public string? AdvertiseAddress { get; set; }

    /// <summary>The data directory (created if missing; holds identity, term, vote, log, snapshots).</summary>
    public string DataDirectory { get; set; } = "/tmp/skiff";

    /// <summary>Members to contact on start to join their cluster ("host" or "host:port", by host name or IP address;
    /// the port defaults to <see cref="Port"/>). Empty: this node starts (or restarts) its own cluster.</summary>
    public IReadOnlyList<string> JoinPeers { get; set; } = Array.Empty<string>();

    /// <summary>Whether this node may found a new cluster when its data directory holds none. Null (the default): a
    /// node given no <see cref="JoinPeers"/> founds one, as a single node does. True: found one (only this node's
    /// first start; cannot be combined with <see cref="JoinPeers"/>). False: never; a node with an empty directory
    /// and no peers fails to start with ClusterInitFailed (<c>skiff serve</c> without <c>--new-cluster</c>), so that
    /// a member that lost its directory and is restarted with its usual command line never founds a second
    /// cluster at its old address. A directory that already holds a cluster restarts whatever this says.</summary>
    public bool? NewCluster { get; set; }

    /// <summary>Whether opening the data directory also starts, once per process, the compilation of the snapshot
    /// path on a scratch store (<see cref="Storage.SnapshotWarmUp"/>; default true), so the first snapshot does not
    /// stop applying while the JIT compiles it. Off only to measure what it saves.</summary>
    public bool WarmUpSnapshots { get; set; } = true;

    /// <summary>Length of one reducer tick (default 10 ms).</summary>
    public TimeSpan TickInterval { get; set; } = TimeSpan.FromMilliseconds(10);

    /// <summary>How long joining may take before StartAsync fails with ClusterJoinFailed.</summary>
    public TimeSpan JoinTimeout { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>When set, a joining node never gives up on a slow join: StartAsync keeps asking to be added and then
    /// waits, a learner catching up, until the leader promotes it, for as long as the node runs (until its token is
    /// cancelled or it is shut down), logging its progress every 5 s; <see cref="JoinTimeout"/> is not applied. It
    /// still fails at once on a definitive refusal (this id is a member at another address). What a process that
    /// is only a cluster member wants (<c>skiff serve</c> sets it): exiting would leave a learner in the
    /// configuration that nobody runs, and a service manager restarting it would only start the same wait again.</summary>
    public bool KeepJoining { get; set; }

    /// <summary>Deadline of a client call that has none of its own.</summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>How long a client session lives without writes when its client asks for no particular timeout
    /// (default 10 minutes; 1 s to 7 days). Also the timeout of this node's own session, which carries its own
    /// writes and the session-less writes it forwards.</summary>
    public TimeSpan SessionTimeout { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>Messages queued per peer before the oldest are dropped.</summary>
    public int PeerQueueCapacity { get; set; } = 4096;

    /// <summary>Changes buffered per watcher before it is dropped as too slow.</summary>
    public int WatchBufferCapacity { get; set; } = 10000;

    /// <summary>The default of <see cref="MaxWatchers"/>.</summary>
    public const int DefaultMaxWatchers = 1024;

    /// <summary>The most watches this node serves at once (default 1024); one more is refused with
    /// <see cref="Skiff.ErrorKind.Overloaded"/> (gRPC ResourceExhausted), and the slot of a watch is free again as
    /// soon as it ends (cancelled, dropped as too slow, or its client gone).</summary>
    public int MaxWatchers { get; set; } = DefaultMaxWatchers;

    /// <summary>Recent changes kept for watchers that resume from an index: in memory (no more than 16 MiB of keys and
    /// values of them), and (with FASTER storage) in the state machine's durable change history, which snapshots
    /// carry and restarts keep. 0 keeps none.</summary>
    public int WatchHistory { get; set; } = 100000;

    /// <summary>Raise the thread pool's minimum worker threads to at least this many when the node starts (default
    /// 0: leave it alone, since it is a process-wide setting that belongs to the application). FASTER completes
    /// commits and checkpoints on pool threads; with the default minimum (one per core) a few blocked pool threads
    /// anywhere in the process made a checkpoint take 2 s instead of 0.2 s while applying waited, so an application
    /// that does not manage the pool itself may ask for 64 (<c>skiff serve</c> does).</summary>
    public int MinThreadPoolThreads { get; set; }

    /// <summary>The largest value a put or compare-and-swap may carry, in bytes (default 1 MiB). Checked by the
    /// node for every entry point before anything is proposed (<see cref="Skiff.ErrorKind.ValueTooLarge"/>); it must
    /// leave a compare-and-swap of two such values within one log entry of the storage engine.</summary>
    public int MaxValueBytes { get; set; } = RequestLimits.DefaultMaxValueBytes;

    /// <summary>The memory budget of the state machine's data, in bytes (default 64 MiB): the in-memory part of
    /// its FASTER hybrid log, which holds the keys and values; older data is on disk and read back on demand, so a
    /// store larger than memory keeps to it. Rounded down to a power of two and up to four pages of the store (8
    /// MiB with the default <see cref="MaxValueBytes"/>). The process needs more besides: the hash index (4 MiB,
    /// more beyond about 450,000 keys), the ordered key index (about 100 bytes a key), the runtime, and requests in
    /// flight.</summary>
    public long StateMachineMemoryBytes { get; set; } = DefaultStateMachineMemoryBytes;

    /// <summary>The default of <see cref="StateMachineMemoryBytes"/>, 64 MiB.</summary>
    public const long DefaultStateMachineMemoryBytes = 64L << 20;

    /// <summary>The most keys (or prefixes) one listing page holds, whatever a client asks for (default 10,000):
    /// a larger listing is read in pages, so no request makes the node build, hold the state machine's lock for, or
    /// send, its whole key set.</summary>
    public int MaxListPage { get; set; } = Paging.DefaultMaxPage;

    /// <summary>Where the node logs (a fail-stop at Critical, dropped peer messages, failed reads); default nowhere.
    /// The node never writes to the console itself.</summary>
    public Microsoft.Extensions.Logging.ILoggerFactory LoggerFactory { get; set; } =
        Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance;

    /// <summary>Test hook, never for production: the state machine applies a resent session write again (see
    /// KvOptions.UnsafeNoSessionDedup).</summary>
    internal bool UnsafeNoSessionDedup { get; set; }

    /// <summary>How long an auth token from <c>Authenticate</c> is valid (default 5 minutes, as etcd's simple
    /// tokens). Any auth change also ends every token made before it.</summary>
    public TimeSpan TokenTtl { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>TLS for the node's port and mutual TLS between members; null (the default) serves plain HTTP/2.</summary>
    public TlsOptions? Tls { get; set; }

    /// <summary>Reducer tunables; null uses the reducer's defaults (tuned for a 10 ms tick).</summary>
    public Skiff.Core.Options? Raft { get; set; }
}
