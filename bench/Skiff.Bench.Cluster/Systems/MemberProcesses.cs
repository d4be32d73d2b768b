using System.Diagnostics;

namespace Skiff.Bench.Cluster.Systems;

/// <summary>
/// Three member processes: started with their output in log files, killed with SIGKILL, never left behind
/// (every instance is registered and killed on exit, Ctrl+C, or an unhandled exception).
/// </summary>
public sealed class MemberProcesses
{
    private static readonly List<MemberProcesses> Live = [];

    static MemberProcesses()
    {
        AppDomain.CurrentDomain.ProcessExit += (_, _) => KillAllStarted();
        Console.CancelKeyPress += (_, _) => KillAllStarted();
    }

    /// <summary>Kills every member process this harness started and has not yet stopped.</summary>
    public static void KillAllStarted()
    {
        lock (Live)
            foreach (var m in Live.ToArray())
                m.KillAll();
    }

    private readonly Process?[] procs;
    private readonly (string File, string[] Args, IDictionary<string, string>? Env)[] starts;
    private readonly string logDir;

    public MemberProcesses(int count, string logDir)
    {
        procs = new Process?[count];
        starts = new (string, string[], IDictionary<string, string>?)[count];
        this.logDir = logDir;
        Directory.CreateDirectory(logDir);
        lock (Live) Live.Add(this);
    }

    public void Start(int member, string file, IEnumerable<string> args, IDictionary<string, string>? env = null)
    {
        var argv = args.ToArray();
        starts[member] = (file, argv, env);
        var log = Path.Combine(logDir, $"member{member}.log");
        // The shell redirects the member's output straight to a file, then execs it: the pid we hold is the member.
        var psi = new ProcessStartInfo("/bin/sh") { UseShellExecute = false, RedirectStandardInput = true };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add("exec \"$0\" \"$@\" >>\"$SKIFF_BENCH_LOG\" 2>&1");
        psi.ArgumentList.Add(file);
        foreach (var a in argv) psi.ArgumentList.Add(a);
        psi.Environment["SKIFF_BENCH_LOG"] = log;
        if (env != null)
            foreach (var (k, v) in env) psi.Environment[k] = v;
        procs[member] = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {file}");
    }

    /// <summary>Starts a killed member again with the same command line (so on the same data directory).</summary>
    public void Restart(int member)
    {
        if (IsAlive(member)) throw new InvalidOperationException($"member {member} is still running");
        var (file, args, env) = starts[member];
        Start(member, file, args, env);
    }

    public bool IsAlive(int member) => procs[member] is { HasExited: false };

    /// <summary>VmRSS of a live member in bytes (file-backed pages such as a memory-mapped log count too).</summary>
    public long? ResidentBytes(int member)
    {
        var p = procs[member];
        if (p is not { HasExited: false }) return null;
        try
        {
            var line = File.ReadLines($"/proc/{p.Id}/status").FirstOrDefault(l => l.StartsWith("VmRSS:"));
            return line == null ? null : long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        }
        catch (Exception e) when (e is IOException or FormatException) { return null; }
    }

    public IReadOnlyList<int> Pids =>
        procs.Where(p => p is { HasExited: false }).Select(p => p!.Id).ToArray();

    public void Kill(int member)
    {
        var p = procs[member];
        if (p == null) return;
        try
        {
            if (!p.HasExited)
            {
                // Process.Kill sends SIGKILL on Unix.
                p.Kill();
                p.WaitForExit(5000);
            }
        }
        catch (InvalidOperationException) { }
        p.Dispose();
        procs[member] = null;
    }

    public void KillAll()
    {
        for (int i = 0; i < procs.Length; i++) Kill(i);
        lock (Live) Live.Remove(this);
    }

    /// <summary>The last lines of a member's log, for error messages.</summary>
    public string Tail(int member, int lines = 15)
    {
        var log = Path.Combine(logDir, $"member{member}.log");
        return File.Exists(log) ? string.Join('\n', File.ReadLines(log).TakeLast(lines)) : "(no log)";
    }
}
