namespace Skiff.Bench.Cluster.Systems;

/// <summary>What every benchmarked system shares: its members are processes (MemberProcesses) with their data and
/// logs under one directory, killed, restarted and measured the same way. A restart reruns the member's own
/// command line: a data directory that already holds a member neither bootstraps nor joins again (etcd ignores its
/// --initial-cluster flags, Skiff does not join, DotNext reopens its WAL).</summary>
public abstract class ProcessSystem
{
    protected MemberProcesses? procs;
    protected string dataDir = "";

    /// <summary>Sets up the member processes under WorkDir/<paramref name="name"/> (started by the caller).</summary>
    protected MemberProcesses Prepare(ClusterSpec spec, string name)
    {
        dataDir = Path.Combine(spec.WorkDir, name);
        procs = new MemberProcesses(spec.Members.Count, Path.Combine(dataDir, "logs"));
        return procs;
    }

    /// <summary>Closes this system's clients (called by StopAsync after the members are killed).</summary>
    protected abstract void CloseClients();

    public void Kill(int member) => procs?.Kill(member);

    public Task RestartAsync(int member, CancellationToken ct)
    {
        procs!.Restart(member);
        return Task.CompletedTask;
    }

    public long? ResidentBytes(int member) => procs?.ResidentBytes(member);

    public IReadOnlyList<int> MemberPids => procs?.Pids ?? [];

    /// <summary>Every system here keeps member i's data in m{i} under its directory.</summary>
    public string MemberDataDir(int member) => Path.Combine(dataDir, $"m{member}");

    public virtual Task MaintainAsync(CancellationToken ct) => Task.CompletedTask;

    public Task StopAsync()
    {
        procs?.KillAll();
        CloseClients();
        Waiting.DeleteQuietly(dataDir);
        return Task.CompletedTask;
    }
}
