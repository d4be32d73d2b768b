// The side-by-side cluster benchmark (issue #7). For each repetition, for each system: start three fresh members on
// 127.0.0.1-127.0.0.3, find the leader, run the points (writes at C = 1/16/64/256, linearizable and stale reads at
// C = 64), then the failover point (SIGKILL the leader), stop. Systems alternate order between repetitions.
// Prints one line per measurement, then the medians; writes docs/benchmarks.md (its cluster section) and PNG charts.
//
//   dotnet run --project bench/Skiff.Bench.Cluster -c Release -- [--quick] [options]
//   --quick               one repetition, 3 s points, 0.5 s warm-up, 6 s settle (the smoke-test mode)
//   --reps N              repetitions (default 3)        --duration S / --warmup S (default 10 / 1)
//   --settle S            unmeasured writes at C = 16 after each cluster starts (default 5): a fresh .NET member
//                         spends seconds in tiered JIT on a busy 2-core machine, which would land on C = 1
//   --systems a,b         skiff,etcd,dotnext,skiff-tls,etcd-tls (the default); also skiff-embedded (members embedded through Builder
//                         in a console application with every default). skiff-tls and etcd-tls: TLS for clients
//                         and mutual TLS between members; write points only, reported as the cost of TLS
//   --clients 1,16,...    write points (default 1,16,64,256)      --read-clients N (default 64)
//   --skip-reads --skip-failover --no-report
//   --recovery-keys N     load N keys, SIGKILL a follower, time its restart until it serves them, and read the
//                         members' resident memory (default 1,000,000; 0 skips it, as --quick does)
//   --disk-overwrites N   the disk benchmark: N overwrites of --disk-keys K keys (default 10,000,000 of 10,000) with
//                         --disk-value B-byte values (default 1024) by 64 writers, on a fresh cluster per system,
//                         then --disk-idle S seconds idle (default 60); the largest member directory is sampled every
//                         second (0 skips it; --quick runs 20,000)
//   --heartbeat MS --election MS      etcd (and Skiff) timeouts, default 50 / 300
//   --dotnext-timeouts L-U/H          DotNext election lower-upper and heartbeat, default 300-600/50 (the same)
//   --dotnext-wal shared|private      DotNext WAL memory strategy (default shared)
//   --docs DIR            where benchmarks.md and the charts go (default docs)
//   --report-from FILE    redraw benchmarks.md and the charts from a run's raw results (bench/results/*.json)
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.Json;
using Skiff.Bench.Cluster;
using Skiff.Bench.Cluster.Systems;

CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;

var o = Options.Parse(args);
var root = Repo.Root();
var jsonOptions = new JsonSerializerOptions
{
    WriteIndented = true,
    PropertyNameCaseInsensitive = true,
    NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
};

RunRecord run;
var interrupted = false;
if (o.ReportFrom is { } from)
{
    // Redraw the report and charts from an earlier run's raw results (bench/results/*.json), measuring nothing.
    run = JsonSerializer.Deserialize<RunRecord>(File.ReadAllText(from), jsonOptions)
          ?? throw new InvalidDataException($"{from} holds no run");
    if (run.Options == null || run.Points == null)
        throw new InvalidDataException($"{from} was written by an older harness (no options or points in it)");
    run = run with { Options = run.Options with { Docs = o.Docs, NoReport = false } };
}
else
{
    var measured = await MeasureAsync(o, root);
    if (measured == null) return 2;
    run = measured;
    interrupted = run.Interrupted;
    var resultsDir = Path.Combine(root, "bench", "results");
    Directory.CreateDirectory(resultsDir);
    var json = Path.Combine(resultsDir, $"cluster-{run.Started:yyyyMMdd-HHmmss}.json");
    File.WriteAllText(json, JsonSerializer.Serialize(run, jsonOptions));
    Console.WriteLine($"# raw results: {Path.GetRelativePath(root, json)}");
}
o = run.Options;
var (started, machine, points, failovers, failures, descriptions) =
    (run.Started, run.Machine, run.Points, run.Failovers, run.Failures, run.Descriptions);

var summary = Summary.Of(points, failovers, run.Recoveries ?? []);
summary.Disks = run.Disks ?? [];
foreach (var d in summary.Disks) Console.WriteLine(DiskGrowth.Line(d));
Console.WriteLine($"# medians over {o.Reps} repetition(s); spread = (max - min) / median of ops_s (gap_ms for failover)");
foreach (var line in summary.Lines()) Console.WriteLine(line);

