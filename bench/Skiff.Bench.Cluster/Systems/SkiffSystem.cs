using System.Text;
using Skiff.Net.Runtime;

namespace Skiff.Bench.Cluster.Systems;

/// <summary>
/// Skiff: three member processes on 127.0.0.1-127.0.0.3, the first founding the cluster and the other two joining
/// through it. Two kinds of member: `skiff serve` (the Release build of src/Skiff.Cli under `dotnet`, so the pid held
/// is the node), with the same heartbeat and election timeouts as etcd (--heartbeat-ms / --election-ms); or, as
/// "skiff-embedded", a plain console application embedding its node through Builder with every default (timing,
/// thread pool, GC: bench/Skiff.Bench.EmbeddedMember), which is how the library is used. Driven through the public
/// <see cref="Skiff.Client"/>, one per member (one gRPC channel each, many concurrent calls multiplexed over HTTP/2),
/// so every put is an exactly-once write in the client's session, as an application's would be; probed with
/// SkiffGrpcClient's status call. As "skiff-tls", `skiff serve` members with TLS on the client port and mutual TLS
/// between members (certificates from <see cref="BenchCertificates"/>), clients verifying the members against the CA.
/// </summary>
public sealed class SkiffSystem(string memberDll, bool embedded = false, bool tls = false) : ProcessSystem, IBenchSystem
{
    private const int Port = 9471;
    private SkiffGrpcClient?[] clients = [];
    private Skiff.Client?[] stores = [];
    private BenchCertificates? certs;

    public string Name => embedded ? "skiff-embedded" : tls ? "skiff-tls" : "skiff";

    public string Describe(ClusterSpec spec) =>
        $"Skiff {typeof(SkiffGrpcClient).Assembly.GetName().Version} " +
        (embedded
            ? "(embedded through Builder in a console application with every default: heartbeat 50 ms, election 150-300 ms, " +
              "no thread pool or GC settings; FASTER storage, gRPC over h2c)"
            : $"(`skiff serve`, FASTER storage, gRPC over {(tls ? "TLS 1.3, mutual TLS between members" : "h2c")}), heartbeat {spec.HeartbeatMs} ms, election {spec.ElectionMs}-{2 * spec.ElectionMs} ms") +
        "; linearizable reads by ReadIndex on the leader; a put is acknowledged once it is fsynced on a majority";

    private string[] Args(ClusterSpec spec, int i) => embedded
        ? [memberDll, Path.Combine(dataDir, $"m{i}"), spec.Members[i].ToString(), Port.ToString(),
            .. i == 0 ? new[] { "--new-cluster", "-" } : ["--join", spec.Members[0].ToString()], Environment.ProcessId.ToString()]
        : ServeArgs(spec, i);

    private string[] ServeArgs(ClusterSpec spec, int i) =>
    [
        memberDll, "serve", "--dir", Path.Combine(dataDir, $"m{i}"), "--bind", spec.Members[i].ToString(),
        "--port", Port.ToString(), "--heartbeat-ms", spec.HeartbeatMs.ToString(), "--election-ms", spec.ElectionMs.ToString(),
        // Members end with the harness however it ends (SIGTERM or SIGKILL), so no run leaves a cluster behind.
        "--parent-pid", Environment.ProcessId.ToString(),
        .. i == 0 ? new[] { "--new-cluster" } : ["--join", spec.Members[0].ToString()],
        .. certs is null ? [] : new[] { "--cert-file", certs.CertFile(i), "--key-file", certs.KeyFile(i), "--trusted-ca-file", certs.CaFile },
    ];

