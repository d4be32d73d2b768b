using System.Text;
using static Skiff.Bench.Cluster.Summary;

namespace Skiff.Bench.Cluster;

/// <summary>
/// Writes the cluster section of docs/benchmarks.md between its markers, leaving the rest of the file (other
/// benchmarks' sections) alone. Ratio columns say "n/a" until results named "skiff" exist.
/// </summary>
internal static class Report
{
    private const string Begin = "<!-- cluster-bench:begin (written by bench/Skiff.Bench.Cluster; edits inside are overwritten) -->";
    private const string End = "<!-- cluster-bench:end -->";

    private static readonly (string Kind, int Clients, string Label)[] Rows =
    [
        ("put", 1, "writes, C = 1"), ("put", 16, "writes, C = 16"), ("put", 64, "writes, C = 64"),
        ("put", 256, "writes, C = 256"), ("get-lin", 64, "linearizable reads, C = 64"),
        ("get-stale", 64, "stale reads, C = 64"),
    ];

    private static string Ratio(double skiff, double peer) =>
        double.IsNaN(skiff) || double.IsNaN(peer) || peer == 0 ? "n/a" : $"{skiff / peer:F2}×";

    private static string Cell(PointSummary? p, Func<PointSummary, double> f, int decimals) => p == null ? "–" : F(f(p), decimals);

