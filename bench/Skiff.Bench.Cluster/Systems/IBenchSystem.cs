using System.Net;

namespace Skiff.Bench.Cluster.Systems;

/// <summary>Where and how a system's three members run. Member i listens on Members[i] (127.0.0.1-127.0.0.3).</summary>
public sealed record ClusterSpec(string WorkDir, IReadOnlyList<IPAddress> Members, int HeartbeatMs, int ElectionMs);

/// <summary>What a member says about itself when probed.</summary>
public readonly record struct Probe(bool IsLeader, long Term);

/// <summary>
/// A system under test: etcd, DotNext, and Skiff once its node runtime and `skiff serve` exist.
/// The harness calls, in order: StartAsync, then ProbeAsync on each member until one is leader, then Client(leader)
/// for the load, Kill(leader) in the failover point, and StopAsync at the end (also after a failure).
/// </summary>
public interface IBenchSystem
{
    /// <summary>The first word of every output line: "etcd", "dotnext", "skiff".</summary>
    string Name { get; }

    /// <summary>One line for the report: version, timeouts, transport, and how durable an acknowledged write is.</summary>
    string Describe(ClusterSpec spec);

    /// <summary>Starts three fresh members (data under spec.WorkDir) and returns once each answers a probe.</summary>
    Task StartAsync(ClusterSpec spec, CancellationToken ct);

    /// <summary>Asks one member whether it is the leader, and its term. Throws if it does not answer.</summary>
    Task<Probe> ProbeAsync(int member, CancellationToken ct);

    /// <summary>
    /// A client bound to one member. Thread-safe: the load generator makes many concurrent calls on one client
    /// (one connection pool per member, as a real application would).
    /// </summary>
    IKvClient Client(int member);

    /// <summary>SIGKILL one member (no graceful shutdown).</summary>
    void Kill(int member);

    /// <summary>Starts a killed member again on its existing data; returns once the process is started.</summary>
    Task RestartAsync(int member, CancellationToken ct);

    /// <summary>Resident memory (VmRSS) of one live member in bytes, or null if it is not running.</summary>
    long? ResidentBytes(int member);

    /// <summary>The OS process ids of the live members, to account their CPU.</summary>
    IReadOnlyList<int> MemberPids { get; }

    /// <summary>The data directory of one member (for the disk benchmark).</summary>
    string MemberDataDir(int member);

    /// <summary>The periodic maintenance the system's operators are told to run (etcd: defragment every member);
    /// called about once a minute during the disk benchmark. Nothing for systems that maintain themselves.</summary>
    Task MaintainAsync(CancellationToken ct);

    /// <summary>Kills whatever is left and deletes the data. Idempotent.</summary>
    Task StopAsync();
}

/// <summary>The key-value operations the load generator needs. A call that returns has succeeded.</summary>
public interface IKvClient
{
    /// <summary>A write that returns once committed (and as durable as the system makes it).</summary>
    Task PutAsync(byte[] key, byte[] value, CancellationToken ct);

    /// <summary>
    /// A read: linearizable (through the leader's read protocol) or stale (the member's local state).
    /// Returns whether the key was found.
    /// </summary>
    Task<bool> GetAsync(byte[] key, bool linearizable, CancellationToken ct);

    /// <summary>
    /// Writes many keys with one value, in as few requests as the system allows; only used to load data for the
    /// recovery point, never measured as throughput. The default writes them one by one.
    /// </summary>
    async Task PutBatchAsync(IReadOnlyList<byte[]> keys, byte[] value, CancellationToken ct)
    {
        foreach (var k in keys) await PutAsync(k, value, ct);
    }
}
