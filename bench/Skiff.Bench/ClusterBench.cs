using System.Diagnostics;
using System.Net;
using Skiff.Net.Runtime;

namespace Skiff.Bench;

/// <summary>`cluster`: a 3-node cluster in this process on 127.0.0.1-3; closed-loop clients (one request in flight
/// each) put 16-byte distinct keys with 100-byte values through gRPC to the leader (or in-process with --inproc).
/// Reports puts/s and latency percentiles per client count. `--storage simple` uses the simple file storage.</summary>
public static class ClusterBench
{
    /// <summary>Runs the benchmark: <c>cluster [--seconds N] [--clients 1,64] [--inproc] [--warmup S]</c>.</summary>
    public static async Task<int> Run(string[] args)
    {
        var seconds = 10.0;
        var warmup = 1.0;
        var clientCounts = new[] { 1, 64 };
        var inproc = false;
        var engine = StorageEngine.Faster;
        for (var i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--seconds": seconds = double.Parse(args[++i]); break;
                case "--warmup": warmup = double.Parse(args[++i]); break;
                case "--clients": clientCounts = args[++i].Split(',').Select(int.Parse).ToArray(); break;
                case "--inproc": inproc = true; break;
                case "--storage": engine = Enum.Parse<StorageEngine>(args[++i], ignoreCase: true); break;
                default: Console.Error.WriteLine($"unknown argument {args[i]}"); return 2;
            }
        }
        var port = 29400 + Random.Shared.Next(1000);
        var root = Path.Combine(Path.GetTempPath(), "skiff-bench-" + Guid.NewGuid().ToString("N"));
        var nodes = new List<SkiffServer>();
        try
        {
            for (var n = 1; n <= 3; n++)
            {
                var s = new SkiffServer(new SkiffServerOptions
                {
                    Bind = IPAddress.Parse($"127.0.0.{n}"), Port = port, DataDirectory = Path.Combine(root, $"n{n}"),
                    JoinPeers = n == 1 ? Array.Empty<string>() : new[] { "127.0.0.1" },
                    Storage = engine,
                });
                await s.StartAsync();
                nodes.Add(s);
                if (n == 1) await s.WaitForLeaderAsync(TimeSpan.FromSeconds(10));
            }
            var deadline = DateTime.UtcNow.AddSeconds(20);
            while (!nodes.All(s => s.Members.Count(m => m.Value.Voter) == 3) && DateTime.UtcNow < deadline) await Task.Delay(20);
            var leader = nodes.First(s => s.Role == Skiff.Core.Role.Leader);
            Console.WriteLine($"3 nodes on 127.0.0.1-3:{port}, leader {leader.Address}, clients via {(inproc ? "in-process calls" : "gRPC to the leader")}, storage {engine}");
            var value = new byte[100];
            Random.Shared.NextBytes(value);
            foreach (var clients in clientCounts)
            {
                var grpc = Enumerable.Range(0, clients).Select(_ => inproc ? null : new SkiffGrpcClient(new[] { leader.Address })).ToArray();
                var lat = new List<double>[clients];
                var stopAt = 0L;
                var measureFrom = 0L;
                var flushesBefore = 0L;
                var sw = Stopwatch.StartNew();
                measureFrom = (long)(warmup * Stopwatch.Frequency);
                stopAt = measureFrom + (long)(seconds * Stopwatch.Frequency);
                var started = Stopwatch.GetTimestamp();
                var tasks = Enumerable.Range(0, clients).Select(c => Task.Run(async () =>
                {
                    var mine = lat[c] = new List<double>(100_000);
                    var k = 0L;
                    while (true)
                    {
                        var t0 = Stopwatch.GetTimestamp();
                        if (t0 - started > stopAt) break;
                        var key = $"b{c:D4}/{k++:D10}"; // 16 bytes
                        if (grpc[c] is { } g) await g.InsertAsync(key, value);
                        else await leader.PutAsync(key, value);
                        var t1 = Stopwatch.GetTimestamp();
                        if (t0 - started >= measureFrom) mine.Add((t1 - t0) * 1000.0 / Stopwatch.Frequency);
                    }
                })).ToArray();
                await Task.Delay(TimeSpan.FromSeconds(warmup));
                flushesBefore = leader.Flushes;
                await Task.WhenAll(tasks);
                var flushes = leader.Flushes - flushesBefore;
                var all = lat.SelectMany(l => l).OrderBy(x => x).ToArray();
                double P(double q) => all.Length == 0 ? double.NaN : all[Math.Min(all.Length - 1, (int)(q * all.Length))];
                Console.WriteLine($"clients={clients,3}  puts/s={all.Length / seconds,8:F0}  p50={P(0.5):F2} ms  p99={P(0.99):F2} ms  max={all.LastOrDefault():F1} ms  leader fsyncs/s={flushes / seconds:F0}");
                foreach (var g in grpc) g?.Dispose();
            }
            return 0;
        }
        finally
        {
            foreach (var s in nodes) await s.ShutdownAsync();
            try { Directory.Delete(root, true); } catch (IOException) { }
        }
    }
}
