using System.Net;
using Skiff;

// Build and start a single-node cluster (the port is 9400 unless given as the first argument).
var port = args.Length > 0 ? int.Parse(args[0]) : 9400;
var dir = Path.Combine(Path.GetTempPath(), "my-skiff-node-" + Guid.NewGuid().ToString("N"));
await using var node = new Builder().SetDir(dir).Bind(IPAddress.Loopback).Port(port).Build();
await node.StartAsync();

// Block until a leader is elected before connecting a client.
await node.WaitForLeaderAsync(TimeSpan.FromSeconds(2));

// Connect a client and perform some operations.
await using var client = new Client(new[] { IPAddress.Loopback }).WithPort(port);
await client.ConnectAsync();
await client.InsertAsync("greeting", "hello world");
string? value = await client.GetAsync<string>("greeting");
Console.WriteLine(value);

await node.ShutdownAsync();
Directory.Delete(dir, recursive: true);