if (points.Count == 0 && failovers.Count == 0 && (run.Recoveries ?? []).Count == 0 && summary.Disks.Count == 0)
    Console.WriteLine("# nothing was measured: docs/benchmarks.md left as it was");
else if (interrupted)
    Console.WriteLine("# interrupted: docs/benchmarks.md left as it was (the raw results above hold what was measured; " +
                      "--report-from FILE writes the report from them)");
else if (!o.NoReport)
{
    var docs = Path.Combine(root, o.Docs);
    Directory.CreateDirectory(docs);
    IReadOnlyList<string> charts = [];
    // The points are medians of the repetitions; the disk benchmark runs once per system, after them.
    string Label(string what) => $"{started:yyyy-MM-dd HH:mm} UTC, {(o.Quick ? "--quick (smoke test, not a measurement)" : what)}, {Environment.ProcessorCount} cores";
    try { charts = Charts.Write(summary, docs, Label($"median of {o.Reps}"), Label("one run per system")); }
    catch (Exception e) when (e is not OperationCanceledException)
    {
        // The table matters more than the pictures: a missing native drawing library must not lose the run.
        failures.Add($"charts not drawn: {e.GetType().Name}: {e.Message}");
        Console.WriteLine("# " + failures[^1]);
    }
    var md = Report.Write(Path.Combine(docs, "benchmarks.md"), summary, started, machine, o, descriptions, failures, charts);
    Console.WriteLine($"# wrote {Path.GetRelativePath(root, md)} and {string.Join(", ", charts.Select(c => Path.GetRelativePath(root, Path.Combine(docs, c))))}");
}

var leftover = Machine.LeftoverMembers();
if (leftover.Count > 0) Console.WriteLine($"# WARNING: member processes still running: {string.Join(", ", leftover)}");
return failures.Count == 0 ? 0 : 1;

