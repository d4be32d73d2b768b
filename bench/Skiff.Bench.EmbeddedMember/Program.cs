// One Skiff member embedded in a plain console application, for the cluster benchmark's "skiff-embedded" system:
//   Skiff.Bench.EmbeddedMember DIR IP PORT (--new-cluster | --join IP) PARENT_PID
// It builds its node with Builder and the defaults (no timing, thread pool or GC settings: the library must be fast
// without the host's help), runs until SIGTERM, Ctrl-C or its parent's exit, and shuts the node down cleanly.
// SKIFF_BENCH_GC_LOG=PATH (inherited from the harness): appends a line per garbage collection seen to PATH.<pid>
// (generation, pause, heap), polled every 2 ms, so two collections closer than that show as one. For diagnosis only.
using System.Diagnostics;
using System.Net;
using System.Runtime.InteropServices;
using Skiff;

if (args.Length != 6)
{
    Console.Error.WriteLine("usage: Skiff.Bench.EmbeddedMember DIR IP PORT (--new-cluster | --join IP) PARENT_PID");
    return 2;
}
var (dir, ip, port, mode, other, parent) = (args[0], IPAddress.Parse(args[1]), int.Parse(args[2]), args[3], args[4], int.Parse(args[5]));
var builder = new Builder().SetDir(dir).Bind(ip).Port(port);
builder = mode == "--join" ? builder.JoinCluster([IPAddress.Parse(other)]) : builder.NewCluster();

using var stop = new CancellationTokenSource();
// The application owns its signals (the node installs none): SIGTERM and Ctrl-C end it cleanly.
using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });
using var interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.Cancel(); });
_ = Task.Run(async () =>
{
    // The benchmark may be SIGKILLed: a member must not outlive it.
    try { await Process.GetProcessById(parent).WaitForExitAsync(stop.Token); } catch (ArgumentException) { }
    stop.Cancel();
});

if (Environment.GetEnvironmentVariable("SKIFF_BENCH_GC_LOG") is { } gcLog)
    _ = Task.Run(async () =>
    {
        long last = -1;
        while (!stop.IsCancellationRequested)
        {
            var info = GC.GetGCMemoryInfo(GCKind.Any);
            if (info.Index != last)
            {
                last = info.Index;
                var ms = info.PauseDurations.ToArray().Sum(d => d.TotalMilliseconds);
                File.AppendAllText($"{gcLog}.{Environment.ProcessId}", $"{DateTime.UtcNow:HH:mm:ss.fff} gc#{info.Index} gen{info.Generation} {(info.Concurrent ? "bg" : "blocking")} pause {ms:F1} ms heap {info.HeapSizeBytes >> 20} MiB promoted {info.PromotedBytes >> 20} MiB\n");
            }
            try { await Task.Delay(2, stop.Token); } catch (OperationCanceledException) { }
        }
    });

await using var node = builder.Build();
await node.StartAsync(stop.Token);
Console.WriteLine($"member {node.Id} serving at {ip}:{port}");
try { await Task.WhenAny(node.Stopped, Task.Delay(Timeout.Infinite, stop.Token)); }
catch (OperationCanceledException) { }
// A node that stopped itself (fail-stop) says why: the harness keeps members' output when a run fails.
var fatal = node.Stopped.IsCompletedSuccessfully ? await node.Stopped : null;
if (fatal is not null) Console.Error.WriteLine($"member {node.Id} stopped itself: {fatal.Kind}: {fatal.Message}\n{fatal.InnerException}");
await node.ShutdownAsync();
return fatal is not null ? 8 : 0;
