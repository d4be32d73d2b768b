using System.Net;
using System.Text;

namespace Skiff.Bench.Cluster.Systems;

/// <summary>
/// DotNext.Net.Cluster 6.12 through the minimal node in bench/peers/dotnext: Raft over its TCP transport on port
/// 7100, the key-value API over h2c on port 7200, on each of 127.0.0.1-127.0.0.3.
/// </summary>
public sealed class DotNextSystem(string nodeDll, int lowerMs, int upperMs, int heartbeatMs, string walMemory) : ProcessSystem, IBenchSystem
{
    private const int RaftPort = 7100, HttpPort = 7200;
    private HttpClient?[] http = [];
    private DotNextKv?[] clients = [];

    public string Name => "dotnext";

    public string Describe(ClusterSpec spec) =>
        $"DotNext.Net.Cluster 6.12.0 (bench/peers/dotnext: its WAL, TCP transport, h2c put endpoint), election " +
        $"{lowerMs}-{upperMs} ms, heartbeat {heartbeatMs} ms, WAL memory {walMemory}, linearizable reads through ApplyReadBarrierAsync(Strong); " +
        "the leader msyncs its WAL before answering the client but a follower sends its AppendEntries reply " +
        "before its own msync (seen with strace here, shared-memory WAL), so an acknowledged put is on disk on " +
        "the leader only" + (walMemory == "private"
            ? "; with the private-memory WAL no fsync or msync was seen on a follower at all: durability unverified"
            : "") +
        ". A commit costs it several synchronous writes per member (two msyncs and an O_SYNC pwrite of its " +
        "checkpoint file), so its latency at low concurrency suffers most when other processes share the disk";

    public async Task StartAsync(ClusterSpec spec, CancellationToken ct)
    {
        if (!File.Exists(nodeDll))
            throw new FileNotFoundException($"the DotNext node is not built: {nodeDll}");
        var procs = Prepare(spec, "dotnext");
        var members = string.Join(',', spec.Members);
        for (int i = 0; i < spec.Members.Count; i++)
            procs.Start(i, "dotnet",
            [
                nodeDll, "--id", i.ToString(), "--members", members,
                "--raft-port", RaftPort.ToString(), "--http-port", HttpPort.ToString(),
                "--data", Path.Combine(dataDir, $"m{i}"),
                "--election-lower", lowerMs.ToString(), "--election-upper", upperMs.ToString(),
                "--heartbeat", heartbeatMs.ToString(), "--wal-memory", walMemory,
            ], new Dictionary<string, string> { ["DOTNET_gcServer"] = "0" });

        http = spec.Members.Select(ip => new HttpClient(new SocketsHttpHandler
        {
            EnableMultipleHttp2Connections = true,
            PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
            ConnectTimeout = TimeSpan.FromSeconds(2),
        })
        {
            BaseAddress = new Uri($"http://{ip}:{HttpPort}/"),
            DefaultRequestVersion = HttpVersion.Version20,
            DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Timeout = Timeout.InfiniteTimeSpan,
        }).ToArray<HttpClient?>();
        clients = http.Select(h => new DotNextKv(h!)).ToArray<DotNextKv?>();

        await Waiting.UntilAsync(async () =>
        {
            for (int i = 0; i < spec.Members.Count; i++)
            {
                if (!procs.IsAlive(i))
                    throw new InvalidOperationException($"dotnext member {i} exited:\n{procs.Tail(i)}");
                await ProbeAsync(i, ct);
            }
            return true;
        }, TimeSpan.FromSeconds(30), "DotNext members to answer", ct);
    }

    public async Task<Probe> ProbeAsync(int member, CancellationToken ct)
    {
        var h = http[member] ?? throw new InvalidOperationException("member is down");
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(200);
        using var resp = await h.SendAsync(DotNextKv.Request(HttpMethod.Get, "leader"), cts.Token);
        resp.EnsureSuccessStatusCode();
        var text = await resp.Content.ReadAsStringAsync(cts.Token);
        var parts = text.Split(' ');
        return new Probe(parts[0] == "1", long.Parse(parts[1]));
    }

    public IKvClient Client(int member) => clients[member] ?? throw new InvalidOperationException("member is down");

    protected override void CloseClients()
    {
        foreach (var h in http) h?.Dispose();
        http = [];
        clients = [];
    }

    private sealed class DotNextKv(HttpClient http) : IKvClient
    {
        // An HttpRequestMessage defaults to HTTP/1.1 whatever the client's default; the node is HTTP/2-only.
        public static HttpRequestMessage Request(HttpMethod method, string path) =>
            new(method, path) { Version = HttpVersion.Version20, VersionPolicy = HttpVersionPolicy.RequestVersionExact };

        public async Task PutAsync(byte[] key, byte[] value, CancellationToken ct)
        {
            using var req = Request(HttpMethod.Put, "kv/" + Encoding.ASCII.GetString(key));
            req.Content = new ByteArrayContent(value);
            using var resp = await http.SendAsync(req, ct);
            if (resp.StatusCode != HttpStatusCode.NoContent)
                throw new HttpRequestException($"put answered {(int)resp.StatusCode}");
        }

        public async Task<bool> GetAsync(byte[] key, bool linearizable, CancellationToken ct)
        {
            using var req = Request(HttpMethod.Get, "kv/" + Encoding.ASCII.GetString(key) + (linearizable ? "?mode=lin" : "?mode=stale"));
            using var resp = await http.SendAsync(req, ct);
            if (resp.StatusCode is not (HttpStatusCode.OK or HttpStatusCode.NotFound))
                throw new HttpRequestException($"get answered {(int)resp.StatusCode}");
            await resp.Content.ReadAsByteArrayAsync(ct);
            return resp.StatusCode == HttpStatusCode.OK;
        }

        /// <summary>
        /// POST /batch: one Raft entry per 100 keys, [count:4] then [keyLength:1][key][valueLength:4][value]. With 1,000
        /// keys (121 KB entries) and four loaders the followers never stored them and the leader lost its term.
        /// </summary>
        public async Task PutBatchAsync(IReadOnlyList<byte[]> keys, byte[] value, CancellationToken ct)
        {
            foreach (var chunk in keys.Chunk(100))
            {
                var body = new MemoryStream();
                var w = new BinaryWriter(body);
                w.Write(chunk.Length);
                foreach (var k in chunk)
                {
                    w.Write((byte)k.Length);
                    w.Write(k);
                    w.Write(value.Length);
                    w.Write(value);
                }
                w.Flush();
                using var req = Request(HttpMethod.Post, "batch");
                req.Content = new ByteArrayContent(body.ToArray());
                using var resp = await http.SendAsync(req, ct);
                if (resp.StatusCode != HttpStatusCode.NoContent)
                    throw new HttpRequestException($"batch answered {(int)resp.StatusCode}");
            }
        }
    }
}
