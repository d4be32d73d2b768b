using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.Json;
using Skiff.Net.Runtime;

namespace Skiff.Bench;

/// <summary>
/// `writepath`: the cost of one write on each member, counted rather than timed. Three members run as separate
/// processes (each a node embedded through Builder with every default, so a process's counters are its node's);
/// this process is the client, writing N keys through the public <see cref="Client"/> to the leader, one after
/// another (or from C concurrent callers, each one write at a time). Before and after the writes, and after an idle
/// pause as long as the writes took, each member reports ThreadPool.CompletedWorkItemCount,
/// GC.GetTotalAllocatedBytes(precise), its garbage collections and their pauses, and the runtime's own hand-off
/// counters (<see cref="HandOffs"/>); the deltas divided by N, with the idle rate taken off, are the per-write figures.
/// <code>Skiff.Bench writepath [--writes 2000] [--warmup 1000] [--value-bytes 100] [--clients 1]</code>
/// </summary>
public static class WritePathBench
{
    private const string Ready = "ready";

    /// <summary>Runs the measurement (the client side).</summary>
    public static async Task<int> Run(string[] args)
    {
        var (writes, warmup, valueBytes, clients) = (2000, 1000, 100, 1);
        for (var i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--writes": writes = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--warmup": warmup = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--value-bytes": valueBytes = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--clients": clients = Math.Max(1, int.Parse(args[++i], CultureInfo.InvariantCulture)); break;
                default: Console.Error.WriteLine($"unknown argument {args[i]}"); return 2;
            }
        }
        var port = 31000 + Random.Shared.Next(1000);
        var root = Directory.CreateTempSubdirectory("skiff-writepath-");
        var ips = new[] { "127.0.0.1", "127.0.0.2", "127.0.0.3" };
        var members = new List<MemberProcess>();
        try
        {
            for (var n = 0; n < 3; n++)
            {
                var mode = n == 0 ? new[] { "--new-cluster", "-" } : ["--join", ips[0]];
                members.Add(await MemberProcess.StartAsync(Path.Combine(root.FullName, $"m{n}"), ips[n], port, mode));
            }
            await using var probe = new Client([IPAddress.Parse(ips[0])]).WithPort(port);
            var deadline = Stopwatch.StartNew();
            while ((await probe.GetStatusAsync()).Members.Count(m => m.Reachable && m.Voter) < 3)
            {
                if (deadline.Elapsed > TimeSpan.FromSeconds(60)) throw new TimeoutException("the members did not all become voters");
                await Task.Delay(50);
            }
            // Right after the joins a member may not know its leader yet: ask until one says it leads.
            var leading = -1;
            while (leading < 0)
            {
                if (deadline.Elapsed > TimeSpan.FromSeconds(60)) throw new TimeoutException("no member says it leads");
                var asked = await Task.WhenAll(members.Select(m => m.StatsAsync()));
                leading = Array.FindIndex(asked, s => s.Leader);
                if (leading >= 0) break;
                Console.WriteLine($"# no member leads yet (terms {string.Join(", ", asked.Select(a => a.Term))}); asking again");
                await Task.Delay(50);
            }
            var leader = members[leading];
            await using var client = new Client([IPAddress.Parse(leader.Ip)]).WithPort(port);
            var value = new byte[valueBytes];
            Random.Shared.NextBytes(value);
            for (var i = 0; i < warmup; i++) await client.InsertBytesAsync($"warm/{i:D8}", value);

            var before = await Task.WhenAll(members.Select(m => m.StatsAsync()));
            var clientBefore = Stats.Here(false, 0);
            var latencies = new double[writes];
            var clock = Stopwatch.StartNew();
            var next = -1;
            await Task.WhenAll(Enumerable.Range(0, clients).Select(_ => Task.Run(async () =>
            {
                int i;
                while ((i = Interlocked.Increment(ref next)) < writes)
                {
                    var t = Stopwatch.GetTimestamp();
                    await client.InsertBytesAsync($"key/{i:D8}", value);
                    latencies[i] = Stopwatch.GetElapsedTime(t).TotalMilliseconds;
                }
            })));
            var took = clock.Elapsed;
            var after = await Task.WhenAll(members.Select(m => m.StatsAsync()));
            var clientAfter = Stats.Here(false, 0);
            await Task.Delay(took);
            var idle = await Task.WhenAll(members.Select(m => m.StatsAsync()));

            Array.Sort(latencies);
            if (before.Zip(idle).Any(p => p.First.Term != p.Second.Term))
                Console.WriteLine("# WARNING: the term changed during the measurement (an election): the figures include it");
            Console.WriteLine($"# writepath: {writes} writes of {valueBytes}-byte values through Client to the leader from {clients} caller(s) " +
                              $"({took.TotalSeconds:F1} s, p50 {latencies[writes / 2]:F3} ms, p99 {latencies[writes * 99 / 100]:F3} ms); " +
                              "per write, idle rate (same duration, no writes) taken off");
            for (var n = 0; n < members.Count; n++)
            {
                Print(after[n].Leader ? "leader" : "follower", members[n].Ip, before[n], after[n], idle[n], writes);
            }
            Console.WriteLine($"client (this process): thread-pool items/write {(clientAfter.WorkItems - clientBefore.WorkItems) / (double)writes:F1}, " +
                              $"allocated bytes/write {(clientAfter.Allocated - clientBefore.Allocated) / (double)writes:F0}");
            return 0;
        }
        finally
        {
            foreach (var m in members) await m.DisposeAsync();
            try { root.Delete(true); } catch (IOException) { }
        }
    }

    private static void Print(string role, string ip, Stats before, Stats after, Stats idle, int writes)
    {
        // The idle window lasted as long as the writes: its deltas are the background (ticks, heartbeats, timers).
        double Per(Func<Stats, long> f) => ((f(after) - f(before)) - Math.Max(0, f(idle) - f(after))) / (double)writes;
        var counters = after.HandOffs.Keys.Where(k => !k.StartsWith(HandOffs.AllocatedPrefix, StringComparison.Ordinal)).ToList();
        var stages = counters
            .Select(k => (k, v: Per(s => s.HandOffs.GetValueOrDefault(k))))
            .Where(x => Math.Abs(x.v) >= 0.05)
            .Select(x => $"{x.k} {x.v:F2}");
        var own = counters.Sum(k => Per(s => s.HandOffs.GetValueOrDefault(k)));
        var threads = after.HandOffs.Keys.Where(k => k.StartsWith(HandOffs.AllocatedPrefix, StringComparison.Ordinal))
            .Select(k => (k: k[HandOffs.AllocatedPrefix.Length..].Replace("Wake", ""), v: Per(s => s.HandOffs.GetValueOrDefault(k))))
            .ToList();
        var allocated = Per(s => s.Allocated);
        var pool = Per(s => s.WorkItems);
        var runtimePool = Per(s => s.HandOffs.GetValueOrDefault(nameof(HandOffs.Stage.FlushCompletion)) +
                                   s.HandOffs.GetValueOrDefault(nameof(HandOffs.Stage.PeerSendWake)) +
                                   s.HandOffs.GetValueOrDefault(nameof(HandOffs.Stage.ReplyContinuation)));
        Console.WriteLine($"{role} {ip}: hand-offs/write {own - runtimePool + pool:F1} = dedicated-thread wake-ups {own - runtimePool:F1} " +
                          $"+ thread-pool items {pool:F1} (of which the runtime's own {runtimePool:F1}); " +
                          $"allocated bytes/write {allocated:F0} (by thread: {string.Join(", ", threads.Select(t => $"{t.k} {t.v:F0}"))}, " +
                          $"thread pool and others {allocated - threads.Sum(t => t.v):F0}); " +
                          $"collections per 1,000 writes: gen0 {1000 * Per(s => s.Gen0):F1}, gen1 {1000 * Per(s => s.Gen1):F1}, gen2 {1000 * Per(s => s.Gen2):F1}, " +
                          $"GC pause µs/write {Per(s => s.GcPauseUs):F1}; runtime stages: {string.Join(", ", stages)}");
    }

    /// <summary>One member's counters at one moment.</summary>
    internal sealed record Stats(bool Leader, long Term, long WorkItems, long Allocated, Dictionary<string, long> HandOffs,
        long Gen0, long Gen1, long Gen2, long GcPauseUs)
    {
        public static Stats Here(bool leader, long term) =>
            new(leader, term, ThreadPool.CompletedWorkItemCount, GC.GetTotalAllocatedBytes(true), new(Net.Runtime.HandOffs.Snapshot()),
                // Collections of each generation alone (a gen1 collection counts as gen0 too in CollectionCount).
                GC.CollectionCount(0) - GC.CollectionCount(1), GC.CollectionCount(1) - GC.CollectionCount(2), GC.CollectionCount(2),
                (long)GC.GetTotalPauseDuration().TotalMicroseconds);
    }

    /// <summary>A member process, asked for its counters over its standard input.</summary>
    private sealed class MemberProcess : IAsyncDisposable
    {
        private readonly Process _process;
        public string Ip { get; }

        private MemberProcess(Process process, string ip)
        {
            _process = process;
            Ip = ip;
        }

        public static async Task<MemberProcess> StartAsync(string dir, string ip, int port, string[] mode)
        {
            var info = new ProcessStartInfo("dotnet")
            {
                RedirectStandardInput = true,
                RedirectStandardOutput = true,
                UseShellExecute = false,
            };
            foreach (var a in new[] { typeof(WritePathBench).Assembly.Location, "writepath-member", dir, ip, port.ToString(CultureInfo.InvariantCulture) }.Concat(mode))
                info.ArgumentList.Add(a);
            var process = Process.Start(info) ?? throw new InvalidOperationException("could not start a member");
            var m = new MemberProcess(process, ip);
            var line = await m.ReadLineAsync(TimeSpan.FromSeconds(60));
            if (line != Ready) throw new InvalidOperationException($"member {ip} said {line ?? "nothing"} instead of {Ready}");
            return m;
        }

        private async Task<string?> ReadLineAsync(TimeSpan timeout)
        {
            using var cts = new CancellationTokenSource(timeout);
            return await _process.StandardOutput.ReadLineAsync(cts.Token);
        }

        public async Task<Stats> StatsAsync()
        {
            await _process.StandardInput.WriteLineAsync("stats");
            await _process.StandardInput.FlushAsync();
            var line = await ReadLineAsync(TimeSpan.FromSeconds(10)) ?? throw new InvalidOperationException($"member {Ip} ended");
            return JsonSerializer.Deserialize<Stats>(line) ?? throw new InvalidDataException(line);
        }

        public async ValueTask DisposeAsync()
        {
            try
            {
                _process.StandardInput.Close();
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
                await _process.WaitForExitAsync(cts.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or InvalidOperationException or IOException)
            {
                _process.Kill(true);
            }
            _process.Dispose();
        }
    }

    /// <summary>The member side: <c>writepath-member DIR IP PORT (--new-cluster - | --join IP)</c>. Prints
    /// "ready" once serving, one line of counters (JSON) per "stats" line read, and stops at the end of its input.</summary>
    public static async Task<int> Member(string[] args)
    {
        var (dir, ip, port, mode, other) = (args[0], IPAddress.Parse(args[1]), int.Parse(args[2], CultureInfo.InvariantCulture), args[3], args[4]);
        var builder = new Builder().SetDir(dir).Bind(ip).Port(port);
        builder = mode == "--join" ? builder.JoinCluster([IPAddress.Parse(other)]) : builder.NewCluster();
        await using var node = builder.Build();
        await node.StartAsync();
        await node.WaitForLeaderAsync(TimeSpan.FromSeconds(60));
        var typesFile = Environment.GetEnvironmentVariable("SKIFF_ALLOC_TYPES") is { Length: > 0 } prefix ? $"{prefix}-{ip}.txt" : null;
        using var types = typesFile is null ? null : new AllocationTypes();
        Console.WriteLine(Ready);
        while (await Console.In.ReadLineAsync() is { } line)
        {
            if (line != "stats") continue;
            Console.WriteLine(JsonSerializer.Serialize(Stats.Here(node.LeaderId == node.Id, node.Term)));
            if (types is not null) await File.AppendAllTextAsync(typesFile!, $"== stats ({(node.LeaderId == node.Id ? "leader" : "follower")})\n{types.TakeReport()}");
        }
        await node.ShutdownAsync();
        return 0;
    }
}
