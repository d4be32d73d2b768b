// A minimal durable key-value node on DotNext.Net.Cluster 6.12: its write-ahead log (WriteAheadLog) with a
// SimpleStateMachine snapshot, its TCP Raft transport, and an HTTP/2 (h2c) endpoint:
//   PUT /kv/{key}            body = value; returns 204 once ReplicateAsync has committed the entry
//   GET /kv/{key}?mode=lin   read barrier (ReadBarrierType.Strong) then local read; mode=stale reads locally
//   GET /leader              "1 <term>" if this node is the leader, else "0 <term>"
//   POST /batch              many keys in one entry, for loading data only (the harness's recovery point)
// Not-leader answers 421. Durability (6.12): the leader flushes before it acknowledges, but a follower acknowledges
// an entry before its own flush, so an acknowledged put is on disk on the leader only.
//
// Usage: DotNextNode --id N --members 127.0.0.1,127.0.0.2,127.0.0.3 --raft-port 7100 --http-port 7200
//        --data DIR [--election-lower 150 --election-upper 300 --heartbeat 75 --snapshot-every 100000]
//        [--wal-memory shared|private]
using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net;
using System.Text;
using DotNext.Buffers;
using DotNext.IO;
using DotNext.Net.Cluster.Consensus.Raft;
using DotNext.Net.Cluster.Consensus.Raft.Membership;
using DotNext.Net.Cluster.Consensus.Raft.StateMachine;
using Microsoft.AspNetCore.Server.Kestrel.Core;

var opts = Args.Parse(args);
var members = opts["members"].Split(',').Select(IPAddress.Parse).ToArray();
int id = int.Parse(opts["id"]);
int raftPort = int.Parse(opts.GetValueOrDefault("raft-port", "7100"));
int httpPort = int.Parse(opts.GetValueOrDefault("http-port", "7200"));
int lower = int.Parse(opts.GetValueOrDefault("election-lower", "150"));
int upper = int.Parse(opts.GetValueOrDefault("election-upper", "300"));
int heartbeat = int.Parse(opts.GetValueOrDefault("heartbeat", "75"));
long snapshotEvery = long.Parse(opts.GetValueOrDefault("snapshot-every", "100000"));
var dataDir = Directory.CreateDirectory(opts["data"]);
var self = members[id];

// Gotcha (6.12): the state machine must be restored before the WAL is constructed (the WAL reads the restored
// snapshot's index in its constructor).
var state = new KvStateMachine(dataDir.CreateSubdirectory("snapshots"), snapshotEvery);
await state.RestoreAsync(CancellationToken.None);
// --wal-memory: SharedMemory (the default: entries written into the memory-mapped chunk) or PrivateMemory
// (entries buffered privately and written out on flush; the docs call it the fastest for writes).
var walMemory = opts.GetValueOrDefault("wal-memory", "shared") == "private"
    ? WriteAheadLog.MemoryManagementStrategy.PrivateMemory
    : WriteAheadLog.MemoryManagementStrategy.SharedMemory;
var wal = new WriteAheadLog(new WriteAheadLog.Options
{
    Location = Path.Combine(dataDir.FullName, "wal"),
    MemoryManagement = walMemory,
}, state);

var storage = new MemberList();
var builder = storage.CreateInitialConfigurationBuilder();
foreach (var m in members)
    builder.Add(new IPEndPoint(m, raftPort));
builder.Build();

var config = new RaftCluster.TcpConfiguration(new IPEndPoint(self, raftPort))
{
    ConfigurationStorage = storage,
    LowerElectionTimeout = lower,
    UpperElectionTimeout = upper,
    HeartbeatThreshold = Math.Clamp((double)heartbeat / lower, 0.01, 0.99),
    ColdStart = true,
};
await using var cluster = new RaftCluster(config) { AuditTrail = wal };

var web = WebApplication.CreateSlimBuilder(args);
web.Logging.SetMinimumLevel(LogLevel.Warning);
web.WebHost.ConfigureKestrel(k => k.Listen(self, httpPort, l => l.Protocols = HttpProtocols.Http2));
var app = web.Build();