    public static string Write(string path, Summary s, DateTime started, string machine, Options o,
        IReadOnlyDictionary<string, string> descriptions, IReadOnlyList<string> failures, IReadOnlyList<string> charts)
    {
        var peers = new[] { "etcd", "dotnext" };
        // Skiff as `skiff serve` members always has its columns; embedded members only when measured.
        var skiffs = new[] { "skiff", "skiff-embedded" }.Where(sys => sys == "skiff" || s.Systems.Contains(sys)).ToArray();
        var all = skiffs.Concat(peers).ToArray();
        var title = SystemNames.Title;
        var header = "| point | " + string.Join(" | ", all.Select(title)) + " | "
            + string.Join(" | ", skiffs.SelectMany(k => peers.Select(p => $"{title(k)}/{title(p)}"))) + " |";
        var rule = "|---|" + string.Concat(Enumerable.Repeat("---:|", all.Length + skiffs.Length * peers.Length));
        var md = new StringBuilder();
        md.AppendLine(Begin);
        md.AppendLine("## Cluster: Skiff side by side with etcd and DotNext.Net.Cluster");
        md.AppendLine();
        md.AppendLine($"Run {started:yyyy-MM-dd HH:mm} UTC{(o.Quick ? " in **--quick** mode (a smoke test of the harness, not a measurement)" : "")}; " +
                      $"{o.Reps} repetition(s) of {o.Duration.TotalSeconds:0.#} s after a {o.Warmup.TotalSeconds:0.#} s warm-up per point " +
                      $"(and {o.Settle.TotalSeconds:0.#} s of unmeasured writes after each cluster starts); medians; ±x% is half the spread (max − min) / median.");
        md.AppendLine($"Machine: {machine}.");
        md.AppendLine("Load: three members of each system on 127.0.0.1–127.0.0.3, C closed-loop clients (one request in flight each) " +
                      "in one harness process, 16-byte distinct keys, 100-byte values, all to the leader. Everything shares the " +
                      "machine's cores, so the client's own CPU is part of every number: only a side-by-side comparison in one run means anything.");
        md.AppendLine();
        foreach (var sys in all.Where(descriptions.ContainsKey))
            md.AppendLine($"- **{title(sys)}**: {descriptions[sys]}.");
        if (!descriptions.ContainsKey("skiff"))
            md.AppendLine("- **Skiff**: not measured yet (its adapter waits for `skiff serve`); the Skiff columns and ratios say n/a until then.");
        md.AppendLine();
        var command = ("dotnet run --project bench/Skiff.Bench.Cluster -c Release -- " + o.CommandLine).TrimEnd(' ', '-').TrimEnd();
        md.AppendLine($"Command: `{command}`");
        md.AppendLine();

        md.AppendLine("### Throughput (ops/s)");
        md.AppendLine();
        md.AppendLine(header);
        md.AppendLine(rule);
        foreach (var (kind, c, label) in Rows)
        {
            string Ops(PointSummary? p) => p == null ? "–" : $"{F(p.OpsPerSec, 0)}{(p.Reps > 1 ? $" ±{F(p.SpreadPct / 2, 0)}%" : "")}";
            var ratios = skiffs.SelectMany(k => peers.Select(peer =>
                Ratio(s.Find(k, kind, c)?.OpsPerSec ?? double.NaN, s.Find(peer, kind, c)?.OpsPerSec ?? double.NaN)));
            md.AppendLine($"| {label} | {string.Join(" | ", all.Select(sys => Ops(s.Find(sys, kind, c))))} | {string.Join(" | ", ratios)} |");
        }
        md.AppendLine();

        md.AppendLine("### Latency (ms: p50 / p99 / max; ratios: p50, p99)");
        md.AppendLine();
        md.AppendLine(header);
        md.AppendLine(rule);
        foreach (var (kind, c, label) in Rows)
        {
            string Lat(PointSummary? p) => p == null ? "–" : $"{F(p.P50Ms)} / {F(p.P99Ms)} / {F(p.MaxMs, 1)}";
            string R(PointSummary? a, PointSummary? b) =>
                a == null || b == null ? "n/a" : $"{Ratio(a.P50Ms, b.P50Ms)}, {Ratio(a.P99Ms, b.P99Ms)}";
            var ratios = skiffs.SelectMany(k => peers.Select(peer => R(s.Find(k, kind, c), s.Find(peer, kind, c))));
            md.AppendLine($"| {label} | {string.Join(" | ", all.Select(sys => Lat(s.Find(sys, kind, c))))} | {string.Join(" | ", ratios)} |");
        }
        md.AppendLine();

        TlsCost.Append(md, s);

        md.AppendLine("### Failover (16 writers, 100 ms client deadline, SIGKILL the leader)");
        md.AppendLine();
        md.AppendLine("Gap: the longest time between two successful writes around the kill. Election: kill until a surviving member " +
                      "says it is the leader (polled every 10 ms). First write: kill until the first write that started after the kill succeeds. " +
                      "Writers switch to the new leader once it is seen.");
        md.AppendLine();
        md.AppendLine("| system | gap ms | election ms | first write ms |");
        md.AppendLine("|---|---:|---:|---:|");
        foreach (var sys in all)
        {
            var f = s.Failover(sys);
            md.AppendLine(f == null
                ? $"| {title(sys)} | – | – | – |"
                : $"| {title(sys)} | {F(f.GapMs, 0)}{(f.Reps > 1 ? $" ±{F(f.SpreadPct / 2, 0)}%" : "")} | {F(f.ElectionMs, 0)} | {F(f.FirstWriteMs, 0)} |");
        }
        md.AppendLine();
        foreach (var k in skiffs)
        {
            var sf = s.Failover(k);
            md.AppendLine($"Gap ratios: {title(k)}/etcd {Ratio(sf?.GapMs ?? double.NaN, s.Failover("etcd")?.GapMs ?? double.NaN)}, " +
                          $"{title(k)}/DotNext {Ratio(sf?.GapMs ?? double.NaN, s.Failover("dotnext")?.GapMs ?? double.NaN)}.");
        }
        md.AppendLine();

        md.AppendLine("### Recovery and memory");
        md.AppendLine();
        if (s.Recoveries.Count == 0)
            md.AppendLine("Not measured in this run (`--recovery-keys N`; --quick skips it).");
        else
        {
            md.AppendLine("Load N keys of 100 bytes (batched, only to get there), SIGKILL a follower, start it again on its data, and time " +
                          "until it serves the keys from its own state. Memory: VmRSS, so pages of memory-mapped files count.");
            md.AppendLine();
            md.AppendLine("| system | keys | recovery ms | leader RSS MiB | recovered member RSS MiB | load s |");
            md.AppendLine("|---|---:|---:|---:|---:|---:|");
            foreach (var sys in all)
            {
                var r = s.Recovery(sys);
                md.AppendLine(r == null
                    ? $"| {title(sys)} | – | – | – | – | – |"
                    : $"| {title(sys)} | {r.Keys:N0} | {F(r.RecoveryMs, 0)}{(r.Reps > 1 ? $" ±{F(r.SpreadPct / 2, 0)}%" : "")} | " +
                      $"{F(r.LeaderRssMb, 0)} | {F(r.RecoveredRssMb, 0)} | {F(r.LoadSeconds, 1)} |");
            }
            md.AppendLine();
            foreach (var k in skiffs)
            {
                var sr = s.Recovery(k);
                md.AppendLine($"Recovery ratios: {title(k)}/etcd {Ratio(sr?.RecoveryMs ?? double.NaN, s.Recovery("etcd")?.RecoveryMs ?? double.NaN)}, " +
                              $"{title(k)}/DotNext {Ratio(sr?.RecoveryMs ?? double.NaN, s.Recovery("dotnext")?.RecoveryMs ?? double.NaN)}; " +
                              $"memory {title(k)}/etcd {Ratio(sr?.LeaderRssMb ?? double.NaN, s.Recovery("etcd")?.LeaderRssMb ?? double.NaN)}, " +
                              $"{title(k)}/DotNext {Ratio(sr?.LeaderRssMb ?? double.NaN, s.Recovery("dotnext")?.LeaderRssMb ?? double.NaN)}.");
            }
        }
        md.AppendLine();

        DiskReport.Append(md, s.Disks);

        md.AppendLine("### CPU (% of one core over each point: load generator / all three members)");
        md.AppendLine();
        md.AppendLine("| point | " + string.Join(" | ", all.Select(title)) + " |");
        md.AppendLine("|---|" + string.Concat(Enumerable.Repeat("---:|", all.Length)));
        foreach (var (kind, c, label) in Rows)
        {
            string Cpu(string sys) => s.Find(sys, kind, c) is { } p ? $"{F(p.ClientCpuPct, 0)} / {F(p.ServerCpuPct, 0)}" : "–";
            md.AppendLine($"| {label} | {string.Join(" | ", all.Select(Cpu))} |");
        }
        md.AppendLine();

        var troubled = s.Points.Where(p => p.Errors > 0 || p.TermChanges > 0).ToList();
        if (troubled.Count > 0 || failures.Count > 0)
        {
            md.AppendLine("### Anomalies in this run");
            md.AppendLine();
            foreach (var p in troubled)
                md.AppendLine($"- {title(p.System)} {p.Kind} C = {p.Clients}: {p.Errors} failed calls, {p.TermChanges} term change(s) during the point.");
            foreach (var f in failures) md.AppendLine($"- {f}");
            md.AppendLine();
        }

        md.AppendLine("### The bar (issue #7)");
        md.AppendLine();
        foreach (var k in skiffs)
            foreach (var line in Bars(s, k)) md.AppendLine($"- {title(k)}: " + line);
        md.AppendLine();

        if (charts.Count > 0)
        {
            md.AppendLine("### Charts");
            md.AppendLine();
            foreach (var c in charts) md.AppendLine($"![{Path.GetFileNameWithoutExtension(c)}]({c})");
            md.AppendLine();
        }
        md.AppendLine(End);

        var section = md.ToString();
        string text;
        if (File.Exists(path))
        {
            var old = File.ReadAllText(path);
            int b = old.IndexOf(Begin.Split(' ')[0] + " " + Begin.Split(' ')[1], StringComparison.Ordinal);
            int e = old.IndexOf(End, StringComparison.Ordinal);
            text = b >= 0 && e > b
                ? old[..b] + section + old[(e + End.Length)..].TrimStart('\r', '\n').Insert(0, "\n")
                : old.TrimEnd() + "\n\n" + section;
        }
        else
        {
            text = "# Benchmarks\n\nEach section is written by the benchmark that measured it; rerun it rather than editing by hand.\n\n" + section;
        }
        File.WriteAllText(path, text.TrimEnd() + "\n");
        return path;
    }

