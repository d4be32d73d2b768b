namespace Skiff.Bench.Cluster.Systems;

// TODO(#7, Skiff adapter): Skiff plugs in here once the node runtime and `skiff serve` exist (other branches).
// What it needs to do, mirroring EtcdSystem and DotNextSystem:
//   StartAsync  - start three `skiff serve` processes with MemberProcesses.Start (the built Skiff.Cli dll under
//                 `dotnet`, so the pid held is the node and Kill is a real SIGKILL), member i on spec.Members[i]
//                 (127.0.0.1-127.0.0.3), data under Path.Combine(spec.WorkDir, "skiff", $"m{i}"), heartbeat
//                 spec.HeartbeatMs and election spec.ElectionMs (the same timeouts as etcd); then wait until each
//                 member answers ProbeAsync.
//   ProbeAsync  - ask one member whether it is the leader and its term, with a short (200 ms) deadline.
//   Client      - one thread-safe client per member (Skiff's own client library), taking many concurrent calls.
//   IKvClient   - PutAsync returns once the write is committed and fsynced on a majority; GetAsync(lin: true)
//                 is a linearizable read (ReadIndex), GetAsync(lin: false) a local read on that member; both say
//                 whether the key exists. PutBatchAsync (optional: the default puts one by one) loads the
//                 recovery point's keys in few requests.
//   Kill / RestartAsync / ResidentBytes / MemberPids / StopAsync - delegate to MemberProcesses, as the peers do
//                 (RestartAsync starts a killed member again on the same data: the recovery point times it).
// It is already selectable (--systems skiff,etcd,dotnext); once it works, add "skiff" to the default of
// Options.Systems in Program.cs. The report's Skiff/etcd and Skiff/DotNext ratio columns and the list of bars fill
// in by themselves once results named "skiff" exist.
public sealed class SkiffSystem : IBenchSystem
{
    public string Name => "skiff";
    public string Describe(ClusterSpec spec) => "Skiff (adapter not written yet)";
    public Task StartAsync(ClusterSpec spec, CancellationToken ct) =>
        throw new NotSupportedException("Skiff's adapter is not written yet: see the TODO in Systems/SkiffSystem.cs");
    public Task<Probe> ProbeAsync(int member, CancellationToken ct) => throw new NotSupportedException();
    public IKvClient Client(int member) => throw new NotSupportedException();
    public void Kill(int member) { }
    public Task RestartAsync(int member, CancellationToken ct) => throw new NotSupportedException();
    public long? ResidentBytes(int member) => null;
    public IReadOnlyList<int> MemberPids => [];
    public Task StopAsync() => Task.CompletedTask;
}
