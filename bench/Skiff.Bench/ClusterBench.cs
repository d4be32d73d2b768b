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
        for (var i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--seconds": seconds = double.Parse(args[++i]); break;
                case "--warmup": warmup = double.Parse(args[++i]); break;
                case "--clients": clientCounts = args[++i].Split(',').Select(int.Parse).ToArray(); break;
                case "--inproc": inproc = true; break;
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
                    Bind = IPAddress.Parse($"127.0.0.{n}"),
                    Port = port,
                    DataDirectory = Path.Combine(root, $"n{n}"),
                    JoinPeers = n == 1 ? Array.Empty<string>() : new[] { "127.0.0.1" },
                    MinThreadPoolThreads = 64, // as before the option became opt-in, so results stay comparable
                });
                await s.StartAsync();
                nodes.Add(s);
                if (n == 1) await s.WaitForLeaderAsync(TimeSpan.FromSeconds(10));
            }
            var deadline = DateTime.UtcNow.AddSeconds(20);
            while (!nodes.All(s => s.Members.Count(m => m.Value.Voter) == 3) && DateTime.UtcNow < deadline) await Task.Delay(20);
            var leader = nodes.First(s => s.Role == Skiff.Core.Role.Leader);
            Console.WriteLine($"3 nodes on 127.0.0.1-3:{port}, leader {leader.Address}, clients via {(inproc ? "in-process calls" : "gRPC to the leader")}");
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
                        else await leader.InsertAsync(key, value);
                        var t1 = Stopwatch.GetTimestamp();
                        if (t0 - started >= measureFrom) mine.Add((t1 - t0) * 1000.0 / Stopwatch.Frequency);
                    }
                })).ToArray();
                await Task.Delay(TimeSpan.FromSeconds(warmup));
                flushesBefore = leader.Flushes;
                WriteStages.Reset();
                await Task.WhenAll(tasks);
                var flushes = leader.Flushes - flushesBefore;
                var all = lat.SelectMany(l => l).OrderBy(x => x).ToArray();
                double P(double q) => all.Length == 0 ? double.NaN : all[Math.Min(all.Length - 1, (int)(q * all.Length))];
                Console.WriteLine($"clients={clients,3}  puts/s={all.Length / seconds,8:F0}  p50={P(0.5):F2} ms  p99={P(0.99):F2} ms  max={all.LastOrDefault():F1} ms  leader fsyncs/s={flushes / seconds:F0}");
                Console.WriteLine($"             leader stages: {WriteStages.Summary()}");
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

/// <summary>`failover`: a 3-node cluster, 16 closed-loop writers (gRPC, 100 ms deadline per call, each client
/// knows every node) and the leader shut down after a warm-up; reports the longest gap between successful writes
/// and the time until a new leader was elected.</summary>
public static class FailoverBench
{
    /// <summary>Runs it: <c>failover [--runs N] [--graceful]</c> (graceful: the leader hands over before stopping).</summary>
    public static async Task<int> Run(string[] args)
    {
        var runs = 3;
        var handOff = false;
        for (var i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--runs": runs = int.Parse(args[++i]); break;
                case "--graceful": handOff = true; break;
                default: Console.Error.WriteLine($"unknown argument {args[i]}"); return 2;
            }
        }
        for (var run = 1; run <= runs; run++)
        {
            var port = 31400 + Random.Shared.Next(1000);
            var root = Path.Combine(Path.GetTempPath(), "skiff-failover-" + Guid.NewGuid().ToString("N"));
            var nodes = new List<SkiffServer>();
            try
            {
                for (var n = 1; n <= 3; n++)
                {
                    var s = new SkiffServer(new SkiffServerOptions
                    {
                        Bind = IPAddress.Parse($"127.0.0.{n}"),
                        Port = port,
                        DataDirectory = Path.Combine(root, $"n{n}"),
                        JoinPeers = n == 1 ? Array.Empty<string>() : new[] { "127.0.0.1" },
                        MinThreadPoolThreads = 64, // as before the option became opt-in
                    });
                    await s.StartAsync();
                    nodes.Add(s);
                    if (n == 1) await s.WaitForLeaderAsync(TimeSpan.FromSeconds(10));
                }
                var deadline = DateTime.UtcNow.AddSeconds(20);
                while (!nodes.All(s => s.Members.Count(m => m.Value.Voter) == 3) && DateTime.UtcNow < deadline) await Task.Delay(20);
                var addresses = nodes.Select(s => s.Address).ToArray();
                var successes = new List<long>();
                using var stop = new CancellationTokenSource();
                var value = new byte[100];
                var writers = Enumerable.Range(0, 16).Select(w => Task.Run(async () =>
                {
                    using var client = new SkiffGrpcClient(addresses.Skip(w % 3).Concat(addresses.Take(w % 3)));
                    var k = 0;
                    while (!stop.IsCancellationRequested)
                    {
                        using var call = new CancellationTokenSource(TimeSpan.FromMilliseconds(100));
                        try
                        {
                            await client.InsertAsync($"f{w:D2}/{k++:D12}", value, call.Token);
                            lock (successes) successes.Add(Stopwatch.GetTimestamp());
                        }
                        catch (Exception) { }
                    }
                })).ToArray();
                await Task.Delay(2000);
                var leader = nodes.First(s => s.Role == Skiff.Core.Role.Leader);
                var killedAt = Stopwatch.GetTimestamp();
                await leader.ShutdownAsync(handOff);
                var rest = nodes.Where(s => s != leader).ToList();
                while (!rest.Any(s => s.Role == Skiff.Core.Role.Leader)) await Task.Delay(1);
                var electedMs = (Stopwatch.GetTimestamp() - killedAt) * 1000.0 / Stopwatch.Frequency;
                await Task.Delay(2000);
                stop.Cancel();
                await Task.WhenAll(writers);
                long[] times;
                lock (successes) times = successes.OrderBy(t => t).ToArray();
                var gap = times.Zip(times.Skip(1), (a, b) => (b - a) * 1000.0 / Stopwatch.Frequency).DefaultIfEmpty(0).Max();
                Console.WriteLine($"failover {(handOff ? "graceful" : "abrupt")} run={run}  longest gap between successful writes={gap:F0} ms  new leader elected after {electedMs:F0} ms  writes={times.Length}");
                nodes.Remove(leader);
            }
            finally
            {
                foreach (var s in nodes) await s.ShutdownAsync();
                try { Directory.Delete(root, true); } catch (IOException) { }
            }
        }
        return 0;
    }
}
