using System.Diagnostics;
using System.Globalization;
using Skiff.Bench.Cluster.Systems;

namespace Skiff.Bench.Cluster;

/// <summary>One system's disk use while N overwrites of K keys go through it: the largest member data directory
/// sampled every second (writes done so far, MiB on disk), then after an idle period; for Skiff, the longest time a
/// snapshot stopped applying on a member meanwhile (<c>Pauses</c>; null: not measured).</summary>
public sealed record DiskResult(string System, long Overwrites, int Keys, int ValueBytes, double Seconds,
    double LiveMb, double PeakMb, double EndOfLoadMb, double AfterIdleMb, List<DiskSample> Samples,
    SnapshotPauses? Pauses = null);

/// <summary>A sample: how many overwrites had completed, and the largest member directory then (MiB).</summary>
public sealed record DiskSample(long Writes, double Mb);

/// <summary>
/// The disk benchmark (issue #16): overwrite a fixed set of keys many times and watch each member's data directory.
/// A store whose disk grows with writes rather than with data shows it here. Every system runs as it is operated:
/// Skiff with its defaults (snapshots, log reclamation and KV compaction are its own), etcd with periodic
/// auto-compaction (one minute) and a defragmentation of every member each minute, as etcd's maintenance guide
/// advises. 64 closed-loop writers, to the leader; a fresh cluster per system.
/// </summary>
internal static class DiskGrowth
{
    private const int Writers = 64;

    /// <summary>Sizes on disk (allocated blocks, as `du` counts) of everything under <paramref name="dir"/>.</summary>
    public static long DiskBytes(string dir)
    {
        if (!Directory.Exists(dir)) return 0;
        var psi = new ProcessStartInfo("du", ["-s", "-B1", dir]) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        var output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        // du reports files that vanish under it (segments deleted mid-walk) but still prints the total.
        return long.TryParse(output.Split('\t', 2)[0], out var bytes) ? bytes : 0;
    }

    /// <summary>Runs the disk benchmark on a fresh cluster of each system (not the TLS rows: TLS changes nothing on
    /// disk), adding each system's result to <paramref name="results"/> as soon as it has it (an interrupted run keeps
    /// them); a failure is recorded and the next system still runs. The --quick smoke run leaves DotNext out: its
    /// members answered puts with HTTP 500 under a long overwrite run (a failure of its own, recorded in full runs),
    /// and the smoke test is there to prove the harness, with the comparison the issue asks for (Skiff, etcd).</summary>
    public static async Task RunAllAsync(IEnumerable<IBenchSystem> systems, Func<string, ClusterSpec> spec,
        Options o, string root, List<DiskResult> results, List<string> failures, CancellationToken ct)
    {
        foreach (var sys in systems.Where(sys => !sys.Name.EndsWith("-tls", StringComparison.Ordinal) && !(o.Quick && sys.Name == "dotnext")))
        {
            var where = spec(sys.Name);
            SnapshotPauseWatch? watch = null;
            DiskResult? result = null;
            SnapshotPauses? pauses = null;
            try
            {
                await sys.StartAsync(where, ct);
                watch = SnapshotPauseWatch.Start(sys, root, Path.Combine(where.WorkDir, "counters"));
                result = await RunAsync(sys, where.Members.Count, o.DiskOverwrites, o.DiskKeys, o.DiskValueBytes, o.DiskIdle, ct);
            }
            catch (Exception e) when (!ct.IsCancellationRequested)
            {
                failures.Add($"{sys.Name} disk benchmark failed: {e.GetType().Name}: {e.Message}");
                Console.WriteLine("# " + failures[^1]);
            }
            finally
            {
                // Members first: a session ends with its member and only then writes its file.
                await sys.StopAsync();
                if (watch is not null) pauses = await watch.StopAsync();
            }
            if (result is null) continue;
            result = result with { Pauses = pauses };
            Console.WriteLine(Line(result));
            results.Add(result);
        }
    }

