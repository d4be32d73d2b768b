using System.Diagnostics;
using System.Globalization;
using Skiff.Bench.Cluster.Systems;

namespace Skiff.Bench.Cluster;

/// <summary>The longest time a snapshot stopped applying on any member, as the members' own meters recorded it.</summary>
/// <param name="MaxMs">The largest pause seen (ms).</param>
/// <param name="Seconds">Seconds in which some member finished a snapshot.</param>
/// <param name="OwnMaxMs">The largest pause less the garbage collector's pauses inside it (ms): the snapshot's own
/// work. Null if the members did not record that share (<c>skiff.snapshot_pause_gc</c>).</param>
/// <param name="WorkMaxMs">The largest of the snapshots' own work (<c>skiff.snapshot_pause_work</c>): each pause less
/// the collector's pauses inside it and less the time applying was runnable but waiting for a core (on this machine,
/// three members and the load generator share two cores). Null if the members did not record it.</param>
public sealed record SnapshotPauses(double MaxMs, int Seconds, double? OwnMaxMs = null, double? WorkMaxMs = null);

/// <summary>
/// Issue #16's "no snapshot stops applying for more than 10 ms", measured on the members of the disk benchmark, where
/// snapshots happen (one every 8 MiB of log: about one a second there), rather than in a benchmark of its own. Every Skiff member
/// records each snapshot's pause on its <c>Skiff</c> meter (<c>skiff.snapshot_pause</c>); dotnet-counters (a tool of
/// the repository's manifest: <c>dotnet tool restore</c>) reads it from outside, as an operator would, one session
/// per member, once a second. Its p99 of a second holding one or two snapshots is their largest pause, so the largest
/// p99 is the longest pause.
/// </summary>
internal sealed class SnapshotPauseWatch
{
    private const string Instrument = "skiff.snapshot_pause";
    // The collector's share of each pause, recorded just before it: a collection stops every thread, snapshot or not.
    private const string GcInstrument = "skiff.snapshot_pause_gc";
    // Each pause's own work, as its member measured it (the pause less collections and waits for a core): one value
    // per snapshot, so no pairing of seconds is needed.
    private const string WorkInstrument = "skiff.snapshot_pause_work";
    private readonly List<(Process Session, string Csv)> _sessions = [];
    private readonly System.Collections.Concurrent.ConcurrentQueue<string> _output = new();

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
            // Its input must be /dev/null: with a pipe there it fails at SIGINT without writing its file (seen here).
            // `exec` makes the process started dotnet-counters itself, so that a kill after the deadline reaches it.
            var psi = new ProcessStartInfo("sh",
                ["-c", "exec dotnet dotnet-counters collect -p \"$0\" --counters \"$1\" --refresh-interval 1 --format csv -o \"$2\" < /dev/null",
                 pid.ToString(CultureInfo.InvariantCulture), $"Skiff[{Instrument},{GcInstrument},{WorkInstrument}]", csv])
            {
                WorkingDirectory = root, // where the tool manifest is
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            var session = Process.Start(psi) ?? throw new InvalidOperationException("dotnet-counters did not start");
            session.OutputDataReceived += (_, e) => watch.Keep(e.Data);
            session.ErrorDataReceived += (_, e) => watch.Keep(e.Data);
            session.BeginOutputReadLine();
            session.BeginErrorReadLine();
            watch._sessions.Add((session, csv));
        }
        return watch;
    }

    /// <summary>Keeps the sessions' last lines of output: they say why nothing was measured, when nothing was.</summary>
    private void Keep(string? line)
    {
        if (string.IsNullOrWhiteSpace(line)) return;
        _output.Enqueue(line);
        while (_output.Count > 10) _output.TryDequeue(out _);
    }

    /// <summary>Reads what the sessions saw, once the members have stopped: a session ends when its member does, and
    /// only then writes its file (SIGINT would end it too, but a process started in the background ignores SIGINT,
    /// and so does everything it starts). A session still running after 15 s is killed. Null if no session wrote a
    /// snapshot's pause (none was taken, or the tool is missing).</summary>
    public async Task<SnapshotPauses?> StopAsync()
    {
        foreach (var (session, _) in _sessions)
        {
            using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(15));
            try { await session.WaitForExitAsync(deadline.Token); }
            catch (OperationCanceledException) { session.Kill(); }
            session.Dispose();
        }
        var csvs = _sessions.Select(s => s.Csv).Where(File.Exists).ToList();
        var pauses = csvs.Count == 0 ? null : Read(csvs.Select(File.ReadLines));
        if (pauses is null)
            Console.WriteLine($"# snapshot pauses not measured (no snapshot seen, or dotnet-counters failed: {string.Join(" | ", _output)})");
        return pauses;
    }

    /// <summary>Reads dotnet-counters' CSV lines, one sequence per member (<c>Timestamp,Provider,Counter Name,Counter
    /// Type,Mean/Increment</c>; a histogram's name carries its tags and percentile in brackets). A second's p99 of the
    /// GC share goes with the same second's p99 of the pause: with one snapshot in the second, they are its pause and
    /// the collections inside it.</summary>
    internal static SnapshotPauses? Read(IEnumerable<IEnumerable<string>> members)
    {
        double max = double.NaN, ownMax = double.NaN, workMax = double.NaN;
        var seconds = new HashSet<string>();
        foreach (var lines in members)
        {
            var pause = new Dictionary<string, double>();
            var gc = new Dictionary<string, double>();
            foreach (var line in lines)
            {
                var fields = line.Split(',');
                if (fields.Length < 5 || !fields[2].Contains("[Percentile=99]", StringComparison.Ordinal)) continue;
                if (!double.TryParse(fields[^1], NumberStyles.Float, CultureInfo.InvariantCulture, out var ms)) continue;
                if (fields[2].StartsWith(GcInstrument + " ", StringComparison.Ordinal)) gc[fields[0]] = ms;
                else if (fields[2].StartsWith(WorkInstrument + " ", StringComparison.Ordinal))
                    workMax = double.IsNaN(workMax) ? ms : Math.Max(workMax, ms);
                else if (fields[2].StartsWith(Instrument + " ", StringComparison.Ordinal)) pause[fields[0]] = ms;
            }
            foreach (var (second, ms) in pause)
            {
                max = double.IsNaN(max) ? ms : Math.Max(max, ms);
                seconds.Add(second);
                if (gc.TryGetValue(second, out var collecting))
                    ownMax = double.IsNaN(ownMax) ? ms - collecting : Math.Max(ownMax, ms - collecting);
            }
        }
        return double.IsNaN(max)
            ? null
            : new SnapshotPauses(max, seconds.Count, double.IsNaN(ownMax) ? null : ownMax, double.IsNaN(workMax) ? null : workMax);
    }
}
