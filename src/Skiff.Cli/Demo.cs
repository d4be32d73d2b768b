using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace Skiff.Cli;

/// <summary><c>skiff demo</c>: a three-node cluster as three <c>skiff serve</c> child processes on 127.0.0.1–3, a live
/// table of its members, reads and writes through different nodes, a watch, the leader killed with SIGKILL and the
/// time until writes are accepted again, the killed node restarted and caught up, a summary, and every process and
/// directory it made removed. Plain lines instead of the live view when stdout is not a terminal.</summary>
internal static class Demo
{
    private const int Items = 20;

    public static async Task<int> RunAsync(int requestedPort, CancellationToken ct)
    {
        var total = Stopwatch.StartNew();
        var live = !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive
                   && Environment.GetEnvironmentVariable("CI") is null;
        var view = new View(live, total);
        var root = Path.Combine(Path.GetTempPath(), "skiff-demo-" + Guid.NewGuid().ToString("N")[..8]);
        var nodes = new List<NodeProcess>();
        // Last resort for a demo ended by SIGTERM past the grace period: no child outlives it. (SIGKILL of the demo
        // is covered by the children themselves, which watch this process through --parent-pid.)
        EventHandler onExit = (_, _) => { foreach (var n in nodes) n.Kill(); };
        AppDomain.CurrentDomain.ProcessExit += onExit;
        Summary? summary = null;
        var code = Exit.Ok;
        try
        {
            int port;
            try { port = PickPort(requestedPort); }
            catch (CliException e) { Console.Error.WriteLine($"skiff: {e.Message}"); return e.Code; }
            Directory.CreateDirectory(root);
            for (var i = 1; i <= 3; i++) nodes.Add(new NodeProcess(i, port, Path.Combine(root, $"node{i}"), i == 1 ? null : "127.0.0.1"));
            view.Note($"cluster directory {root}, port {port}");
            if (live)
                await AnsiConsole.Live(view.Render()).AutoClear(false).Overflow(VerticalOverflow.Ellipsis)
                    .StartAsync(async ctx =>
                    {
                        using var refresh = new CancellationTokenSource();
                        var refresher = Task.Run(async () =>
                        {
                            while (!refresh.IsCancellationRequested)
                            {
                                ctx.UpdateTarget(view.Render());
                                try { await Task.Delay(200, refresh.Token); } catch (OperationCanceledException) { }
                            }
                        });
                        try { summary = await Script(view, nodes, port, ct); }
                        finally
                        {
                            await refresh.CancelAsync();
                            await refresher;
                            ctx.UpdateTarget(view.Render());
                        }
                    });
            else
                summary = await Script(view, nodes, port, ct);
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
            var stopped = await Task.WhenAll(nodes.Select(n => n.StopAsync()));
            AppDomain.CurrentDomain.ProcessExit -= onExit;
            var removed = TryDelete(root);
            var cleanup = $"cleanup: {stopped.Count(s => s)} node processes stopped, none left running; " +
                          (removed ? $"removed {root}" : $"could not remove {root}");
            if (summary is not null) summary.Print(cleanup, total.Elapsed);
            else Console.WriteLine(cleanup);
        }
        return code;
    }

