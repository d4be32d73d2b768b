using System.Net;
using Skiff;

// Three nodes on one port, on 127.0.0.1–127.0.0.3 (the port is 9400 unless given as the first argument).
var port = args.Length > 0 ? int.Parse(args[0]) : 9400;
var root = Path.Combine(Path.GetTempPath(), "skiff-multinode-" + Guid.NewGuid().ToString("N"));
var first = IPAddress.Parse("127.0.0.1");

// Node 1: sole member of a brand-new cluster.
await using var node1 = new Builder().SetDir(Path.Combine(root, "node1")).Bind(first).Port(port).Build();
await node1.StartAsync();
await node1.WaitForLeaderAsync(TimeSpan.FromSeconds(5));

// Nodes 2 and 3 join the cluster seeded by node 1: they contact it and register through add_server.
await using var node2 = new Builder().SetDir(Path.Combine(root, "node2")).Bind(IPAddress.Parse("127.0.0.2")).Port(port)
    .JoinCluster(new[] { first }).Build();
await using var node3 = new Builder().SetDir(Path.Combine(root, "node3")).Bind(IPAddress.Parse("127.0.0.3")).Port(port)
    .JoinCluster(new[] { first }).Build();
await Task.WhenAll(node2.StartAsync(), node3.StartAsync());

var members = await node1.GetClusterAsync();
Console.WriteLine($"members: {members.Count}");

// A watch on node 3 sees a write made through node 2: any node accepts writes and forwards them to the leader.
await using var watch = await node3.WatchAsync("config/");
await node2.InsertAsync("config/mode", "replicated");
var (key, value) = await watch.RecvAsync<string>();
Console.WriteLine($"node 3 saw {key} = {value}");

foreach (var node in new[] { node3, node2, node1 }) await node.ShutdownAsync();
Directory.Delete(root, recursive: true);
