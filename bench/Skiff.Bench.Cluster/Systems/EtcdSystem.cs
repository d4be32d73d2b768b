using System.Diagnostics;
using dotnet_etcd;
using Etcdserverpb;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using Grpc.Net.Client.Configuration;

namespace Skiff.Bench.Cluster.Systems;

/// <summary>
/// etcd 3.4 from Debian (bench/install-peers.sh): three members, client port 2379 and peer port 2380 on each
/// of 127.0.0.1-127.0.0.3, driven with dotnet-etcd over one plain-text gRPC channel per member.
/// </summary>
public sealed class EtcdSystem : ProcessSystem, IBenchSystem
{
    private const int ClientPort = 2379, PeerPort = 2380;
    private GrpcChannel?[] channels = [];
    private EtcdKv?[] clients = [];

    public string Name => "etcd";

    public string Describe(ClusterSpec spec) =>
        $"etcd {Version()} (Debian), heartbeat {spec.HeartbeatMs} ms, election {spec.ElectionMs} ms; " +
        "each member fsyncs its WAL before acknowledging, so an acknowledged put is on disk on a majority";

    private static string Version()
    {
        try
        {
            var psi = new ProcessStartInfo("etcd", "--version") { RedirectStandardOutput = true };
            using var p = Process.Start(psi)!;
            var first = p.StandardOutput.ReadLine() ?? "";
            p.WaitForExit();
            return first.Replace("etcd Version:", "").Trim();
        }
        catch (Exception) { return "?"; }
    }

    public async Task StartAsync(ClusterSpec spec, CancellationToken ct)
    {
        var procs = Prepare(spec, "etcd");
        var token = "skiff-bench-" + Guid.NewGuid().ToString("N")[..8];
        var initial = string.Join(',', spec.Members.Select((ip, i) => $"m{i}=http://{ip}:{PeerPort}"));
        for (int i = 0; i < spec.Members.Count; i++)
        {
            var ip = spec.Members[i];
            procs.Start(i, "etcd",
            [
                "--name", $"m{i}", "--data-dir", Path.Combine(dataDir, $"m{i}"),
                "--listen-client-urls", $"http://{ip}:{ClientPort}", "--advertise-client-urls", $"http://{ip}:{ClientPort}",
                "--listen-peer-urls", $"http://{ip}:{PeerPort}", "--initial-advertise-peer-urls", $"http://{ip}:{PeerPort}",
                "--initial-cluster", initial, "--initial-cluster-state", "new", "--initial-cluster-token", token,
                "--heartbeat-interval", spec.HeartbeatMs.ToString(), "--election-timeout", spec.ElectionMs.ToString(),
                "--logger", "zap", "--log-level", "warn",
            ]);
        }

        channels = spec.Members.Select(ip => GrpcChannel.ForAddress($"http://{ip}:{ClientPort}", new GrpcChannelOptions
        {
            Credentials = ChannelCredentials.Insecure,
            // dotnet-etcd's own constructor spreads calls over every endpoint and retries Unavailable five times
            // with a 1 s backoff, which would hide failover. One channel per member, pick-first, no retry policy.
            ServiceConfig = new ServiceConfig { LoadBalancingConfigs = { new PickFirstConfig() } },
            // More than 100 concurrent calls need more than one HTTP/2 connection.
            HttpHandler = new SocketsHttpHandler
            {
                EnableMultipleHttp2Connections = true,
                PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
                ConnectTimeout = TimeSpan.FromSeconds(2),
            },
        })).ToArray<GrpcChannel?>();
        clients = channels.Select(c => new EtcdKv(new EtcdClient(c!.CreateCallInvoker()))).ToArray<EtcdKv?>();

        await Waiting.UntilAsync(async () =>
        {
            for (int i = 0; i < spec.Members.Count; i++)
            {
                if (!procs.IsAlive(i))
                    throw new InvalidOperationException($"etcd member {i} exited:\n{procs.Tail(i)}");
                await ProbeAsync(i, ct);
            }
            return true;
        }, TimeSpan.FromSeconds(20), "etcd members to answer", ct);
    }

    public async Task<Probe> ProbeAsync(int member, CancellationToken ct)
    {
        var c = clients[member] ?? throw new InvalidOperationException("member is down");
        var s = await c.Etcd.StatusAsync(new StatusRequest(), deadline: DateTime.UtcNow.AddMilliseconds(200), cancellationToken: ct);
        return new Probe(s.Leader != 0 && s.Leader == s.Header.MemberId, (long)s.RaftTerm);
    }

    public IKvClient Client(int member) => clients[member] ?? throw new InvalidOperationException("member is down");

    protected override void CloseClients()
    {
        foreach (var c in channels) c?.Dispose();
        channels = [];
        clients = [];
    }

    private sealed class EtcdKv(EtcdClient etcd) : IKvClient
    {
        public EtcdClient Etcd => etcd;

        public async Task PutAsync(byte[] key, byte[] value, CancellationToken ct) =>
            await etcd.PutAsync(new PutRequest { Key = ByteString.CopyFrom(key), Value = ByteString.CopyFrom(value) },
                cancellationToken: ct);

        public async Task<bool> GetAsync(byte[] key, bool linearizable, CancellationToken ct) =>
            (await etcd.GetAsync(new RangeRequest { Key = ByteString.CopyFrom(key), Serializable = !linearizable },
                cancellationToken: ct)).Count > 0;

        /// <summary>One transaction per 128 keys: etcd's default --max-txn-ops.</summary>
        public async Task PutBatchAsync(IReadOnlyList<byte[]> keys, byte[] value, CancellationToken ct)
        {
            var v = ByteString.CopyFrom(value);
            foreach (var chunk in keys.Chunk(128))
            {
                var txn = new TxnRequest();
                foreach (var k in chunk)
                    txn.Success.Add(new RequestOp { RequestPut = new PutRequest { Key = ByteString.CopyFrom(k), Value = v } });
                await etcd.TransactionAsync(txn, cancellationToken: ct);
            }
        }
    }
}
