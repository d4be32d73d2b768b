using System.Diagnostics;
using Skiff.Net.Storage;

namespace Skiff.Bench;

/// <summary>The `log-latency` subcommand: one thread appends a batch of entries to the Raft log and waits until it
/// is durable, again and again; reports the latency of each durable append (p50, p99, max) and the entries per
/// second, for batches of 1 and 64 entries of 100 bytes. Then the time to reopen (recover) a log of small entries.
/// One line per measurement: <c>log-latency batch=N ...</c>.</summary>
public static class LogLatencyBench
{
    /// <summary>Runs the measurements: <c>--seconds S</c> per point (default 5), <c>--dir D</c>,
    /// <c>--recovery-entries N</c> (default 1,000,000; 0 skips).</summary>
    public static async Task<int> Run(string[] args)
    {
        double seconds = 5;
        long recoveryEntries = 1_000_000;
        string root = Path.GetTempPath();
        var options = new RaftLogOptions();
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--seconds": seconds = double.Parse(args[++i]); break;
                case "--dir": root = args[++i]; break;
                case "--recovery-entries": recoveryEntries = long.Parse(args[++i]); break;
                case "--preallocate": options = options with { PreallocateSegments = true }; break;
                default: throw new ArgumentException($"unknown argument {args[i]} (use --seconds S --dir D --recovery-entries N --preallocate)");
            }
        }
        var dir = Path.Combine(root, "skiff-log-latency-" + Guid.NewGuid().ToString("N"));
        try
        {
            foreach (var batch in new[] { 1, 64 }) await Point(Path.Combine(dir, $"b{batch}"), batch, seconds, options);
            if (recoveryEntries > 0) await Recovery(Path.Combine(dir, "recovery"), recoveryEntries, options);
        }
        finally
        {
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
        return 0;
    }

    private static async Task Point(string dir, int batch, double seconds, RaftLogOptions options)
    {
        var payload = new byte[100];
        Random.Shared.NextBytes(payload);
        var latencies = new List<double>();
        long next = 1;
        await using (var log = RaftLog.Open(dir, options))
        {
            var stop = Stopwatch.StartNew();
            while (stop.Elapsed.TotalSeconds < seconds)
            {
                var entries = new LogEntry[batch];
                for (int k = 0; k < batch; k++) entries[k] = new LogEntry(next + k, 1, payload);
                next += batch;
                long t0 = Stopwatch.GetTimestamp();
                await log.AppendAsync(entries).ConfigureAwait(false);
                latencies.Add(Stopwatch.GetElapsedTime(t0).TotalMicroseconds);
            }
            double elapsed = stop.Elapsed.TotalSeconds;
            latencies.Sort();
            Console.WriteLine($"log-latency batch={batch} appends={latencies.Count} entries_s={(next - 1) / elapsed:F0} appends_s={latencies.Count / elapsed:F0} " +
                $"p50_us={At(latencies, 0.5):F0} p99_us={At(latencies, 0.99):F0} max_us={latencies[^1]:F0} load={Load()}");
        }
    }

    private static async Task Recovery(string dir, long count, RaftLogOptions options)
    {
        var payload = new byte[16];
        await using (var log = RaftLog.Open(dir, options))
        {
            for (long i = 1; i <= count; i += 4096)
            {
                int n = (int)Math.Min(4096, count - i + 1);
                var entries = new LogEntry[n];
                for (int k = 0; k < n; k++) entries[k] = new LogEntry(i + k, 1, payload);
                await log.AppendAsync(entries).ConfigureAwait(false);
            }
        }
        var sw = Stopwatch.StartNew();
        long last;
        await using (var log = RaftLog.Open(dir, options)) last = log.LastIndex;
        Console.WriteLine($"log-latency recovery entries={last} payload_bytes={payload.Length} open_ms={sw.Elapsed.TotalMilliseconds:F0} load={Load()}");
    }

    private static double At(List<double> sorted, double q) => sorted.Count == 0 ? 0 : sorted[Math.Min(sorted.Count - 1, (int)(q * sorted.Count))];

    private static string Load()
    {
        try { return File.ReadAllText("/proc/loadavg").Split(' ')[0]; } catch (IOException) { return "?"; }
    }
}