static async Task<RunRecord?> MeasureAsync(Options o, string root)
{
    // Members left by an earlier run that was itself SIGKILLed would hold the ports: say so rather than measure them.
    var stale = Machine.LeftoverMembers();
    if (stale.Count > 0)
    {
        Console.Error.WriteLine("members of an earlier benchmark run are still running (kill them by pid first):\n  " +
                                string.Join("\n  ", stale));
        return null;
    }
    var members = new[] { "127.0.0.1", "127.0.0.2", "127.0.0.3" }.Select(IPAddress.Parse).ToArray();
    var work = Directory.CreateTempSubdirectory("skiff-bench-");
    using var cts = new CancellationTokenSource();
    Console.CancelKeyPress += (_, e) => { e.Cancel = true; cts.Cancel(); };
    var ct = cts.Token;

    Console.WriteLine($"# cluster bench {(o.Quick ? "--quick " : "")}reps={o.Reps} duration={o.Duration.TotalSeconds}s " +
                      $"warmup={o.Warmup.TotalSeconds}s systems={string.Join(',', o.Systems)} work={work.FullName}");
    if (o.Systems.Contains("dotnext") && !o.NoBuild)
        Repo.BuildDotNextNode(root);
    if ((o.Systems.Contains("skiff") || o.Systems.Contains("skiff-tls")) && !o.NoBuild)
        Repo.Build(root, Path.Combine("src", "Skiff.Cli"));
    if (o.Systems.Contains("skiff-embedded") && !o.NoBuild)
        Repo.Build(root, Path.Combine("bench", "Skiff.Bench.EmbeddedMember"));

    var systems = o.Systems.Select(name => name switch
    {
        "etcd" => (IBenchSystem)new EtcdSystem(),
        "dotnext" => new DotNextSystem(Repo.DotNextNodeDll(root), o.DotNextLower, o.DotNextUpper, o.DotNextHeartbeat, o.DotNextWal),
        "skiff" => new SkiffSystem(Repo.SkiffCliDll(root)),
        "skiff-embedded" => new SkiffSystem(Repo.EmbeddedMemberDll(root), embedded: true),
        "skiff-tls" => new SkiffSystem(Repo.SkiffCliDll(root), tls: true),
        "etcd-tls" => new EtcdSystem(tls: true),
        _ => throw new ArgumentException($"unknown system {name}"),
    }).ToList();

    var points = new List<PointResult>();
    var failovers = new List<FailoverResult>();
    var recoveries = new List<RecoveryResult>();
    var descriptions = new Dictionary<string, string>();
    var failures = new List<string>();
    var disks = new List<DiskResult>();
    var interrupted = false;
    var started = DateTime.UtcNow;
    var load = Machine.LoadAverage();

    try
    {
        for (int rep = 1; rep <= o.Reps; rep++)
        {
            var order = rep % 2 == 1 ? systems : Enumerable.Reverse(systems).ToList();
            foreach (var sys in order)
            {
                var spec = new ClusterSpec(Path.Combine(work.FullName, $"rep{rep}"), members, o.HeartbeatMs, o.ElectionMs);
                descriptions[sys.Name] = sys.Describe(spec);
                try
                {
                    await sys.StartAsync(spec, ct);
                    int leader = await Load.FindLeaderAsync(sys, members.Length, TimeSpan.FromSeconds(20), ct);
                    Console.WriteLine($"# {sys.Name} rep {rep}: leader is member {leader} ({members[leader]})");
                    // Settle: writes at C = 16, not measured, so that the first point does not pay for the JIT of a .NET
                    // member (DotNext, Skiff) or the first WAL segment's allocation; the same for every system.
                    await Load.ClosedLoopAsync(sys, leader, Op.Put, 16, rep, TimeSpan.Zero, o.Settle, null, ct);
                    // The leader is looked up again before every point: a re-election (a GC pause on 2 busy cores is
                    // enough) would otherwise send a whole point to a follower.
                    async Task<int> Leader() => await Load.FindLeaderAsync(sys, members.Length, TimeSpan.FromSeconds(20), ct);
                    foreach (var c in o.Clients)
                        points.Add(Print(await Load.ClosedLoopAsync(sys, await Leader(), Op.Put, c, rep, o.Warmup, o.Duration, null, ct)));
                    // A TLS row measures what TLS costs a write; reads, recovery and failover are the plain row's.
                    if (sys.Name.EndsWith("-tls", StringComparison.Ordinal)) continue;
                    if (!o.SkipReads)
                    {
                        var keys = await Load.PreloadAsync(sys, await Leader(), 1000, ct);
                        points.Add(Print(await Load.ClosedLoopAsync(sys, await Leader(), Op.GetLinearizable, o.ReadClients, rep, o.Warmup, o.Duration, keys, ct)));
                        points.Add(Print(await Load.ClosedLoopAsync(sys, await Leader(), Op.GetStale, o.ReadClients, rep, o.Warmup, o.Duration, keys, ct)));
                    }
                    if (o.RecoveryKeys > 0)
                    {
                        // Its own failure must not cost the failover point that follows.
                        try
                        {
                            recoveries.Add(PrintRecovery(await Load.RecoveryAsync(sys, members.Length, o.RecoveryKeys, rep, ct)));
                        }
                        catch (Exception e) when (!ct.IsCancellationRequested)
                        {
                            failures.Add($"{sys.Name} recovery rep {rep} failed: {e.GetType().Name}: {e.Message}");
                            Console.WriteLine("# " + failures[^1]);
                            KeepLogs(spec.WorkDir, sys.Name, rep, root);
                            // A member may be down now: start over for the failover point.
                            await sys.StopAsync();
                            await sys.StartAsync(spec with { WorkDir = spec.WorkDir + "-after-recovery" }, ct);
                        }
                    }
                    if (!o.SkipFailover)
                    {
                        leader = await Load.FindLeaderAsync(sys, members.Length, TimeSpan.FromSeconds(20), ct);
                        failovers.Add(PrintFailover(await Load.FailoverAsync(sys, members.Length, leader, 16, rep,
                            TimeSpan.FromMilliseconds(100), o.FailoverBefore, o.FailoverAfter, ct)));
                    }
                }
                catch (Exception e) when (!ct.IsCancellationRequested)
                {
                    var msg = $"{sys.Name} rep {rep} failed: {e.GetType().Name}: {e.Message}";
                    failures.Add(msg);
                    Console.WriteLine("# " + msg);
                    KeepLogs(spec.WorkDir, sys.Name, rep, root);
                }
                finally
                {
                    await sys.StopAsync();
                }
            }
        }
        if (o.DiskOverwrites > 0)
            await DiskGrowth.RunAllAsync(systems, name => new ClusterSpec(Path.Combine(work.FullName, "disk-" + name), members,
                o.HeartbeatMs, o.ElectionMs), o, root, disks, failures, ct);
    }
    catch (Exception e) when (ct.IsCancellationRequested)
    {
        // Ctrl-C: a run of two hours must not lose what it measured before. The raw results keep it, marked.
        interrupted = true;
        failures.Add($"interrupted by Ctrl-C ({e.GetType().Name}): the results are those measured before it");
        Console.WriteLine("# " + failures[^1]);
    }
    finally
    {
        MemberProcesses.KillAllStarted();
        foreach (var s in systems) await s.StopAsync();
        Waiting.DeleteQuietly(work.FullName);
    }

    // A point that completed nothing, or a failover after which no write succeeded, is a broken harness or system:
    // the smoke test must fail rather than write a table of zeros.
    foreach (var p in points.Where(p => p.OpsPerSec == 0))
        failures.Add($"{p.System} {p.Kind} c={p.Clients} rep {p.Rep} completed no operation ({p.Errors} errors)");
    foreach (var f in failovers.Where(f => double.IsNaN(f.GapMs)))
        failures.Add($"{f.System} failover rep {f.Rep}: no write succeeded after the kill");

    return new RunRecord(started, Machine.Describe(load), o, points, failovers, failures, descriptions, recoveries, disks, interrupted);
}