    /// <summary>Each bar from the issue with its measured ratio, or why it cannot be judged yet.</summary>
    private static IEnumerable<string> Bars(Summary s, string skiff)
    {
        PointSummary? P(string sys, string k, int c) => s.Find(sys, k, c);
        string Judge(string what, Func<PointSummary, double> metric, string kind, int c, string peer, double factor, bool higherIsBetter)
        {
            var a = P(skiff, kind, c);
            var b = P(peer, kind, c);
            if (a == null) return $"{what}: n/a (Skiff not measured)";
            if (b == null) return $"{what}: n/a ({(peer == "etcd" ? "etcd" : "DotNext")} not measured)";
            var r = metric(a) / metric(b);
            bool met = higherIsBetter ? r >= factor : r <= factor;
            return $"{what}: {r:F2}× — {(met ? "met" : "NOT met")}";
        }
        yield return Judge("writes ≥ 2× etcd at C = 64", p => p.OpsPerSec, "put", 64, "etcd", 2, true);
        yield return Judge("writes ≥ 2× etcd at C = 256", p => p.OpsPerSec, "put", 256, "etcd", 2, true);
        yield return Judge("writes ≥ DotNext at C = 64", p => p.OpsPerSec, "put", 64, "dotnext", 1, true);
        yield return Judge("writes ≥ DotNext at C = 256", p => p.OpsPerSec, "put", 256, "dotnext", 1, true);
        foreach (var c in new[] { 64, 256 })
            foreach (var peer in new[] { "etcd", "dotnext" })
                yield return Judge($"write p99 ≤ {(peer == "etcd" ? "etcd" : "DotNext")}'s at C = {c}", p => p.P99Ms, "put", c, peer, 1, false);
        yield return Judge("one-client write p50 ≤ etcd's", p => p.P50Ms, "put", 1, "etcd", 1, false);
        yield return Judge("one-client write p50 ≤ DotNext's", p => p.P50Ms, "put", 1, "dotnext", 1, false);
        yield return Judge("linearizable reads ≥ 2× etcd at C = 64", p => p.OpsPerSec, "get-lin", 64, "etcd", 2, true);
        var sf = s.Failover(skiff);
        var ef = s.Failover("etcd");
        yield return sf == null ? "failover gap ≤ etcd's: n/a (Skiff not measured)"
            : ef == null ? "failover gap ≤ etcd's: n/a (etcd not measured)"
            : $"failover gap ≤ etcd's: {sf.GapMs / ef.GapMs:F2}× — {(sf.GapMs <= ef.GapMs ? "met" : "NOT met")}";
    }
}

/// <summary>How the report and the charts name each system.</summary>
internal static class SystemNames
{
    public static string Title(string sys) => sys switch
    {
        "etcd" => "etcd",
        "dotnext" => "DotNext",
        "skiff-embedded" => "Skiff embedded",
        "skiff-tls" => "Skiff TLS",
        "etcd-tls" => "etcd TLS",
        _ => "Skiff",
    };
}
