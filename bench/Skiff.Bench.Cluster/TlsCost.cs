using System.Text;
using static Skiff.Bench.Cluster.Summary;

namespace Skiff.Bench.Cluster;

/// <summary>The report's "TLS cost" section: each system with TLS (client TLS, mutual TLS between members) beside
/// the same system in plain text, from the same run, at every write point.</summary>
internal static class TlsCost
{
    private static readonly (string Plain, string Tls)[] Pairs = [("skiff", "skiff-tls"), ("etcd", "etcd-tls")];

    public static void Append(StringBuilder md, Summary s)
    {
        var pairs = Pairs.Where(p => s.Systems.Contains(p.Tls) && s.Systems.Contains(p.Plain)).ToArray();
        if (pairs.Length == 0) return;
        var title = SystemNames.Title;
        md.AppendLine("### TLS cost (writes)");
        md.AppendLine();
        md.AppendLine("The same members with TLS 1.3 on the client port and mutual TLS between members (certificates made for the run, " +
                      "ECDSA P-256), beside their plain-text rows above. Cells: writes/s, then p50 / p99 ms; the ratio is TLS over plain " +
                      "for throughput, then for p50.");
        md.AppendLine();
        md.AppendLine("| point | " + string.Join(" | ", pairs.Select(p => $"{title(p.Plain)} | {title(p.Tls)} | ratio")) + " |");
        md.AppendLine("|---|" + string.Concat(Enumerable.Repeat("---:|", pairs.Length * 3)));
        foreach (var c in s.Points.Where(p => p.Kind == "put").Select(p => p.Clients).Distinct().Order())
        {
            string Cell(PointSummary? p) => p == null ? "–" : $"{F(p.OpsPerSec, 0)} ({F(p.P50Ms)} / {F(p.P99Ms)})";
            string Ratio(PointSummary? plain, PointSummary? tls) =>
                plain == null || tls == null || plain.OpsPerSec == 0 || plain.P50Ms == 0 ? "n/a"
                    : $"{tls.OpsPerSec / plain.OpsPerSec:F2}×, {tls.P50Ms / plain.P50Ms:F2}×";
            var cells = pairs.Select(p =>
            {
                var plain = s.Find(p.Plain, "put", c);
                var tls = s.Find(p.Tls, "put", c);
                return $"{Cell(plain)} | {Cell(tls)} | {Ratio(plain, tls)}";
            });
            md.AppendLine($"| writes, C = {c} | {string.Join(" | ", cells)} |");
        }
        md.AppendLine();
    }
}