    public static string Line(DiskResult r) =>
        $"{r.System} disk overwrites={r.Overwrites} keys={r.Keys} value_b={r.ValueBytes} writes_s={r.Overwrites / r.Seconds:F0} " +
        $"live_mb={r.LiveMb:F1} peak_mb={r.PeakMb:F0} end_of_load_mb={r.EndOfLoadMb:F0} after_idle_mb={r.AfterIdleMb:F0}" +
        (r.Pauses is { } p ? $" snapshot_pause_max_ms={p.MaxMs:F2} snapshot_own_max_ms={p.OwnMaxMs?.ToString("F2", CultureInfo.InvariantCulture) ?? "-"} snapshot_work_max_ms={p.WorkMaxMs?.ToString("F2", CultureInfo.InvariantCulture) ?? "-"} snapshot_seconds={p.Seconds}" : "");

    public static async Task<DiskResult> RunAsync(IBenchSystem sys, int members, long overwrites, int keys, int valueBytes,
        TimeSpan idle, CancellationToken ct)
    {
        int leader = await Load.FindLeaderAsync(sys, members, TimeSpan.FromSeconds(20), ct);
        var runId = Keys.NextRun();
        var keyBytes = Enumerable.Range(0, keys).Select(k => Keys.Make(runId, 0, k)).ToArray();
        var value = new byte[valueBytes];
        new Random(11).NextBytes(value);
        var samples = new List<DiskSample>();
        long done = 0, next = -1;
        double MaxMemberMb() => Enumerable.Range(0, members).Max(m => DiskBytes(sys.MemberDataDir(m))) / 1048576.0;

        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var watch = Stopwatch.StartNew();
        var sampler = Task.Run(async () =>
        {
            var lastMaintenance = TimeSpan.Zero;
            while (!stop.IsCancellationRequested)
            {
                var sample = new DiskSample(Interlocked.Read(ref done), MaxMemberMb());
                lock (samples) samples.Add(sample);
                if (watch.Elapsed - lastMaintenance >= TimeSpan.FromMinutes(1))
                {
                    lastMaintenance = watch.Elapsed;
                    await sys.MaintainAsync(stop.Token);
                }
                try { await Task.Delay(1000, stop.Token); }
                catch (OperationCanceledException) { }
            }
        }, CancellationToken.None);

        await Task.WhenAll(Enumerable.Range(0, Writers).Select(_ => Task.Run(async () =>
        {
            long i;
            while ((i = Interlocked.Increment(ref next)) < overwrites)
            {
                for (int attempt = 1; ; attempt++)
                {
                    try
                    {
                        await sys.Client(Volatile.Read(ref leader)).PutAsync(keyBytes[i % keys], value, ct);
                        break;
                    }
                    catch (Exception) when (!ct.IsCancellationRequested && attempt < 20)
                    {
                        // A re-election on a busy machine: find the leader of the moment and write again (an
                        // overwrite applied twice changes nothing measured here).
                        await Task.Delay(100, ct);
                        Volatile.Write(ref leader, await Load.FindLeaderAsync(sys, members, TimeSpan.FromSeconds(20), ct));
                    }
                }
                Interlocked.Increment(ref done);
            }
        }, ct)));
        var seconds = watch.Elapsed.TotalSeconds;
        var endOfLoad = MaxMemberMb();
        lock (samples) samples.Add(new DiskSample(overwrites, endOfLoad));
        // Idle: what the store gives back by itself once the writes stop.
        await Task.Delay(idle, ct);
        stop.Cancel();
        await sampler;
        var afterIdle = MaxMemberMb();
        var live = keys * (double)(valueBytes + keyBytes[0].Length) / 1048576.0;
        return new DiskResult(sys.Name, overwrites, keys, valueBytes, seconds, live,
            Math.Max(samples.Max(s => s.Mb), afterIdle), endOfLoad, afterIdle, samples);
    }
}

/// <summary>The disk benchmark's part of the report and its chart.</summary>
internal static class DiskReport
{
    public const string Chart = "benchmarks-cluster-disk.png";

