using System.Globalization;

namespace Skiff.Bench.Cluster;

/// <summary>The median of each metric over the repetitions of one point, and the spread of its throughput.</summary>
public sealed record PointSummary(string System, string Kind, int Clients, int Reps, double OpsPerSec, double P50Ms,
    double P99Ms, double MaxMs, double ClientCpuPct, double ServerCpuPct, double SpreadPct, long Errors, long TermChanges);

public sealed record FailoverSummary(string System, int Clients, int Reps, double GapMs, double ElectionMs,
    double FirstWriteMs, double SpreadPct, long Errors);

public sealed record RecoverySummary(string System, int Keys, int Reps, double LoadSeconds, double RecoveryMs,
    double LeaderRssMb, double RecoveredRssMb, double SpreadPct);

public sealed class Summary
{
    public IReadOnlyList<RecoverySummary> Recoveries { get; init; } = [];

    /// <summary>The disk benchmark's results (one run per system, no repetitions).</summary>
    public IReadOnlyList<DiskResult> Disks { get; set; } = [];

    public RecoverySummary? Recovery(string system) => Recoveries.FirstOrDefault(r => r.System == system);

    public required IReadOnlyList<PointSummary> Points { get; init; }
    public required IReadOnlyList<FailoverSummary> Failovers { get; init; }

    public static readonly string[] SystemOrder = ["skiff", "etcd", "dotnext"];

    public IEnumerable<string> Systems =>
        Points.Select(p => p.System).Concat(Failovers.Select(f => f.System)).Concat(Recoveries.Select(r => r.System)).Distinct()
            .OrderBy(s => Array.IndexOf(SystemOrder, s) is var i && i < 0 ? 99 : i);

    public PointSummary? Find(string system, string kind, int clients) =>
        Points.FirstOrDefault(p => p.System == system && p.Kind == kind && p.Clients == clients);

    public FailoverSummary? Failover(string system) => Failovers.FirstOrDefault(f => f.System == system);

    public static double Median(IEnumerable<double> xs)
    {
        var a = xs.Where(x => !double.IsNaN(x)).Order().ToArray();
        if (a.Length == 0) return double.NaN;
        return a.Length % 2 == 1 ? a[a.Length / 2] : (a[a.Length / 2 - 1] + a[a.Length / 2]) / 2;
    }

    private static double Spread(IEnumerable<double> xs)
    {
        var a = xs.Where(x => !double.IsNaN(x)).ToArray();
        if (a.Length < 2) return 0;
        var m = Median(a);
        return m == 0 ? double.NaN : 100 * (a.Max() - a.Min()) / m;
    }

    public static Summary Of(IEnumerable<PointResult> points, IEnumerable<FailoverResult> failovers,
        IEnumerable<RecoveryResult> recoveries) => new()
        {
            Recoveries = recoveries.GroupBy(r => (r.System, r.Keys)).Select(g => new RecoverySummary(
                g.Key.System, g.Key.Keys, g.Count(), Median(g.Select(r => r.LoadSeconds)), Median(g.Select(r => r.RecoveryMs)),
                Median(g.Select(r => r.LeaderRssMb)), Median(g.Select(r => r.RecoveredRssMb)),
                Spread(g.Select(r => r.RecoveryMs)))).ToList(),
            Points = points.GroupBy(p => (p.System, p.Kind, p.Clients)).Select(g => new PointSummary(
                g.Key.System, g.Key.Kind, g.Key.Clients, g.Count(), Median(g.Select(p => p.OpsPerSec)),
                Median(g.Select(p => p.P50Ms)), Median(g.Select(p => p.P99Ms)), Median(g.Select(p => p.MaxMs)),
                Median(g.Select(p => p.ClientCpuPct)), Median(g.Select(p => p.ServerCpuPct)),
                Spread(g.Select(p => p.OpsPerSec)), g.Sum(p => p.Errors), g.Sum(p => Math.Max(0, p.TermChanges)))).ToList(),
            Failovers = failovers.GroupBy(f => (f.System, f.Clients)).Select(g => new FailoverSummary(
                g.Key.System, g.Key.Clients, g.Count(), Median(g.Select(f => f.GapMs)), Median(g.Select(f => f.ElectionMs)),
                Median(g.Select(f => f.FirstWriteMs)), Spread(g.Select(f => f.GapMs)), g.Sum(f => f.Errors))).ToList(),
        };

    public static string F(double x, int decimals = 2) =>
        double.IsNaN(x) ? "nan" : x.ToString("F" + decimals, CultureInfo.InvariantCulture);

    /// <summary>`etcd put c=64 ops_s=… p50_ms=… p99_ms=… max_ms=… client_cpu_pct=…` plus diagnostics.</summary>
    public static string Line(PointResult r) =>
        $"{r.System} {r.Kind} c={r.Clients} ops_s={F(r.OpsPerSec, 0)} p50_ms={F(r.P50Ms)} p99_ms={F(r.P99Ms)} " +
        $"max_ms={F(r.MaxMs)} client_cpu_pct={F(r.ClientCpuPct, 0)} member_cpu_pct={F(r.ServerCpuPct, 0)} " +
        $"errors={r.Errors} term_changes={(r.TermChanges < 0 ? "?" : r.TermChanges.ToString())}";

    public static string Line(FailoverResult r) =>
        $"{r.System} failover c={r.Clients} gap_ms={F(r.GapMs, 0)} election_ms={F(r.ElectionMs, 0)} " +
        $"first_write_ms={F(r.FirstWriteMs, 0)} errors={r.Errors}";

    public static string Line(RecoveryResult r) =>
        $"{r.System} recovery keys={r.Keys} recovery_ms={F(r.RecoveryMs, 0)} leader_rss_mb={F(r.LeaderRssMb, 0)} " +
        $"recovered_rss_mb={F(r.RecoveredRssMb, 0)} load_s={F(r.LoadSeconds, 1)}";

    public IEnumerable<string> Lines()
    {
        foreach (var p in Points)
            yield return $"{p.System} {p.Kind} c={p.Clients} ops_s={F(p.OpsPerSec, 0)} p50_ms={F(p.P50Ms)} " +
                         $"p99_ms={F(p.P99Ms)} max_ms={F(p.MaxMs)} client_cpu_pct={F(p.ClientCpuPct, 0)} " +
                         $"member_cpu_pct={F(p.ServerCpuPct, 0)} spread_pct={F(p.SpreadPct, 0)} reps={p.Reps}";
        foreach (var f in Failovers)
            yield return $"{f.System} failover c={f.Clients} gap_ms={F(f.GapMs, 0)} election_ms={F(f.ElectionMs, 0)} " +
                         $"first_write_ms={F(f.FirstWriteMs, 0)} spread_pct={F(f.SpreadPct, 0)} reps={f.Reps}";
        foreach (var r in Recoveries)
            yield return $"{r.System} recovery keys={r.Keys} recovery_ms={F(r.RecoveryMs, 0)} " +
                         $"leader_rss_mb={F(r.LeaderRssMb, 0)} recovered_rss_mb={F(r.RecoveredRssMb, 0)} " +
                         $"load_s={F(r.LoadSeconds, 1)} spread_pct={F(r.SpreadPct, 0)} reps={r.Reps}";
    }
}