    public async Task StartAsync(ClusterSpec spec, CancellationToken ct)
    {
        if (!File.Exists(memberDll))
            throw new FileNotFoundException($"the Skiff member is not built: {memberDll}");
        var procs = Prepare(spec, Name);
        certs = tls ? new BenchCertificates(Path.Combine(dataDir, "certs"), spec.Members) : null;
        var clientTls = certs is null ? null : new Skiff.ClientTlsOptions { CaFile = certs.CaFile };
        clients = spec.Members.Select(ip => new SkiffGrpcClient([$"{ip}:{Port}"],
            clientTls is null ? null : Skiff.Net.Runtime.Tls.ChannelSecurity.ForClient(clientTls))).ToArray<SkiffGrpcClient?>();
        stores = spec.Members.Select(ip =>
        {
            var store = new Skiff.Client([ip]).WithPort(Port);
            return clientTls is null ? store : store.WithTls(clientTls);
        }).ToArray<Skiff.Client?>();
        // An embedded member runs with the defaults of the application around it: nothing set for it here.
        var env = embedded ? new Dictionary<string, string>() : new Dictionary<string, string> { ["DOTNET_gcServer"] = "0" };

        // The first member starts a cluster of itself; once it leads, the others join through it (one at a time,
        // as membership changes are).
        procs.Start(0, "dotnet", Args(spec, 0), env);
        await Waiting.UntilAsync(async () => Alive(0) && (await ProbeAsync(0, ct)).IsLeader,
            TimeSpan.FromSeconds(30), "the first skiff member to lead", ct);
        for (int i = 1; i < spec.Members.Count; i++)
        {
            procs.Start(i, "dotnet", Args(spec, i), env);
            var n = i + 1;
            await Waiting.UntilAsync(async () =>
            {
                Alive(i);
                using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
                cts.CancelAfter(500);
                var s = await clients[i]!.ClusterStatusAsync(cts.Token);
                return s.Members.Count(m => m.Voter) >= n && s.LeaderId.Length > 0;
            }, TimeSpan.FromSeconds(45), $"skiff member {i} to join", ct);
        }
        await Waiting.UntilAsync(async () =>
        {
            var leaders = 0;
            for (int i = 0; i < spec.Members.Count; i++)
            {
                Alive(i);
                if ((await ProbeAsync(i, ct)).IsLeader) leaders++;
            }
            return leaders == 1;
        }, TimeSpan.FromSeconds(30), "skiff members to answer with one leader", ct);
    }

    private bool Alive(int i) => procs!.IsAlive(i) ? true : throw new InvalidOperationException($"skiff member {i} exited:\n{procs.Tail(i)}");

    public async Task<Probe> ProbeAsync(int member, CancellationToken ct)
    {
        var c = clients[member] ?? throw new InvalidOperationException("member is down");
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(200);
        var s = await c.ClusterStatusAsync(cts.Token);
        return new Probe(s.LeaderId.Length > 0 && s.LeaderId == s.Id, s.Term);
    }

    public IKvClient Client(int member) =>
        new SkiffKv(stores[member] ?? throw new InvalidOperationException("member is down"));

    protected override void CloseClients()
    {
        foreach (var c in clients) c?.Dispose();
        foreach (var s in stores) s?.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(2));
        clients = [];
        stores = [];
    }

    /// <summary>Keys are 16 ASCII characters (Keys.Make), so Skiff's string keys carry them as they are.</summary>
    private sealed class SkiffKv(Skiff.Client c) : IKvClient
    {
        public Task PutAsync(byte[] key, byte[] value, CancellationToken ct) => c.InsertBytesAsync(Encoding.ASCII.GetString(key), value, ct);

        public async Task<bool> GetAsync(byte[] key, bool linearizable, CancellationToken ct) =>
            await c.GetBytesAsync(Encoding.ASCII.GetString(key), linearizable ? Skiff.ReadConsistency.Linearizable : Skiff.ReadConsistency.Stale, ct) != null;

        /// <summary>Skiff has no multi-key write: the recovery point's keys go as single puts, 32 in flight per
        /// batch (the harness runs four batches at once), which the leader group-commits. One by one, 5,000 keys
        /// took 13.7 s here; 1,000,000 would have taken most of an hour.</summary>
        public Task PutBatchAsync(IReadOnlyList<byte[]> keys, byte[] value, CancellationToken ct) =>
            Parallel.ForEachAsync(keys, new ParallelOptions { MaxDegreeOfParallelism = 32, CancellationToken = ct },
                async (k, t) => await PutAsync(k, value, t));
    }
}
