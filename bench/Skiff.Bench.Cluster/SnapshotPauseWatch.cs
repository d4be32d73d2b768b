using System.Diagnostics;
using System.Globalization;
using Skiff.Bench.Cluster.Systems;

namespace Skiff.Bench.Cluster;

/// <summary>The longest time a snapshot stopped applying on any member, as the members' own meters recorded it.</summary>
/// <param name="MaxMs">The largest pause seen (ms).</param>
/// <param name="Seconds">Seconds in which some member finished a snapshot.</param>
public sealed record SnapshotPauses(double MaxMs, int Seconds);

/// <summary>
/// Issue #16's "no snapshot stops applying for more than 10 ms", measured on the members of the disk benchmark, where
/// snapshots happen (one every 100,000 entries or so), rather than in a benchmark of its own. Every Skiff member
/// records each snapshot's pause on its <c>Skiff</c> meter (<c>skiff.snapshot_pause</c>); dotnet-counters (a tool of
/// the repository's manifest: <c>dotnet tool restore</c>) reads it from outside, as an operator would, one session
/// per member, once a second. Its p99 of a second holding one or two snapshots is their largest pause, so the largest
/// p99 is the longest pause.
/// </summary>
internal sealed class SnapshotPauseWatch
{
    private const string Instrument = "skiff.snapshot_pause";
    private readonly List<(Process Session, string Csv)> _sessions = [];

    private SnapshotPauseWatch() { }

    /// <summary>Starts a session on each member of a Skiff system (null for other systems).</summary>
    public static SnapshotPauseWatch? Start(IBenchSystem sys, string root, string dir)
    {
        if (!sys.Name.StartsWith("skiff", StringComparison.Ordinal)) return null;
        Directory.CreateDirectory(dir);
        var watch = new SnapshotPauseWatch();
        foreach (var pid in sys.MemberPids)
        {
            var csv = Path.Combine(dir, $"{sys.Name}-{pid}.csv");
            var psi = new ProcessStartInfo("dotnet",
                ["dotnet-counters", "collect", "-p", pid.ToString(CultureInfo.InvariantCulture), "--counters", $"Skiff[{Instrument}]",
                 "--refresh-interval", "1", "--format", "csv", "-o", csv])
            {
                WorkingDirectory = root, // where the tool manifest is
                RedirectStandardInput = true,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            var session = Process.Start(psi) ?? throw new InvalidOperationException("dotnet-counters did not start");
            session.OutputDataReceived += (_, _) => { };
            session.ErrorDataReceived += (_, _) => { };
            session.BeginOutputReadLine();
            session.BeginErrorReadLine();
            watch._sessions.Add((session, csv));
        }
        return watch;
    }

    /// <summary>Ends the sessions (SIGINT: dotnet-counters then writes out what it has) and reads what they saw;
    /// null if no session wrote anything (the tool is missing, say).</summary>
    public async Task<SnapshotPauses?> StopAsync()
    {
        foreach (var (session, _) in _sessions)
        {
            if (session.HasExited) continue;
            using var interrupt = Process.Start("kill", ["-INT", session.Id.ToString(CultureInfo.InvariantCulture)]);
            await interrupt.WaitForExitAsync();
        }
        foreach (var (session, _) in _sessions)
        {
            using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(15));
            try { await session.WaitForExitAsync(deadline.Token); }
            catch (OperationCanceledException) { session.Kill(); }
            session.Dispose();
        }
        var csvs = _sessions.Select(s => s.Csv).Where(File.Exists).ToList();
        return csvs.Count == 0 ? null : Read(csvs.SelectMany(File.ReadLines));
    }

    /// <summary>Reads dotnet-counters' CSV lines (<c>Timestamp,Provider,Counter Name,Counter Type,Mean/Increment</c>;
    /// a histogram's name carries its tags and percentile in brackets).</summary>
    internal static SnapshotPauses? Read(IEnumerable<string> lines)
    {
        double max = double.NaN;
        var seconds = new HashSet<string>();
        foreach (var line in lines)
        {
            var fields = line.Split(',');
            if (fields.Length < 5 || !fields[2].StartsWith(Instrument + " ", StringComparison.Ordinal)) continue;
            if (!double.TryParse(fields[^1], NumberStyles.Float, CultureInfo.InvariantCulture, out var ms)) continue;
            max = double.IsNaN(max) ? ms : Math.Max(max, ms);
            seconds.Add(fields[0]);
        }
        return double.IsNaN(max) ? null : new SnapshotPauses(max, seconds.Count);
    }
}
