using System.Diagnostics;
using Spectre.Console;

namespace Skiff.Cli;

/// <summary><c>skiff demo</c>: a three-node cluster as three <c>skiff serve</c> child processes on 127.0.0.1–3, a live
/// table of its members, reads and writes through different nodes, a watch, the leader killed with SIGKILL and the
/// time until writes are accepted again, the killed node restarted and caught up, a summary, and every process and
/// directory it made removed. Plain lines instead of the live view when stdout is not a terminal.</summary>
internal static class Demo
{
    public static async Task<int> RunAsync(int requestedPort, CancellationToken ct)
    {
        var total = Stopwatch.StartNew();
        var live = !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive
                   && Environment.GetEnvironmentVariable("CI") is null;
        var view = new DemoView(live, total);
        var root = Path.Combine(Path.GetTempPath(), "skiff-demo-" + Guid.NewGuid().ToString("N")[..8]);
        var nodes = new List<DemoNodeProcess>();
        // Last resort for a demo ended by SIGTERM past the grace period: no child outlives it. (SIGKILL of the demo
        // is covered by the children themselves, which watch this process through --parent-pid.)
        EventHandler onExit = (_, _) => { foreach (var n in nodes) n.Kill(); };
        AppDomain.CurrentDomain.ProcessExit += onExit;
        DemoSummary? summary = null;
        var code = Exit.Ok;
        try
        {
            int port;
            try { port = DemoPorts.Pick(requestedPort); }
            catch (CliException e) { Console.Error.WriteLine($"skiff: {e.Message}"); return e.Code; }
            Directory.CreateDirectory(root);
            for (var i = 1; i <= 3; i++) nodes.Add(new DemoNodeProcess(i, port, Path.Combine(root, $"node{i}"), i == 1 ? null : "127.0.0.1"));
            view.Note($"cluster directory {root}, port {port}");
            summary = await view.ShowWhileAsync(() => Script(view, nodes, port, ct));
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            Console.Error.WriteLine("skiff: demo interrupted; cleaning up");
            code = Exit.Interrupted;
        }
        catch (Exception e) when (e is CliException or SkiffException)
        {
            Console.Error.WriteLine($"skiff: demo failed: {(e is SkiffException s ? Commands.Describe(s) : e.Message)}");
            foreach (var n in nodes) n.DumpTail(Console.Error);
            code = e is CliException c ? c.Code : Exit.Of(((SkiffException)e).Kind);
        }
        finally
        {
            var cleanup = await CleanUpAsync(nodes, root);
            AppDomain.CurrentDomain.ProcessExit -= onExit;
            if (summary is not null) summary.Print(cleanup, total.Elapsed);
            else Console.WriteLine(cleanup);
        }
        return code;
    }

    /// <summary>Runs the scenario while a poller keeps the view's member table current.</summary>
    private static async Task<DemoSummary> Script(DemoView view, List<DemoNodeProcess> nodes, int port, CancellationToken ct)
    {
        var all = nodes.Select(n => n.Address).ToArray();
        await using var cluster = new Client(all).WithPort(port).WithTimeout(TimeSpan.FromSeconds(1));
        using var polling = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var poller = Task.Run(async () =>
        {
            while (!polling.IsCancellationRequested)
            {
                try { view.Status = await cluster.GetStatusAsync(polling.Token); }
                catch (SkiffException) { }
                catch (OperationCanceledException) { }
                try { await Task.Delay(150, polling.Token); } catch (OperationCanceledException) { }
            }
        }, CancellationToken.None); // the poller stops through its own token, after the scenario
        try
        {
            return await new DemoScenario(view, nodes, port, cluster, ct).RunAsync();
        }
        finally
        {
            await polling.CancelAsync();
            await poller;
        }
    }

    /// <summary>Stops every node process and removes the cluster directory; says what was done.</summary>
    private static async Task<string> CleanUpAsync(List<DemoNodeProcess> nodes, string root)
    {
        var stopped = await Task.WhenAll(nodes.Select(n => n.StopAsync()));
        var removed = TryDelete(root);
        return $"cleanup: {stopped.Count(s => s)} node processes stopped, none left running; " +
               (removed ? $"removed {root}" : $"could not remove {root}");
    }

    /// <summary>Removes the cluster directory, retrying while a stopping node may still hold a file.</summary>
    private static bool TryDelete(string dir)
    {
        for (var i = 0; i < 10; i++)
        {
            try
            {
                if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
                return true;
            }
            catch (IOException) { Thread.Sleep(100); }
            catch (UnauthorizedAccessException) { Thread.Sleep(100); }
        }
        return false;
    }
}
