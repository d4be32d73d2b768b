using System.Diagnostics;
using Skiff.Core;
using Skiff.Net.Storage;

namespace Skiff.Bench;

/// <summary>The `storage` subcommand: one line per measurement, `storage &lt;what&gt; key=value ...`.</summary>
public static class StorageBench
{
    private sealed record Options(string Dir, double Seconds, long LogBytes, int Keys, string[] Only);

    private static Options Parse(string[] args)
    {
        string dir = Path.Combine(Path.GetTempPath(), "skiff-bench-" + Guid.NewGuid().ToString("N"));
        double seconds = 3;
        long logBytes = 1L << 30;
        int keys = 1_000_000;
        var only = new List<string>();
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--dir": dir = Path.Combine(args[++i], "skiff-bench-" + Guid.NewGuid().ToString("N")); break;
                case "--seconds": seconds = double.Parse(args[++i]); break;
                case "--log-mib": logBytes = long.Parse(args[++i]) << 20; break;
                case "--keys": keys = int.Parse(args[++i]); break;
                case "--only": only.Add(args[++i]); break;
                default: throw new ArgumentException($"unknown argument {args[i]} (use --dir D --seconds S --log-mib M --keys N --only append|recovery|log|kv|snapshot|kv-apply)");
            }
        }
        return new Options(dir, seconds, logBytes, keys, only.ToArray());
    }

    /// <summary>Runs the storage measurements.</summary>
    public static async Task<int> Run(string[] args)
    {
        var o = Parse(args);
        Directory.CreateDirectory(o.Dir);
        Console.WriteLine($"# storage bench in {o.Dir}, {o.Seconds}s per append point, log {o.LogBytes >> 20} MiB, {o.Keys} keys");
        Console.WriteLine("# ratio = durable entries (or commits) per second / append-4KiB+fsync per second; ratio_floor = the same against overwrite-4KiB+fdatasync, the cheapest durable write here");
        try
        {
            bool Want(string s) => o.Only.Length == 0 || o.Only.Contains(s);
            if (Want("append"))
            {
                // The disk is shared (parallel builds here), so each point is measured next to fresh floors: 1 s of
                // append+fsync and 1 s of overwrite+fdatasync right before it.
                double floorSeconds = Math.Min(1, o.Seconds);
                (double fsyncs, double ow) Floors()
                {
                    var (fs, f50, f99) = RawFsyncRate(o.Dir, floorSeconds);
                    Console.WriteLine($"storage fsync mode=append-fsync bytes=4096 fsyncs_s={fs:F0} p50_us={f50:F0} p99_us={f99:F0} load={LoadAverage()}");
                    var (ow, o50, o99) = OverwriteFdatasyncRate(o.Dir, floorSeconds);
                    Console.WriteLine($"storage fsync mode=overwrite-fdatasync bytes=4096 fsyncs_s={ow:F0} p50_us={o50:F0} p99_us={o99:F0} load={LoadAverage()}");
                    return (fs, ow);
                }
                if (Want("append"))
                    foreach (var writers in new[] { 1, 16, 256 })
                    {
                        var (fsyncs, ow) = Floors();
                        var r = await AppendRate(o.Dir, writers, o.Seconds);
                        Console.WriteLine($"storage append writers={writers} entries_s={r.Rate:F0} fsyncs_s={fsyncs:F0} ratio={r.Rate / fsyncs:F2} ratio_floor={r.Rate / ow:F2} commits_s={r.Commits:F0} entries_per_commit={r.Rate / r.Commits:F1} p50_us={r.P50:F0} p99_us={r.P99:F0} load={LoadAverage()}");
                    }
            }
            if (Want("recovery") || Want("log")) await LogRecovery(o);
            if (Want("recovery") || Want("snapshot") || Want("kv")) KvRecoveryAndSnapshot(o);
            if (Want("kv-apply")) KvApplyCost(o);
        }
        finally
        {
            try { Directory.Delete(o.Dir, true); } catch (IOException) { }
        }
        return 0;
    }

    /// <summary>Append 4 KiB then fsync, in a loop: the disk's floor for one durable commit.</summary>
    private static (double rate, double p50us, double p99us) RawFsyncRate(string dir, double seconds)
    {
        var path = Path.Combine(dir, "fsync.bin");
        var block = new byte[4096];
        Random.Shared.NextBytes(block);
        var lat = new List<double>();
        using var fs = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1);
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed.TotalSeconds < seconds)
        {
            long t0 = Stopwatch.GetTimestamp();
            fs.Write(block);
            fs.Flush(flushToDisk: true);
            lat.Add(Stopwatch.GetElapsedTime(t0).TotalMicroseconds);
        }
        double rate = lat.Count / sw.Elapsed.TotalSeconds;
        fs.Close();
        File.Delete(path);
        lat.Sort();
        return (rate, Percentile(lat, 0.5), Percentile(lat, 0.99));
    }

    /// <summary>Overwrite one preallocated 4 KiB block then fdatasync: no allocation, no size change; the cheapest
    /// durable write the disk offers (what the slot commit file and hard-state file do).</summary>
    private static (double rate, double p50us, double p99us) OverwriteFdatasyncRate(string dir, double seconds)
    {
        var path = Path.Combine(dir, "fdatasync.bin");
        var block = new byte[4096];
        Random.Shared.NextBytes(block);
        var lat = new List<double>();
        using (var h = File.OpenHandle(path, FileMode.Create, FileAccess.ReadWrite))
        {
            RandomAccess.Write(h, block, 0);
            StorageIo.Fdatasync(h, path);
            var sw = Stopwatch.StartNew();
            while (sw.Elapsed.TotalSeconds < seconds)
            {
                long t0 = Stopwatch.GetTimestamp();
                RandomAccess.Write(h, block, 0);
                StorageIo.Fdatasync(h, path);
                lat.Add(Stopwatch.GetElapsedTime(t0).TotalMicroseconds);
            }
            double rate = lat.Count / sw.Elapsed.TotalSeconds;
            lat.Sort();
            File.Delete(path);
            return (rate, Percentile(lat, 0.5), Percentile(lat, 0.99));
        }
    }

    private static double Percentile(List<double> sorted, double p) =>
        sorted.Count == 0 ? double.NaN : sorted[Math.Min(sorted.Count - 1, (int)(p * sorted.Count))];

    private sealed record AppendResult(double Rate, double Commits, double P50, double P99);

    private static string LoadAverage()
    {
        try { return File.ReadAllText("/proc/loadavg").Split(' ')[0]; } catch (IOException) { return "?"; }
    }

    private static async Task<AppendResult> AppendRate(string root, int writers, double seconds)
    {
        var dir = Path.Combine(root, $"append-{writers}");
        AppendResult result;
        await using (var log = RaftLog.Open(dir))
        {
            var payload = new byte[100];
            Random.Shared.NextBytes(payload);
            long next = 0;
            var gate = new object();
            var latencies = new List<double>[writers];
            var stopAt = Stopwatch.StartNew();
            long commits0 = log.Commits;
            async Task Writer(int w)
            {
                var lat = latencies[w] = new List<double>();
                while (stopAt.Elapsed.TotalSeconds < seconds)
                {
                    Task t;
                    long t0 = Stopwatch.GetTimestamp();
                    // Index assignment and enqueue must happen in order; RaftLog checks contiguity.
                    lock (gate)
                    {
                        next++;
                        t = log.AppendAsync(new LogEntry(next, 1, payload));
                    }
                    await t.ConfigureAwait(false);
                    lat.Add(Stopwatch.GetElapsedTime(t0).TotalMicroseconds);
                }
            }
            await Task.WhenAll(Enumerable.Range(0, writers).Select(w => Task.Run(() => Writer(w))));
            double elapsed = stopAt.Elapsed.TotalSeconds;
            var all = latencies.SelectMany(l => l).ToList();
            all.Sort();
            long commits = log.Commits - commits0;
            result = new AppendResult(all.Count / elapsed, commits / elapsed, Percentile(all, 0.5), Percentile(all, 0.99));
        }
        Directory.Delete(dir, true);
        return result;
    }

    private static async Task LogRecovery(Options o)
    {
        var dir = Path.Combine(o.Dir, "log-recovery");
        var payload = new byte[1000];
        Random.Shared.NextBytes(payload);
        long entries = o.LogBytes / (payload.Length + 25 + 4);
        var sw = Stopwatch.StartNew();
        await using (var log = RaftLog.Open(dir))
        {
            const int batch = 256;
            for (long i = 1; i <= entries; i += batch)
            {
                int n = (int)Math.Min(batch, entries - i + 1);
                var list = new LogEntry[n];
                for (int k = 0; k < n; k++) list[k] = new LogEntry(i + k, 1, payload);
                await log.AppendAsync(list);
            }
        }
        double writeS = sw.Elapsed.TotalSeconds;
        sw.Restart();
        long last;
        using (var log = RaftLog.Open(dir)) last = log.LastIndex;
        double recoverS = sw.Elapsed.TotalSeconds;
        Console.WriteLine($"storage log-recovery bytes={o.LogBytes} entries={last} write_s={writeS:F2} recover_s={recoverS:F2} entries_s={last / recoverS:F0}");
        Directory.Delete(dir, true);
    }

    /// <summary>The cost of one apply (100-byte puts to distinct keys, every 10th a delete) with the change history
    /// off and at its default size, interleaved in rounds because this machine is shared. The steady half is after
    /// the history filled, so each change also trims the oldest.</summary>
    private static void KvApplyCost(Options o)
    {
        var value = new byte[100];
        Random.Shared.NextBytes(value);
        int n = Math.Max(2 * 100_000, o.Keys);
        for (int round = 1; round <= 3; round++)
            foreach (var history in new[] { 0, 100_000 })
            {
                var dir = Path.Combine(o.Dir, $"kv-apply-{round}-{history}");
                using (var kv = KvStateMachine.Open(dir, new KvOptions { WatchHistory = history }))
                {
                    var sw = Stopwatch.StartNew();
                    double firstHalf = 0;
                    for (int i = 0; i < n; i++)
                    {
                        if (i == n / 2) firstHalf = sw.Elapsed.TotalSeconds;
                        var cmd = i % 10 == 9 ? Command.NewRemove($"users/{i % 10000}/item{i - 1}") : Command.NewInsert($"users/{i % 10000}/item{i}", value);
                        kv.Apply(i + 1, 1, cmd);
                    }
                    double total = sw.Elapsed.TotalSeconds;
                    Console.WriteLine($"storage kv-apply round={round} history={history} applies={n} us_per_apply={total * 1e6 / n:F2} steady_us_per_apply={(total - firstHalf) * 1e6 / (n - n / 2):F2} kept={kv.HistoryCount} load={LoadAverage()}");
                    if (history > 0)
                    {
                        var found = new List<Change>();
                        sw.Restart();
                        kv.TryReadHistory(kv.HistoryFloor + 1, long.MaxValue, "", found, out _);
                        Console.WriteLine($"storage kv-history-read round={round} changes={found.Count} ms={sw.Elapsed.TotalMilliseconds:F1} load={LoadAverage()}");
                    }
                }
                Directory.Delete(dir, true);
            }
    }

    private static void KvRecoveryAndSnapshot(Options o)
    {
        var dir = Path.Combine(o.Dir, "kv");
        var value = new byte[100];
        Random.Shared.NextBytes(value);
        var sw = Stopwatch.StartNew();
        long snapshotBytes;
        double snapshotS;
        using (var kv = KvStateMachine.Open(dir))
        {
            for (int i = 0; i < o.Keys; i++)
                kv.Apply(i + 1, 1, Command.NewInsert($"users/{i % 10000}/item{i}", value));
            double loadS = sw.Elapsed.TotalSeconds;
            Console.WriteLine($"storage kv-load keys={o.Keys} s={loadS:F2} puts_s={o.Keys / loadS:F0}");
            kv.ListKeys("users/8/");
            kv.GetPrefixes();
            sw.Restart();
            var listed = kv.ListKeys("users/7/");
            double listMs = sw.Elapsed.TotalMilliseconds;
            sw.Restart();
            var prefixes = kv.GetPrefixes();
            double prefixMs = sw.Elapsed.TotalMilliseconds;
            Console.WriteLine($"storage kv-list keys={o.Keys} listed={listed.Count} ms={listMs:F3} prefixes={prefixes.Count} prefixes_ms={prefixMs:F3}");
            sw.Restart();
            var snap = kv.TakeSnapshot();
            snapshotS = sw.Elapsed.TotalSeconds;
            snapshotBytes = snap.TotalBytes;
            Console.WriteLine($"storage snapshot keys={o.Keys} bytes={snapshotBytes} files={snap.Files.Count} s={snapshotS:F2}");
            sw.Restart();
            long streamed = 0;
            using (var reader = kv.OpenSnapshotReader(snap))
            {
                var buf = new byte[1 << 20];
                int n;
                while ((n = reader.Read(buf)) > 0) streamed += n;
            }
            Console.WriteLine($"storage snapshot-stream bytes={streamed} s={sw.Elapsed.TotalSeconds:F2} mib_s={streamed / 1048576.0 / sw.Elapsed.TotalSeconds:F0}");
        }
        sw.Restart();
        // The benchmark (a program, unlike the library) picks the rebuild to measure from SKIFF_KV_INDEX_REBUILD.
        var rebuild = Environment.GetEnvironmentVariable("SKIFF_KV_INDEX_REBUILD") == "iterate"
            ? KeyIndexRebuild.DistinctIterator : KeyIndexRebuild.LogScan;
        using (var kv = KvStateMachine.Open(dir, new KvOptions { KeyIndexRebuild = rebuild }))
        {
            double s = sw.Elapsed.TotalSeconds;
            Console.WriteLine($"storage kv-recovery keys={kv.KeyCount} applied={kv.AppliedIndex} s={s:F2} checkpoint_s={kv.LastOpen.Recover.TotalSeconds:F2} key_index_s={kv.LastOpen.KeyIndex.TotalSeconds:F2} rebuild={Environment.GetEnvironmentVariable("SKIFF_KV_INDEX_REBUILD") ?? "scan"}");
        }
        Directory.Delete(dir, true);
    }
}