/// <summary>Copies the members' logs of a failed run out of the temp dir (which is deleted) into bench/results/.</summary>
static void KeepLogs(string workDir, string system, int rep, string root)
{
    try
    {
        var to = Path.Combine(root, "bench", "results", $"logs-{DateTime.UtcNow:yyyyMMdd-HHmmss}-{system}-rep{rep}");
        foreach (var log in Directory.EnumerateFiles(workDir, "*.log", SearchOption.AllDirectories))
        {
            var dest = Path.Combine(to, Path.GetRelativePath(workDir, log).Replace('/', '_'));
            Directory.CreateDirectory(to);
            File.Copy(log, dest, overwrite: true);
            // CI keeps only the output, not these files: the last lines say why a member failed.
            foreach (var line in File.ReadLines(log).TakeLast(3))
                Console.WriteLine($"#   {Path.GetFileName(log)}: {(line.Length > 300 ? line[..300] + "..." : line)}");
        }
        if (Directory.Exists(to)) Console.WriteLine($"# member logs kept in {Path.GetRelativePath(root, to)}");
    }
    catch (IOException) { }
}

static PointResult Print(PointResult r)
{
    Console.WriteLine(Summary.Line(r) + $" rep={r.Rep}");
    return r;
}

static FailoverResult PrintFailover(FailoverResult r)
{
    Console.WriteLine(Summary.Line(r) + $" rep={r.Rep}");
    return r;
}

static RecoveryResult PrintRecovery(RecoveryResult r)
{
    Console.WriteLine(Summary.Line(r) + $" rep={r.Rep}");
    return r;
}

/// <summary>Everything one run measured: written to bench/results/ and readable again with --report-from.</summary>
public sealed record RunRecord(DateTime Started, string Machine, Options Options, List<PointResult> Points,
    List<FailoverResult> Failovers, List<string> Failures, Dictionary<string, string> Descriptions,
    List<RecoveryResult>? Recoveries = null, List<DiskResult>? Disks = null, bool Interrupted = false);

public sealed record Options
{
    public bool Quick { get; init; }
    public int Reps { get; init; } = 3;
    public TimeSpan Duration { get; init; } = TimeSpan.FromSeconds(10);
    public TimeSpan Warmup { get; init; } = TimeSpan.FromSeconds(1);
    public TimeSpan Settle { get; init; } = TimeSpan.FromSeconds(5);
    public TimeSpan FailoverBefore { get; init; } = TimeSpan.FromSeconds(2);
    public TimeSpan FailoverAfter { get; init; } = TimeSpan.FromSeconds(2);
    public string[] Systems { get; init; } = ["skiff", "etcd", "dotnext", "skiff-tls", "etcd-tls"];
    public int[] Clients { get; init; } = [1, 16, 64, 256];
    public int ReadClients { get; init; } = 64;
    public int RecoveryKeys { get; init; } = 1_000_000;
    public long DiskOverwrites { get; init; } = 10_000_000;
    public int DiskKeys { get; init; } = 10_000;
    public int DiskValueBytes { get; init; } = 1024;
    public TimeSpan DiskIdle { get; init; } = TimeSpan.FromSeconds(60);
    public bool SkipReads { get; init; }
    public bool SkipFailover { get; init; }
    public bool NoReport { get; init; }
    public bool NoBuild { get; init; }
    public int HeartbeatMs { get; init; } = 50;
    public int ElectionMs { get; init; } = 300;
    public int DotNextLower { get; init; } = 300;
    public int DotNextUpper { get; init; } = 600;
    public int DotNextHeartbeat { get; init; } = 50;
    public string DotNextWal { get; init; } = "shared";
    public string Docs { get; init; } = "docs";
    public string? ReportFrom { get; init; }
    public string CommandLine { get; init; } = "";