app.MapPut("/kv/{key}", async (string key, HttpRequest req, CancellationToken ct) =>
{
    if (cluster.LeadershipToken.IsCancellationRequested)
        return Results.StatusCode(StatusCodes.Status421MisdirectedRequest);
    var keyBytes = Encoding.ASCII.GetBytes(key);
    var body = await req.BodyReader.ReadAllAsync(ct);
    var payload = new byte[1 + keyBytes.Length + body.Length];
    payload[0] = checked((byte)keyBytes.Length);
    keyBytes.CopyTo(payload, 1);
    body.CopyTo(payload.AsSpan(1 + keyBytes.Length));
    try
    {
        using var both = CancellationTokenSource.CreateLinkedTokenSource(ct, cluster.LeadershipToken);
        await cluster.ReplicateAsync(payload, context: null, both.Token);
        return Results.NoContent();
    }
    catch (Exception e) when (e is OperationCanceledException or InvalidOperationException)
    {
        return Results.StatusCode(StatusCodes.Status503ServiceUnavailable);
    }
});

// Loading only (the harness's recovery point): many keys in one Raft entry, [0xFF] + the request body, which is
// [count:4] then [keyLength:1][key][valueLength:4][value] per key, little-endian.
app.MapPost("/batch", async (HttpRequest req, CancellationToken ct) =>
{
    if (cluster.LeadershipToken.IsCancellationRequested)
        return Results.StatusCode(StatusCodes.Status421MisdirectedRequest);
    var body = await req.BodyReader.ReadAllAsync(ct);
    var payload = new byte[1 + body.Length];
    payload[0] = KvStateMachine.BatchMarker;
    body.CopyTo(payload, 1);
    try
    {
        using var both = CancellationTokenSource.CreateLinkedTokenSource(ct, cluster.LeadershipToken);
        await cluster.ReplicateAsync(payload, context: null, both.Token);
        return Results.NoContent();
    }
    catch (Exception e) when (e is OperationCanceledException or InvalidOperationException)
    {
        Console.Error.WriteLine($"batch of {body.Length} bytes not replicated: {e.GetType().Name}: {e.Message}");
        return Results.StatusCode(StatusCodes.Status503ServiceUnavailable);
    }
});

app.MapGet("/kv/{key}", async (string key, string? mode, CancellationToken ct) =>
{
    if (mode != "stale")
    {
        if (cluster.LeadershipToken.IsCancellationRequested)
            return Results.StatusCode(StatusCodes.Status421MisdirectedRequest);
        try { await cluster.ApplyReadBarrierAsync(ReadBarrierType.Strong, ct); }
        catch (Exception e) when (e is OperationCanceledException or InvalidOperationException or QuorumUnreachableException)
        { return Results.StatusCode(StatusCodes.Status503ServiceUnavailable); }
    }
    return state.TryGet(key, out var value) ? Results.Bytes(value) : Results.NotFound();
});

app.MapGet("/leader", () =>
    Results.Text($"{(cluster.LeadershipToken.IsCancellationRequested ? 0 : 1)} {cluster.Term}"));

await cluster.StartAsync(CancellationToken.None);
await app.StartAsync();
Console.WriteLine($"dotnext node {id} ready on {self}:{httpPort} (raft {raftPort})");
var stop = new TaskCompletionSource();
AppDomain.CurrentDomain.ProcessExit += (_, _) => stop.TrySetResult();
Console.CancelKeyPress += (_, e) => { e.Cancel = true; stop.TrySetResult(); };
await stop.Task;
await app.StopAsync();
await cluster.StopAsync(CancellationToken.None);
await wal.DisposeAsync();

/// The replicated map. Entries are [keyLength:1][key ASCII][value], or a batch (BatchMarker, see /batch).
/// Reads run concurrently with ApplyAsync.
internal sealed class KvStateMachine(DirectoryInfo location, long snapshotEvery) : SimpleStateMachine(location)
{
    public const byte BatchMarker = 0xFF;
    private readonly ConcurrentDictionary<string, byte[]> map = new();
    private long applied;

    public bool TryGet(string key, out byte[] value) => map.TryGetValue(key, out value!);

