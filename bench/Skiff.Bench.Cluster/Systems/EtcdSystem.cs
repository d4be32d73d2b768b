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
/// of 127.0.0.1-127.0.0.3, driven with dotnet-etcd over one plain-text gRPC channel per member. As "etcd-tls", with
/// TLS on the client port and mutual TLS between members (--peer-client-cert-auth), as Skiff's TLS row has.
/// </summary>
public sealed class EtcdSystem(bool tls = false) : ProcessSystem, IBenchSystem
{
    private const int ClientPort = 2379, PeerPort = 2380;
    private GrpcChannel?[] channels = [];
    private EtcdKv?[] clients = [];

    public string Name => tls ? "etcd-tls" : "etcd";

    public string Describe(ClusterSpec spec) =>
        $"etcd {Version()} (Debian){(tls ? ", TLS on the client port and mutual TLS between members" : "")}, " +
        $"heartbeat {spec.HeartbeatMs} ms, election {spec.ElectionMs} ms; " +
        "periodic auto-compaction keeping one minute of history; " +
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
        var procs = Prepare(spec, Name);
        var certs = tls ? new BenchCertificates(Path.Combine(dataDir, "certs"), spec.Members) : null;
        var scheme = certs is null ? "http" : "https";
        var token = "skiff-bench-" + Guid.NewGuid().ToString("N")[..8];
        var initial = string.Join(',', spec.Members.Select((ip, i) => $"m{i}={scheme}://{ip}:{PeerPort}"));
        for (int i = 0; i < spec.Members.Count; i++)
        {
            var ip = spec.Members[i];
            procs.Start(i, "etcd",
            [
                "--name", $"m{i}", "--data-dir", Path.Combine(dataDir, $"m{i}"),
                "--listen-client-urls", $"{scheme}://{ip}:{ClientPort}", "--advertise-client-urls", $"{scheme}://{ip}:{ClientPort}",
                "--listen-peer-urls", $"{scheme}://{ip}:{PeerPort}", "--initial-advertise-peer-urls", $"{scheme}://{ip}:{PeerPort}",
                "--initial-cluster", initial, "--initial-cluster-state", "new", "--initial-cluster-token", token,
                "--heartbeat-interval", spec.HeartbeatMs.ToString(), "--election-timeout", spec.ElectionMs.ToString(),
                "--logger", "zap", "--log-level", "warn",
                // As etcd's maintenance guide advises: keep one minute of history (MaintainAsync defragments).
                "--auto-compaction-mode", "periodic", "--auto-compaction-retention", "1m",
                .. certs is null ? [] : new[]
                {
                    // No --trusted-ca-file for the client port: etcd 3.4 then demands client certificates, which
                    // Skiff's TLS row does not.
                    "--cert-file", certs.CertFile(i), "--key-file", certs.KeyFile(i),
                    "--peer-cert-file", certs.CertFile(i), "--peer-key-file", certs.KeyFile(i),
                    "--peer-trusted-ca-file", certs.CaFile, "--peer-client-cert-auth",
                },
            ]);
        }

        channels = spec.Members.Select(ip => GrpcChannel.ForAddress($"{scheme}://{ip}:{ClientPort}", new GrpcChannelOptions
        {
            Credentials = certs is null ? ChannelCredentials.Insecure : ChannelCredentials.SecureSsl,
            // dotnet-etcd's own constructor spreads calls over every endpoint and retries Unavailable five times
            // with a 1 s backoff, which would hide failover. One channel per member, pick-first, no retry policy.
            ServiceConfig = new ServiceConfig { LoadBalancingConfigs = { new PickFirstConfig() } },
            // More than 100 concurrent calls need more than one HTTP/2 connection.
            HttpHandler = new SocketsHttpHandler
            {
                EnableMultipleHttp2Connections = true,
                PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
                ConnectTimeout = TimeSpan.FromSeconds(2),
                SslOptions = new System.Net.Security.SslClientAuthenticationOptions { RemoteCertificateValidationCallback = certs?.Validate },
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
        }, TimeSpan.FromSeconds(45), "etcd members to answer", ct);
    }

    public async Task<Probe> ProbeAsync(int member, CancellationToken ct)
    {
        var c = clients[member] ?? throw new InvalidOperationException("member is down");
        var s = await c.Etcd.StatusAsync(new StatusRequest(), deadline: DateTime.UtcNow.AddMilliseconds(200), cancellationToken: ct);
        return new Probe(s.Leader != 0 && s.Leader == s.Header.MemberId, (long)s.RaftTerm);
    }

    public IKvClient Client(int member) => clients[member] ?? throw new InvalidOperationException("member is down");

    /// <summary>Defragments every member, one at a time (etcd's maintenance guide: compaction frees pages inside
    /// the database file, only a defragmentation gives them back to the file system).</summary>
    public override async Task MaintainAsync(CancellationToken ct)
    {
        foreach (var c in clients)
        {
            if (c is null) continue;
            try { await c.Etcd.DefragmentAsync(new DefragmentRequest(), cancellationToken: ct); }
            catch (RpcException) { } // a member that is down or busy is defragmented next time
        }
    }

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