    private static async Task<Summary> Script(View view, List<NodeProcess> nodes, int port, CancellationToken ct)
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
        });
        try
        {
            return await Steps(view, nodes, port, cluster, ct);
        }
        finally
        {
            await polling.CancelAsync();
            await poller;
        }
    }

    private static async Task<Summary> Steps(View view, List<NodeProcess> nodes, int port, Client cluster, CancellationToken ct)
    {
        var summary = new Summary { Port = port };

        // 1. Three nodes: node 1 starts a cluster, nodes 2 and 3 join it through node 1.
        view.Step("starting 3 nodes as 'skiff serve' processes");
        nodes[0].Start();
        view.Note($"node 1 started (pid {nodes[0].Pid}) on {nodes[0].Address}:{port}");
        await Until(view, "node 1 elects itself", 30, ct, async () => (await Status(cluster, ct))?.LeaderId is not null);
        nodes[1].Start();
        nodes[2].Start();
        view.Note($"node 2 (pid {nodes[1].Pid}) and node 3 (pid {nodes[2].Pid}) started, joining through node 1");
        var formed = await Until(view, "3 voters agree on a leader", 40, ct, async () =>
        {
            var s = await Status(cluster, ct);
            return s is { LeaderId: not null } && s.Members.Count == 3
                   && s.Members.All(m => m.Reachable && m.Voter && m.LeaderId == s.LeaderId && m.AppliedIndex == m.CommitIndex);
        });
        view.Note($"cluster formed in {formed.TotalSeconds:0.0} s: leader is {NameOf(nodes, view.Status, view.Status?.LeaderId)}");
        view.Snapshot();

        // 2. Writes and reads through different nodes.
        view.Step("writing through one node and reading through another");
        var clients = nodes.Select(n => new Client(new[] { n.Address }).WithPort(port).WithTimeout(TimeSpan.FromSeconds(3))).ToArray();
        try
        {
            var expected = new Dictionary<string, string>();
            for (var i = 0; i < 3; i++)
            {
                var (writer, reader) = (clients[i], clients[(i + 1) % 3]);
                var key = $"demo/hello-from-node{i + 1}";
                var value = $"written through node {i + 1}";
                await writer.InsertBytesAsync(key, Encoding.UTF8.GetBytes(value), ct);
                var read = await reader.GetBytesAsync(key, ReadConsistency.Linearizable, ct);
                var text = read is null ? "<absent>" : Encoding.UTF8.GetString(read);
                if (text != value) throw new CliException(Exit.Internal, $"node {(i + 1) % 3 + 1} read '{text}' for {key}, not '{value}'");
                view.Note($"put {key} via node {i + 1}; get via node {(i + 1) % 3 + 1} = \"{text}\"");
                expected[key] = value;
            }
            var batch = Stopwatch.StartNew();
            for (var i = 0; i < Items; i++)
            {
                var key = $"demo/items/{i:00}";
                var value = $"item {i}";
                await clients[i % 3].InsertBytesAsync(key, Encoding.UTF8.GetBytes(value), ct);
                expected[key] = value;
            }
            view.Note($"{Items} more keys written round-robin through nodes 1-3 in {batch.ElapsedMilliseconds} ms");
            summary.Writes = expected.Count;

            // 3. A watch on node 3 sees changes written through node 1.
            view.Step("watching demo/watched/ on node 3 while node 1 writes");
            await using (var watch = await clients[2].WatchAsync("demo/watched/", ct))
            {
                await clients[0].InsertBytesAsync("demo/watched/a", Encoding.UTF8.GetBytes("first"), ct);
                await clients[0].InsertBytesAsync("demo/watched/b", Encoding.UTF8.GetBytes("second"), ct);
                await clients[0].RemoveAsync("demo/watched/a", ct);
                using var deadline = CancellationTokenSource.CreateLinkedTokenSource(ct);
                deadline.CancelAfter(TimeSpan.FromSeconds(10));
                for (var i = 0; i < 3; i++)
                {
                    Change change;
                    try { change = await watch.RecvChangeAsync(deadline.Token); }
                    catch (OperationCanceledException) when (!ct.IsCancellationRequested)
                    {
                        throw new CliException(Exit.NoQuorum, $"the watch received {i} of 3 changes within 10 s");
                    }
                    view.Note(change.Kind == ChangeKind.Insert
                        ? $"watch on node 3 got: put {change.Key} = \"{Encoding.UTF8.GetString(change.Value!.Value.Span)}\" (index {change.Index})"
                        : $"watch on node 3 got: del {change.Key} (index {change.Index})");
                    summary.Watched++;
                }
            }
            view.Snapshot();

            // 4. SIGKILL the leader; time until a write through the survivors is accepted again.
            var before = await Status(cluster, ct) ?? throw new CliException(Exit.NoQuorum, "no status before the kill");
            var leaderIndex = nodes.FindIndex(n => before.Members.Any(m => m.Id == before.LeaderId && m.Address.StartsWith(n.Address + ":", StringComparison.Ordinal)));
            if (leaderIndex < 0) throw new CliException(Exit.NoQuorum, "no leader to kill");
            var victim = nodes[leaderIndex];
            var survivors = nodes.Where(n => n != victim).ToArray();
            view.Step($"killing the leader, node {victim.Number} (pid {victim.Pid}), with SIGKILL");
            await using var rest = new Client(survivors.Select(n => n.Address)).WithPort(port).WithTimeout(TimeSpan.FromMilliseconds(500));
            var failover = Stopwatch.StartNew();
            victim.Kill();
            var attempts = 0;
            while (true)
            {
                ct.ThrowIfCancellationRequested();
                attempts++;
                try
                {
                    await rest.InsertBytesAsync("demo/after-failover", Encoding.UTF8.GetBytes("accepted by the new leader"), ct);
                    break;
                }
                catch (SkiffException) when (failover.Elapsed < TimeSpan.FromSeconds(30))
                {
                    await Task.Delay(20, ct);
                }
            }
            failover.Stop();
            expected["demo/after-failover"] = "accepted by the new leader";
            var after = await Until(view, "a new leader is known", 10, ct, async () => (await Status(cluster, ct))?.LeaderId is { } l && l != before.LeaderId);
            var newLeader = view.Status?.Members.FirstOrDefault(m => m.Id == view.Status.LeaderId);
            summary.Victim = victim.Number;
            summary.FailoverMs = failover.ElapsedMilliseconds;
            summary.NewLeader = NameOf(nodes, view.Status, view.Status?.LeaderId);
            summary.NewTerm = newLeader?.Term ?? 0;
            view.Note($"writes accepted again {failover.ElapsedMilliseconds} ms after the kill ({attempts} attempt{(attempts == 1 ? "" : "s")}); new leader {summary.NewLeader} in term {summary.NewTerm}");
            for (var i = 0; i < 5; i++)
            {
                var key = $"demo/while-node{victim.Number}-down/{i}";
                await rest.InsertBytesAsync(key, Encoding.UTF8.GetBytes($"missed by node {victim.Number}"), ct);
                expected[key] = $"missed by node {victim.Number}";
            }
            view.Note($"5 keys written while node {victim.Number} is down");
            view.Snapshot();

            // 5. Restart the killed node on its data directory; it rejoins and catches up.
            view.Step($"restarting node {victim.Number} on its data directory");
            var rejoin = Stopwatch.StartNew();
            victim.Start();
            view.Note($"node {victim.Number} restarted (pid {victim.Pid})");
            var target = (await Status(cluster, ct))?.Members.Where(m => m.Reachable).Select(m => m.CommitIndex).DefaultIfEmpty(0).Max() ?? 0;
            await Until(view, $"node {victim.Number} catches up", 30, ct, async () =>
            {
                var s = await Status(cluster, ct);
                var me = s?.Members.FirstOrDefault(m => m.Address.StartsWith(victim.Address + ":", StringComparison.Ordinal));
                return me is { Reachable: true, Role: "Follower" } && me.LeaderId == s!.LeaderId && me.AppliedIndex >= target;
            });
            rejoin.Stop();
            await using var own = new Client(new[] { victim.Address }).WithPort(port).WithTimeout(TimeSpan.FromSeconds(3));
            var intact = 0;
            foreach (var (key, value) in expected)
            {
                var read = await own.GetBytesAsync(key, ReadConsistency.Stale, ct);
                if (read is not null && Encoding.UTF8.GetString(read) == value) intact++;
                else view.Note($"node {victim.Number} has {(read is null ? "no value" : $"\"{Encoding.UTF8.GetString(read)}\"")} for {key}");
            }
            summary.RejoinMs = rejoin.ElapsedMilliseconds;
            summary.Intact = intact;
            summary.Expected = expected.Count;
            view.Note($"node {victim.Number} rejoined as a follower and applied up to index {target} in {rejoin.ElapsedMilliseconds} ms; " +
                      $"its own store holds {intact}/{expected.Count} keys");
            view.Snapshot();
            if (intact != expected.Count)
                throw new CliException(Exit.Internal, $"node {victim.Number} holds {intact} of {expected.Count} keys after rejoining");
            view.Step("done: stopping the nodes and removing the directory");
            return summary;
        }
        finally
        {
            foreach (var c in clients) await c.DisposeAsync();
        }
    }

    private static async Task<ClusterStatus?> Status(Client cluster, CancellationToken ct)
    {
        try { return await cluster.GetStatusAsync(ct); }
        catch (SkiffException) { return null; }
    }

    /// <summary>Polls <paramref name="condition"/> until true; fails the demo after <paramref name="seconds"/>.</summary>
    private static async Task<TimeSpan> Until(View view, string what, double seconds, CancellationToken ct, Func<Task<bool>> condition)
    {
        var watch = Stopwatch.StartNew();
        while (!await condition())
        {
            if (watch.Elapsed > TimeSpan.FromSeconds(seconds))
                throw new CliException(Exit.NoQuorum, $"waited {seconds:0} s for: {what}");
            await Task.Delay(50, ct);
        }
        return watch.Elapsed;
    }

    private static string NameOf(List<NodeProcess> nodes, ClusterStatus? status, Guid? id)
    {
        var address = status?.Members.FirstOrDefault(m => m.Id == id)?.Address;
        var node = address is null ? null : nodes.FirstOrDefault(n => address.StartsWith(n.Address + ":", StringComparison.Ordinal));
        return node is null ? Out.Short(id) : $"node {node.Number}";
    }

    /// <summary>9400 if free on all three addresses, else a port that is; or the one asked for.</summary>
    private static int PickPort(int requested)
    {
        var addresses = new[] { "127.0.0.1", "127.0.0.2", "127.0.0.3" }.Select(IPAddress.Parse).ToArray();
        bool Free(int p) => addresses.All(a => IsFree(a, p));
        if (requested != 0)
        {
            if (requested is < 1 or > 65535) throw new CliException(Exit.Usage, $"--port {requested} is not between 1 and 65535");
            if (!Free(requested)) throw new CliException(Exit.ServeFailed, $"port {requested} is in use on 127.0.0.1-3");
            return requested;
        }
        if (Free(9400)) return 9400;
        for (var i = 0; i < 50; i++)
        {
            var probe = new TcpListener(IPAddress.Loopback, 0);
            probe.Start();
            var p = ((IPEndPoint)probe.LocalEndpoint).Port;
            probe.Stop();
            if (Free(p)) return p;
        }
        throw new CliException(Exit.ServeFailed, "found no port free on 127.0.0.1-3");
    }

    private static bool IsFree(IPAddress address, int port)
    {
        try
        {
            var l = new TcpListener(address, port);
            l.Start();
            l.Stop();
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

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

    /// <summary>The measured results, printed at the end.</summary>
    private sealed class Summary
    {
        public int Port;
        public int Writes;
        public int Watched;
        public int Victim;
        public long FailoverMs;
        public string NewLeader = "";
        public long NewTerm;
        public long RejoinMs;
        public int Intact;
        public int Expected;

        public void Print(string cleanup, TimeSpan total)
        {
            Console.WriteLine();
            Console.WriteLine("Summary");
            Console.WriteLine($"  cluster: 3 'skiff serve' processes on 127.0.0.1-3, port {Port}");
            Console.WriteLine($"  writes and reads through different nodes: {Writes} keys, all read back");
            Console.WriteLine($"  watch: {Watched} changes received on node 3");
            Console.WriteLine($"  leader node {Victim} killed with SIGKILL: writes accepted again after {FailoverMs} ms (new leader {NewLeader}, term {NewTerm})");
            Console.WriteLine($"  node {Victim} restarted: rejoined and caught up in {RejoinMs} ms, data intact ({Intact}/{Expected} keys)");
            Console.WriteLine($"  {cleanup}");
            Console.WriteLine($"demo finished in {total.TotalSeconds:0.0} s");
        }
    }

    /// <summary>A <c>skiff serve</c> child process: node <see cref="Number"/> on 127.0.0.N.</summary>
    private sealed class NodeProcess(int number, int port, string dir, string? join)
    {
        private readonly ConcurrentQueue<string> _tail = new();
        private Process? _process;

        public int Number { get; } = number;
        public IPAddress Address { get; } = IPAddress.Parse($"127.0.0.{number}");
        public int Pid => _process?.Id ?? 0;

        public void Start()
        {
            var (file, prefix) = SelfCommand();
            var psi = new ProcessStartInfo(file)
            {
                RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false,
            };
            foreach (var a in prefix) psi.ArgumentList.Add(a);
            foreach (var a in new[] { "serve", "--dir", dir, "--bind", Address.ToString(), "--port", port.ToString(), "--parent-pid", Environment.ProcessId.ToString() })
                psi.ArgumentList.Add(a);
            if (join is not null)
            {
                psi.ArgumentList.Add("--join");
                psi.ArgumentList.Add(join);
            }
            var p = new Process { StartInfo = psi, EnableRaisingEvents = true };
            p.OutputDataReceived += (_, e) => Keep(e.Data);
            p.ErrorDataReceived += (_, e) => Keep(e.Data);
            p.Start();
            p.BeginOutputReadLine();
            p.BeginErrorReadLine();
            _process?.Dispose();
            _process = p;
        }

        private void Keep(string? line)
        {
            if (line is null) return;
            _tail.Enqueue(line);
            while (_tail.Count > 30) _tail.TryDequeue(out _);
        }

        /// <summary>SIGKILL, as a crash would.</summary>
        public void Kill()
        {
            try
            {
                if (_process is { HasExited: false } p)
                {
                    p.Kill();
                    p.WaitForExit(5000);
                }
            }
            catch (InvalidOperationException) { }
        }

        /// <summary>SIGTERM and a clean shutdown; SIGKILL after 5 s. True once the process is gone.</summary>
        public async Task<bool> StopAsync()
        {
            if (_process is not { } p) return true;
            try
            {
                if (!p.HasExited)
                {
                    if (!OperatingSystem.IsWindows()) Terminate(p.Id);
                    else p.Kill();
                    using var grace = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                    try { await p.WaitForExitAsync(grace.Token); }
                    catch (OperationCanceledException) { p.Kill(); p.WaitForExit(5000); }
                }
                return p.HasExited;
            }
            catch (InvalidOperationException) { return true; }
        }

        public void DumpTail(TextWriter to)
        {
            foreach (var line in _tail) to.WriteLine($"  node {Number}: {line}");
        }

        [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "kill", SetLastError = true)]
        private static extern int SysKill(int pid, int signal);

        private static void Terminate(int pid) => SysKill(pid, 15);

        /// <summary>How to start this same program again: the apphost, or <c>dotnet Skiff.Cli.dll</c>.</summary>
        private static (string File, string[] Prefix) SelfCommand()
        {
            var path = Environment.ProcessPath ?? throw new CliException(Exit.Internal, "cannot tell which program this is");
            return Path.GetFileNameWithoutExtension(path).Equals("dotnet", StringComparison.OrdinalIgnoreCase)
                ? (path, new[] { typeof(Demo).Assembly.Location })
                : (path, Array.Empty<string>());
        }
    }

    /// <summary>What the demo shows: the live table and the latest events on a terminal, plain lines otherwise.</summary>
    private sealed class View(bool live, Stopwatch clock)
    {
        private readonly List<string> _events = new();
        private readonly Lock _gate = new();
        private volatile ClusterStatus? _status;
        private string _step = "";

        public ClusterStatus? Status
        {
            get => _status;
            set => _status = value;
        }

        public void Step(string text)
        {
            lock (_gate) _step = text;
            Add($"== {text}");
        }

        public void Note(string text) => Add($"   {text}");

        private void Add(string text)
        {
            var line = $"[{clock.Elapsed.TotalSeconds,5:0.0}s] {text}";
            lock (_gate) _events.Add(line);
            if (!live)
            {
                Console.WriteLine(line);
                Console.Out.Flush();
            }
        }

        /// <summary>Plain mode: the member table as lines, at the demo's milestones.</summary>
        public void Snapshot()
        {
            if (live || _status is not { } s) return;
            foreach (var m in s.Members)
                Console.WriteLine($"         {Name(m),-7} {m.Address,-16} {Out.Role(m),-9} term {(m.Reachable ? m.Term.ToString() : "-"),-3} " +
                                  $"commit {(m.Reachable ? m.CommitIndex.ToString() : "-"),-4} applied {(m.Reachable ? m.AppliedIndex.ToString() : "-"),-4} " +
                                  $"leader {(m.Reachable ? Out.Short(m.LeaderId) : "-")}");
        }

        private static string Name(MemberStatus m) =>
            IPEndPoint.TryParse(m.Address, out var ep) ? $"node {ep.Address.GetAddressBytes()[3]}" : "?";

        public IRenderable Render()
        {
            string[] recent;
            string step;
            lock (_gate)
            {
                recent = _events.TakeLast(14).ToArray();
                step = _step;
            }
            IRenderable table = _status is { } s
                ? Out.StatusTable(s, Name).Title($"[bold]Skiff demo[/] — {Markup.Escape(step)}")
                : new Markup("[grey]waiting for the first status…[/]");
            var log = new Rows(recent.Select(l => new Text(l)).Cast<IRenderable>().ToArray());
            return new Rows(table, new Panel(log).Header("events").Expand());
        }
    }
}