    protected override ValueTask<bool> ApplyAsync(LogEntry entry, CancellationToken token)
    {
        if (entry.IsConfiguration || !entry.TryGetPayload(out var payload) || payload.IsEmpty)
            return ValueTask.FromResult(false);
        var bytes = payload.ToArray();
        long before = applied;
        if (bytes[0] == BatchMarker)
        {
            int count = BitConverter.ToInt32(bytes, 1), at = 5;
            for (int i = 0; i < count; i++)
            {
                int kl = bytes[at];
                var key = Encoding.ASCII.GetString(bytes, at + 1, kl);
                int vl = BitConverter.ToInt32(bytes, at + 1 + kl);
                map[key] = bytes[(at + 5 + kl)..(at + 5 + kl + vl)];
                at += 5 + kl + vl;
            }
            applied += count;
        }
        else
        {
            int n = bytes[0];
            map[Encoding.ASCII.GetString(bytes, 1, n)] = bytes[(1 + n)..];
            applied++;
        }
        // A full-state snapshot every snapshotEvery keys written keeps the log bounded (its cost shows up as spikes).
        return ValueTask.FromResult(before / snapshotEvery != applied / snapshotEvery);
    }

    protected override async ValueTask PersistAsync(IAsyncBinaryWriter writer, CancellationToken token)
    {
        var snapshot = map.ToArray();
        await writer.WriteLittleEndianAsync(snapshot.Length, token);
        foreach (var (k, v) in snapshot)
        {
            var kb = Encoding.ASCII.GetBytes(k);
            await writer.WriteLittleEndianAsync(kb.Length, token);
            await writer.Invoke(kb, token);
            await writer.WriteLittleEndianAsync(v.Length, token);
            await writer.Invoke(v, token);
        }
    }

    protected override async ValueTask RestoreAsync(FileInfo snapshotFile, CancellationToken token)
    {
        map.Clear();
        var bytes = await File.ReadAllBytesAsync(snapshotFile.FullName, token);
        var span = bytes.AsMemory();
        int Read32(ref Memory<byte> s) { var x = BitConverter.ToInt32(s.Span); s = s[4..]; return x; }
        int count = Read32(ref span);
        for (int i = 0; i < count; i++)
        {
            int kl = Read32(ref span); var k = Encoding.ASCII.GetString(span.Span[..kl]); span = span[kl..];
            int vl = Read32(ref span); map[k] = span[..vl].ToArray(); span = span[vl..];
        }
    }
}

/// The static three-member configuration, kept in memory (the member list is given on the command line).
internal sealed class MemberList : InMemoryClusterConfigurationStorage<EndPoint>
{
    protected override void Encode(EndPoint address, ref BufferWriterSlim<byte> output)
    {
        var ep = (IPEndPoint)address;
        Span<byte> buf = stackalloc byte[8];
        ep.Address.TryWriteBytes(buf, out _);
        BinaryPrimitives.WriteInt32LittleEndian(buf[4..], ep.Port);
        output.Write(buf);
    }

    protected override EndPoint Decode(ref SequenceReader input)
    {
        Span<byte> buf = stackalloc byte[8];
        input.Read(buf);
        return new IPEndPoint(new IPAddress(buf[..4]), BinaryPrimitives.ReadInt32LittleEndian(buf[4..]));
    }
}

internal static class Args
{
    public static Dictionary<string, string> Parse(string[] args)
    {
        var d = new Dictionary<string, string>();
        for (int i = 0; i + 1 < args.Length; i += 2)
            if (args[i].StartsWith("--")) d[args[i][2..]] = args[i + 1];
        return d;
    }
}

internal static class PipeReaderExtensions
{
    public static async Task<byte[]> ReadAllAsync(this System.IO.Pipelines.PipeReader reader, CancellationToken ct)
    {
        while (true)
        {
            var result = await reader.ReadAsync(ct);
            if (result.IsCompleted)
            {
                var bytes = result.Buffer.ToArray();
                reader.AdvanceTo(result.Buffer.End);
                return bytes;
            }
            reader.AdvanceTo(result.Buffer.Start, result.Buffer.End);
        }
    }
}
