// Skiff benchmarks: `dotnet run --project bench/Skiff.Bench -c Release -- <subcommand> [args]`.
// Each subcommand lives in its own file; this is only the dispatcher.
using Skiff.Bench;

var commands = new Dictionary<string, (string help, Func<string[], Task<int>> run)>
{
    ["storage"] = ("durable log appends vs raw fsync, commit paths, recovery, snapshots", StorageBench.Run),
    ["micro"] = ("BenchmarkDotNet micro-benchmarks of the storage paths (short job unless --job)", StorageMicro.Run),
    ["cluster"] = ("3-node cluster: closed-loop put latency and throughput at 1 and 64 clients", ClusterBench.Run),
    ["disk"] = ("one node, N overwrites of K keys: data directory size over time (CSV), then restart time", DiskBench.Run),
    ["recovery"] = ("the state machine alone: load N keys, snapshot, reopen in a fresh process; phases and memory", RecoveryBench.Run),
    ["log-latency"] = ("Raft log: one-thread durable append latency (batches of 1 and 64) and recovery of 1M entries", LogLatencyBench.Run),
    ["failover"] = ("3-node cluster, 16 writers, leader shut down: longest write gap and election time", FailoverBench.Run),
    ["writepath"] = ("3 member processes, one client: hand-offs and allocated bytes per write on each member", WritePathBench.Run),
    ["writepath-member"] = ("a member process of writepath (started by it)", WritePathBench.Member),
};

if (args.Length == 0 || !commands.TryGetValue(args[0], out var command))
{
    Console.Error.WriteLine("usage: Skiff.Bench <subcommand> [args]");
    foreach (var (name, (help, _)) in commands) Console.Error.WriteLine($"  {name,-10} {help}");
    return 2;
}
return await command.run(args[1..]);
