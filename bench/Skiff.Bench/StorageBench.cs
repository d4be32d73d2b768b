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
                default: throw new ArgumentException($"unknown argument {args[i]} (use --dir D --seconds S --log-mib M --keys N --only append|commit|recovery|snapshot)");
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
        try
        {
            bool Want(string s) => o.Only.Length == 0 || o.Only.Contains(s);
            if (Want("append") || Want("commit"))
            {
                double fsyncs = RawFsyncRate(o.Dir, o.Seconds);
                Console.WriteLine($"storage fsync bytes=4096 fsyncs_s={fsyncs:F0} us_per_fsync={1e6 / fsyncs:F1}");
                if (Want("append"))
                    foreach (var writers in new[] { 1, 16, 256 })
                    {
                        var (rate, commits) = await AppendRate(o.Dir, writers, o.Seconds, LogCommitMode.InLog);
                        Console.WriteLine($"storage append writers={writers} entries_s={rate:F0} fsyncs_s={fsyncs:F0} ratio={rate / fsyncs:F2} commits_s={commits:F0} mode=InLog");
                    }
                if (Want("commit"))
                    foreach (var mode in new[] { LogCommitMode.FasterDefault, LogCommitMode.SlotFile, LogCommitMode.InLog })
                    {
                        var (rate, commits) = await AppendRate(o.Dir, 1, o.Seconds, mode);
                        Console.WriteLine($"storage commit mode={mode} writers=1 commits_s={commits:F0} us_per_commit={1e6 / commits:F1} fsyncs_s={fsyncs:F0} ratio={commits / fsyncs:F2}");
                    }
            }
            if (Want("recovery")) await LogRecovery(o);
            if (Want("recovery") || Want("snapshot")) KvRecoveryAndSnapshot(o);
        }
        finally
        {
            try { Directory.Delete(o.Dir, true); } catch (IOException) { }
        }
        return 0;
    }

    /// <summary>Append 4 KiB then fsync, in a loop: the disk's floor for one durable commit.</summary>
    private static double RawFsyncRate(string dir, double seconds)
    {
        var path = Path.Combine(dir, "fsync.bin");
        var block = new byte[4096];
        Random.Shared.NextBytes(block);
        using var fs = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1);
        var sw = Stopwatch.StartNew();
        long n = 0;
        while (sw.Elapsed.TotalSeconds < seconds)
        {
            fs.Write(block);
            fs.Flush(flushToDisk: true);
            n++;
        }
        double rate = n / sw.Elapsed.TotalSeconds;
        fs.Close();
        File.Delete(path);
        return rate;
    }

    private static async Task<(double entriesPerSecond, double commitsPerSecond)> AppendRate(string root, int writers, double seconds, LogCommitMode mode)
    {
        var dir = Path.Combine(root, $"append-{mode}-{writers}");
        await using (var log = RaftLog.Open(dir, new RaftLogOptions { CommitMode = mode }))
        {
            var payload = new byte[100];
            Random.Shared.NextBytes(payload);
            long next = 0;
            var gate = new object();
            long done = 0;
            var stopAt = Stopwatch.StartNew();
            long commits0 = log.Commits;
            async Task Writer()
            {
                while (stopAt.Elapsed.TotalSeconds < seconds)
                {
                    Task t;
                    // Index assignment and enqueue must happen in order; RaftLog checks contiguity.
                    lock (gate)
                    {
                        next++;
                        t = log.AppendAsync(new LogEntry(next, 1, payload));
                    }
                    await t.ConfigureAwait(false);
                    Interlocked.Increment(ref done);
                }
            }
            await Task.WhenAll(Enumerable.Range(0, writers).Select(_ => Task.Run(Writer)));
            double elapsed = stopAt.Elapsed.TotalSeconds;
            var result = (done / elapsed, (log.Commits - commits0) / elapsed);
            await log.DisposeAsync();
            Directory.Delete(dir, true);
            return result;
        }
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
                kv.Apply(i + 1, 1, Command.NewPut($"users/{i % 1000}/item{i}", value));
            double loadS = sw.Elapsed.TotalSeconds;
            Console.WriteLine($"storage kv-load keys={o.Keys} s={loadS:F2} puts_s={o.Keys / loadS:F0}");
            sw.Restart();
            var listed = kv.ListKeys("users/7/");
            double listMs = sw.Elapsed.TotalMilliseconds;
            Console.WriteLine($"storage kv-list keys={o.Keys} listed={listed.Count} ms={listMs:F3}");
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
        using (var kv = KvStateMachine.Open(dir))
        {
            double s = sw.Elapsed.TotalSeconds;
            Console.WriteLine($"storage kv-recovery keys={kv.KeyCount} applied={kv.AppliedIndex} s={s:F2}");
        }
        Directory.Delete(dir, true);
    }
}
