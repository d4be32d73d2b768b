using System.Diagnostics;
using System.Globalization;
using System.Net;
using Skiff.Net.Runtime;

namespace Skiff.Bench;

/// <summary>`disk`: one embedded node, N overwrites of K keys with V-byte values from C concurrent writers. Prints
/// the data directory's size and the process's resident memory over time as CSV (so the curves show whether disk
/// follows live data or the write history, and whether memory keeps to the state machine's budget), then the size
/// after a clean shutdown and how long a restart takes.</summary>
public static class DiskBench
{
    /// <summary>Runs the benchmark: <c>disk [--overwrites N] [--keys K] [--value-bytes V] [--clients C]
    /// [--every-seconds S] [--memory-mib M] [--watch-history H] [--dir D] [--keep]</c>. <c>--memory-mib</c> sets the
    /// state machine's memory budget (<see cref="SkiffServerOptions.StateMachineMemoryBytes"/>); <c>--watch-history
    /// 0</c> keeps no change history (each put then writes its value once, not twice: half the disk).</summary>
    public static async Task<int> Run(string[] args)
    {
        long overwrites = 10_000_000;
        var keys = 10_000;
        var valueBytes = 1024;
        var clients = 32;
        var every = 1.0;
        string? dir = null;
        var keep = false;
        long memory = SkiffServerOptions.DefaultStateMachineMemoryBytes;
        var watchHistory = new SkiffServerOptions().WatchHistory;
        for (var i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--overwrites": overwrites = long.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--keys": keys = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--value-bytes": valueBytes = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--clients": clients = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--every-seconds": every = double.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--dir": dir = args[++i]; break;
                case "--memory-mib": memory = long.Parse(args[++i], CultureInfo.InvariantCulture) << 20; break;
                case "--watch-history": watchHistory = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--keep": keep = true; break;
                default: Console.Error.WriteLine($"unknown argument {args[i]}"); return 2;
            }
        }
        dir ??= Path.Combine(Path.GetTempPath(), "skiff-disk-bench-" + Guid.NewGuid().ToString("N"));
        var port = 29400 + Random.Shared.Next(1000);
        SkiffServer Server() => new(new SkiffServerOptions
        {
            Bind = IPAddress.Loopback,
            Port = port,
            DataDirectory = dir,
            StateMachineMemoryBytes = memory,
            WatchHistory = watchHistory,
            MaxValueBytes = Math.Max(valueBytes, KeyRules.DefaultMaxValueBytes),
        });
        try
        {
            var server = Server();
            await server.StartAsync();
            await server.WaitForLeaderAsync(TimeSpan.FromSeconds(10));
            Console.Error.WriteLine($"{overwrites} overwrites of {keys} keys, {valueBytes}-byte values, {clients} writers, live data {(double)Math.Min(keys, overwrites) * valueBytes / 1e6:F1} MB, written {(double)overwrites * valueBytes / 1e9:F2} GB, state machine memory budget {memory >> 20} MiB, watch history {watchHistory}, in {dir}");
            Console.WriteLine("seconds,writes,kv_mb,log_mb,total_mb,rss_mib");
            var pauses = new List<(double Ms, double GcMs)>();
            // The GC share of a pause is recorded just before the pause, on the same thread.
            using var gcShare = new ThreadLocal<double>();
            using var listener = new System.Diagnostics.Metrics.MeterListener();
            listener.InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == "Skiff" && instrument.Name is "skiff.snapshot_pause" or "skiff.snapshot_pause_gc")
                    l.EnableMeasurementEvents(instrument);
            };
            listener.SetMeasurementEventCallback<double>((instrument, ms, _, _) =>
            {
                if (instrument.Name == "skiff.snapshot_pause_gc") gcShare.Value = ms;
                else lock (pauses) pauses.Add((ms, gcShare.Value));
            });
            listener.Start();
            var latencies = new List<double>[clients];
            var value = new byte[valueBytes];
            Random.Shared.NextBytes(value);
            long next = -1, done = 0;
            var sw = Stopwatch.StartNew();
            var writers = Enumerable.Range(0, clients).Select(c => Task.Run(async () =>
            {
                var mine = latencies[c] = new List<double>();
                long n;
                while ((n = Interlocked.Increment(ref next)) < overwrites)
                {
                    var t = Stopwatch.GetTimestamp();
                    await server.InsertAsync($"k/{n % keys:D8}", value);
                    mine.Add(Stopwatch.GetElapsedTime(t).TotalMilliseconds);
                    Interlocked.Increment(ref done);
                }
            })).ToArray();
            var writing = Task.WhenAll(writers);
            while (!writing.IsCompleted)
            {
                await Task.WhenAny(writing, Task.Delay(TimeSpan.FromSeconds(every)));
                Report(sw.Elapsed.TotalSeconds, Interlocked.Read(ref done), dir);
            }
            await writing;
            var elapsed = sw.Elapsed.TotalSeconds;
            Console.Error.WriteLine($"after writing: {Memory()}; RSS at most {_peakRss / 1048576.0:F0} MiB at the samples, {PeakRss()} by the kernel's count; live managed heap {GC.GetTotalMemory(forceFullCollection: true) / 1048576.0:F0} MiB");
            await server.ShutdownAsync();
            Console.Error.WriteLine($"wrote {overwrites} in {elapsed:F1} s ({overwrites / elapsed:F0}/s); after shutdown: {Describe(dir)}");
            var all = latencies.SelectMany(l => l).Order().ToArray();
            Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"write latency ms: p50 {Pct(all, 0.5):F1}, p99 {Pct(all, 0.99):F1}, max {all[^1]:F1}"));
            lock (pauses)
            {
                var p = pauses.Select(x => x.Ms).Order().ToArray();
                var own = pauses.Select(x => x.Ms - x.GcMs).Order().ToArray();
                if (p.Length > 0)
                    Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"snapshots: {p.Length}, applying waited ms: p50 {Pct(p, 0.5):F1}, max {p[^1]:F1}, over 10 ms {p.Count(x => x > 10)}; " +
                        $"without the GC pauses inside them: p50 {Pct(own, 0.5):F1}, max {own[^1]:F1}, over 10 ms {own.Count(x => x > 10)}; " +
                        $"the longest were snapshots {string.Join(", ", pauses.Select((x, i) => (x.Ms, N: i + 1)).OrderByDescending(x => x.Ms).Take(3).Select(x => $"#{x.N} ({x.Ms:F1} ms)"))}"));
            }
            var restart = Stopwatch.StartNew();
            await using (var again = Server())
            {
                await again.StartAsync();
                await again.WaitForLeaderAsync(TimeSpan.FromSeconds(60));
                Console.Error.WriteLine($"restart to leader: {restart.ElapsedMilliseconds} ms; {Memory()} (this process also held the node before the restart)");
                if (await again.GetAsync("k/00000000") is not { } read || read.Length != valueBytes)
                    throw new InvalidOperationException("a key written before the restart is missing after it");
            }
            return 0;
        }
        finally
        {
            if (!keep) try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    private static long _peakRss;

    /// <summary>The kernel's high-water mark of this process's resident memory (VmHWM), or "?" off Linux.</summary>
    private static string PeakRss()
    {
        const string Status = "/proc/self/status";
        if (!File.Exists(Status)) return "?";
        var line = File.ReadLines(Status).FirstOrDefault(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
        return line is null ? "?" : line["VmHWM:".Length..].Trim();
    }

    private static string Memory()
    {
        using var self = Process.GetCurrentProcess();
        return string.Create(CultureInfo.InvariantCulture,
            $"process RSS {self.WorkingSet64 / 1048576.0:F0} MiB, managed heap {GC.GetTotalMemory(forceFullCollection: false) / 1048576.0:F0} MiB");
    }

    private static double Pct(double[] sorted, double q) => sorted[Math.Min(sorted.Length - 1, (int)(q * sorted.Length))];

    private static long Bytes(string path) =>
        Directory.Exists(path) ? Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories).Sum(f => SafeLength(f)) : 0;

    // Files come and go while the node runs (segments truncated, checkpoints replaced).
    private static long SafeLength(string file)
    {
        try { return new FileInfo(file).Length; }
        catch (IOException) { return 0; }
    }

    private static void Report(double seconds, long writes, string dir)
    {
        var kv = Bytes(Path.Combine(dir, "kv"));
        var log = Bytes(Path.Combine(dir, "log"));
        var total = Bytes(dir);
        using var self = Process.GetCurrentProcess();
        var rss = self.WorkingSet64; // VmRSS on Linux
        _peakRss = Math.Max(_peakRss, rss);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{seconds:F1},{writes},{kv / 1e6:F1},{log / 1e6:F1},{total / 1e6:F1},{rss / 1048576.0:F0}"));
    }

    private static string Describe(string dir) => string.Create(CultureInfo.InvariantCulture,
        $"kv {Bytes(Path.Combine(dir, "kv")) / 1e6:F1} MB, log {Bytes(Path.Combine(dir, "log")) / 1e6:F1} MB, total {Bytes(dir) / 1e6:F1} MB");
}