    public static Options Parse(string[] args)
    {
        var o = new Options { CommandLine = string.Join(' ', args) };
        if (args.Contains("--quick"))
            o = o with
            {
                Quick = true,
                Reps = 1,
                Duration = TimeSpan.FromSeconds(3),
                Warmup = TimeSpan.FromSeconds(0.5),
                Settle = TimeSpan.FromSeconds(6),
                RecoveryKeys = 0,
                DiskOverwrites = 20_000,
                DiskIdle = TimeSpan.FromSeconds(2),
                FailoverBefore = TimeSpan.FromSeconds(1),
                FailoverAfter = TimeSpan.FromSeconds(1)
            };
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            o = args[i] switch
            {
                "--quick" => o,
                "--reps" => o with { Reps = int.Parse(Next()) },
                "--duration" => o with { Duration = TimeSpan.FromSeconds(double.Parse(Next())) },
                "--warmup" => o with { Warmup = TimeSpan.FromSeconds(double.Parse(Next())) },
                "--settle" => o with { Settle = TimeSpan.FromSeconds(double.Parse(Next())) },
                "--systems" => o with { Systems = Next().Split(',', StringSplitOptions.RemoveEmptyEntries) },
                "--clients" => o with { Clients = Next().Split(',').Select(int.Parse).ToArray() },
                "--read-clients" => o with { ReadClients = int.Parse(Next()) },
                "--skip-reads" => o with { SkipReads = true },
                "--skip-failover" => o with { SkipFailover = true },
                "--recovery-keys" => o with { RecoveryKeys = int.Parse(Next()) },
                "--disk-overwrites" => o with { DiskOverwrites = long.Parse(Next()) },
                "--disk-keys" => o with { DiskKeys = int.Parse(Next()) },
                "--disk-value" => o with { DiskValueBytes = int.Parse(Next()) },
                "--disk-idle" => o with { DiskIdle = TimeSpan.FromSeconds(double.Parse(Next())) },
                "--no-report" => o with { NoReport = true },
                "--no-build" => o with { NoBuild = true },
                "--heartbeat" => o with { HeartbeatMs = int.Parse(Next()) },
                "--election" => o with { ElectionMs = int.Parse(Next()) },
                "--dotnext-timeouts" => ParseDotNext(o, Next()),
                "--dotnext-wal" => o with { DotNextWal = Next() is "private" ? "private" : "shared" },
                "--docs" => o with { Docs = Next() },
                "--report-from" => o with { ReportFrom = Next() },
                _ => throw new ArgumentException($"unknown option {args[i]}"),
            };
        }
        return o;
    }

    private static Options ParseDotNext(Options o, string s)
    {
        // L-U/H, e.g. 150-300/75
        var parts = s.Split('/');
        var lu = parts[0].Split('-');
        return o with { DotNextLower = int.Parse(lu[0]), DotNextUpper = int.Parse(lu[1]), DotNextHeartbeat = int.Parse(parts[1]) };
    }
}

internal static class Repo
{
    public static string Root()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir != null && !File.Exists(Path.Combine(dir.FullName, "Skiff.Functional.sln"))) dir = dir.Parent;
        return dir?.FullName ?? Directory.GetCurrentDirectory();
    }

    public static string DotNextNodeDll(string root) =>
        Path.Combine(root, "bench", "peers", "dotnext", "bin", "Release", "net10.0", "DotNextNode.dll");

    public static string SkiffCliDll(string root) =>
        Path.Combine(root, "src", "Skiff.Cli", "bin", "Release", "net10.0", "Skiff.Cli.dll");

    public static string EmbeddedMemberDll(string root) =>
        Path.Combine(root, "bench", "Skiff.Bench.EmbeddedMember", "bin", "Release", "net10.0", "Skiff.Bench.EmbeddedMember.dll");

    public static void BuildDotNextNode(string root) => Build(root, Path.Combine("bench", "peers", "dotnext"));

    public static void Build(string root, string project)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = root };
        foreach (var a in new[] { "build", project, "-c", "Release", "-nologo", "-v", "q" })
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var output = p.StandardOutput.ReadToEndAsync();
        var error = p.StandardError.ReadToEndAsync();
        p.WaitForExit();
        if (p.ExitCode != 0)
            throw new InvalidOperationException($"building {project} failed:\n{output.Result}{error.Result}");
    }
}
