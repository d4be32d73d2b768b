using ScottPlot;

namespace Skiff.Bench.Cluster;

/// <summary>Two small PNGs next to benchmarks.md: write throughput against clients, and write latency percentiles.</summary>
internal static class Charts
{
    internal static readonly Dictionary<string, Color> Colors = new()
    {
        ["skiff"] = new Color(0x1f, 0x77, 0xb4),
        ["skiff-embedded"] = new Color(0x94, 0x67, 0xbd),
        ["etcd"] = new Color(0xd6, 0x27, 0x28),
        ["dotnext"] = new Color(0x2c, 0xa0, 0x2c),
    };

    private static string Title(string sys) => SystemNames.Title(sys);

    /// <summary>Draws the charts; <paramref name="pointsLabel"/> and <paramref name="diskLabel"/> say what their
    /// figures are (medians of the repetitions, one disk run per system).</summary>
    public static IReadOnlyList<string> Write(Summary s, string dir, string pointsLabel, string diskLabel)
    {
        var clients = s.Points.Where(p => p.Kind == "put").Select(p => p.Clients).Distinct().Order().ToArray();
        if (clients.Length == 0)
        {
            // A disk-only run (--reps 0) still gets its chart.
            var only = DiskReport.Draw(s.Disks, dir, diskLabel, Colors);
            return only is null ? [] : [only];
        }
        // Evenly spaced positions labelled with the client counts (1, 16, 64, 256 are far apart on any linear axis).
        double[] xs = clients.Select((_, i) => (double)i).ToArray();
        string[] labels = clients.Select(c => c.ToString()).ToArray();

        var throughput = new Plot();
        var latency = new Plot();
        // The TLS rows have a table of their own; the charts compare the systems.
        foreach (var sys in s.Systems.Where(sys => !sys.EndsWith("-tls", StringComparison.Ordinal)))
        {
            var pts = clients.Select(c => s.Find(sys, "put", c)).ToArray();
            var color = Colors.GetValueOrDefault(sys, new Color(0x55, 0x55, 0x55));
            var ops = throughput.Add.Scatter(xs, pts.Select(p => p?.OpsPerSec ?? double.NaN).ToArray());
            ops.LegendText = Title(sys);
            ops.Color = color;
            ops.LineWidth = 2;
            ops.MarkerSize = 7;

            var p50 = latency.Add.Scatter(xs, pts.Select(p => p?.P50Ms ?? double.NaN).ToArray());
            p50.LegendText = $"{Title(sys)} p50";
            p50.Color = color;
            p50.LineWidth = 2;
            var p99 = latency.Add.Scatter(xs, pts.Select(p => p?.P99Ms ?? double.NaN).ToArray());
            p99.LegendText = $"{Title(sys)} p99";
            p99.Color = color;
            p99.LineWidth = 2;
            p99.LinePattern = LinePattern.Dashed;
            p99.MarkerShape = MarkerShape.OpenSquare;
        }

        foreach (var (plot, title, y) in new[]
                 {
                     (throughput, "Writes: throughput against closed-loop clients", "writes per second"),
                     (latency, "Writes: latency percentiles against closed-loop clients", "latency (ms)"),
                 })
        {
            plot.Title($"{title}\n{pointsLabel}");
            plot.XLabel("clients (one request in flight each)");
            plot.YLabel(y);
            plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(xs, labels);
            plot.Axes.AutoScale();
            var limits = plot.Axes.GetLimits();
            plot.Axes.SetLimits(-0.3, xs.Length - 0.7, 0, limits.Top);
            plot.ShowLegend(Alignment.UpperLeft);
        }

        throughput.SavePng(Path.Combine(dir, "benchmarks-cluster-throughput.png"), 760, 420);
        latency.SavePng(Path.Combine(dir, "benchmarks-cluster-latency.png"), 760, 420);
        var disk = DiskReport.Draw(s.Disks, dir, diskLabel, Colors);
        return disk is null
            ? ["benchmarks-cluster-throughput.png", "benchmarks-cluster-latency.png"]
            : ["benchmarks-cluster-throughput.png", "benchmarks-cluster-latency.png", disk];
    }
}