    public static void Append(System.Text.StringBuilder md, IReadOnlyList<DiskResult> disks)
    {
        if (disks.Count == 0) return;
        var d0 = disks[0];
        md.AppendLine($"### Disk under overwrites ({d0.Overwrites:N0} overwrites of {d0.Keys:N0} keys, {d0.ValueBytes:N0}-byte values)");
        md.AppendLine();
        md.AppendLine("64 writers overwrite the same keys round the clock; every second the largest member data directory is measured " +
                      "(`du`: blocks allocated). Live data is keys × (key + value). The goal (issue #16): at most max(64 MiB, 3 × live data) " +
                      "in steady state. \"After idle\": once the writes stop, what is left after the idle period (the store's own clean-up, " +
                      "and for etcd its next compaction and defragmentation).");
        md.AppendLine();
        md.AppendLine("Longest snapshot pause: for Skiff, the longest a snapshot stopped applying on any member, as the members' " +
                      "`skiff.snapshot_pause` recorded it (read by dotnet-counters once a second; issue #16's goal: at most 10 ms), and " +
                      "the longest less the garbage collector's pauses inside it (`skiff.snapshot_pause_gc`), which stop every thread, snapshot or not; " +
                      "then the longest of the snapshots' own work (`skiff.snapshot_pause_work`: each pause less those collections and less the time " +
                      "applying was runnable but waiting for a core, as Linux counts it per thread; three members and the load generator share two cores here).");
        md.AppendLine();
        md.AppendLine("| system | writes/s | live MiB | peak MiB | end of load MiB | after idle MiB | peak / goal | longest snapshot pause ms |");
        md.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var d in disks)
        {
            var goal = Math.Max(64, 3 * d.LiveMb);
            var pause = d.Pauses is { } p
                ? $"{p.MaxMs:F2}{(p.OwnMaxMs is { } own ? $"; without collections inside {own:F2}" : "")}" +
                  $"{(p.WorkMaxMs is { } work ? $"; own work {work:F2}" : "")} ({p.Seconds} s with one)"
                : d.System.StartsWith("skiff", StringComparison.Ordinal) ? "not measured" : "n/a";
            md.AppendLine($"| {SystemNames.Title(d.System)} | {d.Overwrites / d.Seconds:N0} | {d.LiveMb:F1} | {d.PeakMb:F0} | {d.EndOfLoadMb:F0} | " +
                          $"{d.AfterIdleMb:F0} | {d.PeakMb / goal:F2}× | {pause} |");
        }
        md.AppendLine();
    }

    /// <summary>Disk against overwrites done (not time, so systems of different speeds line up), one line each.</summary>
    public static string? Draw(IReadOnlyList<DiskResult> disks, string dir, string runLabel, IReadOnlyDictionary<string, ScottPlot.Color> colors)
    {
        if (disks.Count == 0) return null;
        var plot = new ScottPlot.Plot();
        foreach (var d in disks)
        {
            var line = plot.Add.Scatter(d.Samples.Select(s => s.Writes / 1e6).ToArray(), d.Samples.Select(s => s.Mb).ToArray());
            line.LegendText = SystemNames.Title(d.System);
            line.Color = colors.GetValueOrDefault(d.System, new ScottPlot.Color(0x55, 0x55, 0x55));
            line.LineWidth = 2;
            line.MarkerSize = 0;
        }
        var goal = Math.Max(64, 3 * disks[0].LiveMb);
        var limit = plot.Add.HorizontalLine(goal);
        limit.LegendText = "goal";
        limit.LinePattern = ScottPlot.LinePattern.Dashed;
        limit.Color = ScottPlot.Colors.Black;
        plot.Title($"Disk of the largest member against overwrites done\n{runLabel}");
        plot.XLabel("overwrites done (millions)");
        plot.YLabel("MiB on disk");
        plot.ShowLegend(ScottPlot.Alignment.UpperLeft);
        plot.SavePng(Path.Combine(dir, Chart), 760, 420);
        return Chart;
    }
}
