using System.Diagnostics;
using System.Text;

namespace Skiff.Cli;

/// <summary>What <c>skiff demo</c> does to its cluster, one method per step: form it, write and read through
/// different nodes, watch on one node while another writes, kill the leader and time the failover, restart the
/// killed node and check that it caught up. Each step notes what it saw on the view and adds its measurements to the
/// summary; a step that does not see what it should throws <see cref="CliException"/>.</summary>
internal sealed class DemoScenario(DemoView view, List<DemoNodeProcess> nodes, int port, Client cluster, CancellationToken ct)
{
    private const int Items = 20;
    private readonly DemoSummary _summary = new() { Port = port };
    /// <summary>Every key written, with its value: what the restarted node must hold.</summary>
    private readonly Dictionary<string, string> _expected = new();

    public async Task<DemoSummary> RunAsync()
    {
        await FormClusterAsync();
        var clients = nodes.Select(n => new Client(new[] { n.Address }).WithPort(port).WithTimeout(TimeSpan.FromSeconds(3))).ToArray();
        try
        {
            await WriteAndReadThroughDifferentNodesAsync(clients);
            await WatchWhileAnotherNodeWritesAsync(clients);
            var victim = await KillTheLeaderAsync();
            await RestartAndCatchUpAsync(victim);
            view.Step("done: stopping the nodes and removing the directory");
            return _summary;
        }
        finally
        {
            foreach (var c in clients) await c.DisposeAsync();
        }
    }

    /// <summary>1. Three nodes: node 1 starts a cluster, nodes 2 and 3 join it through node 1.</summary>
    private async Task FormClusterAsync()
    {
        view.Step("starting 3 nodes as 'skiff serve' processes");
        nodes[0].Start();
        view.Note($"node 1 started (pid {nodes[0].Pid}) on {nodes[0].Address}:{port}");
        await Until("node 1 elects itself", 30, async () => (await StatusAsync())?.LeaderId is not null);
        nodes[1].Start();
        nodes[2].Start();
        view.Note($"node 2 (pid {nodes[1].Pid}) and node 3 (pid {nodes[2].Pid}) started, joining through node 1");
        ClusterStatus? current = null;
        var formed = await Until("3 voters agree on a leader", 40, async () =>
        {
            var s = current = await StatusAsync();
            return s is { LeaderId: not null } && s.Members.Count == 3
                   && s.Members.All(m => m.Reachable && m.Voter && m.LeaderId == s.LeaderId && m.AppliedIndex == m.CommitIndex);
        });
        view.Status = current;
        view.Note($"cluster formed in {formed.TotalSeconds:0.0} s: leader is {NameOf(current, current?.LeaderId)}");
        view.Snapshot();
    }

    /// <summary>2. Writes and reads through different nodes.</summary>
    private async Task WriteAndReadThroughDifferentNodesAsync(Client[] clients)
    {
        view.Step("writing through one node and reading through another");
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
            _expected[key] = value;
        }
        var batch = Stopwatch.StartNew();
        for (var i = 0; i < Items; i++)
        {
            var key = $"demo/items/{i:00}";
            var value = $"item {i}";
            await clients[i % 3].InsertBytesAsync(key, Encoding.UTF8.GetBytes(value), ct);
            _expected[key] = value;
        }
        view.Note($"{Items} more keys written round-robin through nodes 1-3 in {batch.ElapsedMilliseconds} ms");
        _summary.Writes = _expected.Count;
    }

    /// <summary>3. A watch on node 3 sees changes written through node 1.</summary>
    private async Task WatchWhileAnotherNodeWritesAsync(Client[] clients)
    {
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
                _summary.Watched++;
            }
        }
        view.Snapshot();
    }

    /// <summary>4. SIGKILL the leader; time until a write through the survivors is accepted again; write more
    /// while it is down. Returns the killed node.</summary>
    private async Task<DemoNodeProcess> KillTheLeaderAsync()
    {
        var before = await StatusAsync() ?? throw new CliException(Exit.NoQuorum, "no status before the kill");
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
        _expected["demo/after-failover"] = "accepted by the new leader";
        ClusterStatus? current = null;
        await Until("a new leader is known", 10, async () =>
            (current = await StatusAsync())?.LeaderId is { } l && l != before.LeaderId);
        view.Status = current;
        var newLeader = current?.Members.FirstOrDefault(m => m.Id == current.LeaderId);
        _summary.Victim = victim.Number;
        _summary.FailoverMs = failover.ElapsedMilliseconds;
        _summary.NewLeader = NameOf(current, current?.LeaderId);
        _summary.NewTerm = newLeader?.Term ?? 0;
        view.Note($"writes accepted again {failover.ElapsedMilliseconds} ms after the kill ({attempts} attempt{(attempts == 1 ? "" : "s")}); new leader {_summary.NewLeader} in term {_summary.NewTerm}");
        for (var i = 0; i < 5; i++)
        {
            var key = $"demo/while-node{victim.Number}-down/{i}";
            await rest.InsertBytesAsync(key, Encoding.UTF8.GetBytes($"missed by node {victim.Number}"), ct);
            _expected[key] = $"missed by node {victim.Number}";
        }
        view.Note($"5 keys written while node {victim.Number} is down");
        view.Snapshot();
        return victim;
    }

    /// <summary>5. Restart the killed node on its data directory; it rejoins and catches up, and its own store
    /// holds every key written.</summary>
    private async Task RestartAndCatchUpAsync(DemoNodeProcess victim)
    {
        view.Step($"restarting node {victim.Number} on its data directory");
        var rejoin = Stopwatch.StartNew();
        victim.Start();
        view.Note($"node {victim.Number} restarted (pid {victim.Pid})");
        var target = (await StatusAsync())?.Members.Where(m => m.Reachable).Select(m => m.CommitIndex).DefaultIfEmpty(0).Max() ?? 0;
        await Until($"node {victim.Number} catches up", 30, async () =>
        {
            var s = await StatusAsync();
            var me = s?.Members.FirstOrDefault(m => m.Address.StartsWith(victim.Address + ":", StringComparison.Ordinal));
            return me is { Reachable: true, Role: "Follower" } && me.LeaderId == s!.LeaderId && me.AppliedIndex >= target;
        });
        rejoin.Stop();
        await using var own = new Client(new[] { victim.Address }).WithPort(port).WithTimeout(TimeSpan.FromSeconds(3));
        var intact = 0;
        foreach (var (key, value) in _expected)
        {
            var read = await own.GetBytesAsync(key, ReadConsistency.Stale, ct);
            if (read is not null && Encoding.UTF8.GetString(read) == value) intact++;
            else view.Note($"node {victim.Number} has {(read is null ? "no value" : $"\"{Encoding.UTF8.GetString(read)}\"")} for {key}");
        }
        _summary.RejoinMs = rejoin.ElapsedMilliseconds;
        _summary.Intact = intact;
        _summary.Expected = _expected.Count;
        view.Note($"node {victim.Number} rejoined as a follower and applied up to index {target} in {rejoin.ElapsedMilliseconds} ms; " +
                  $"its own store holds {intact}/{_expected.Count} keys");
        view.Snapshot();
        if (intact != _expected.Count)
            throw new CliException(Exit.Internal, $"node {victim.Number} holds {intact} of {_expected.Count} keys after rejoining");
    }

    private async Task<ClusterStatus?> StatusAsync()
    {
        try { return await cluster.GetStatusAsync(ct); }
        catch (SkiffException) { return null; }
    }

    /// <summary>Polls <paramref name="condition"/> until true; fails the demo after <paramref name="seconds"/>.</summary>
    private async Task<TimeSpan> Until(string what, double seconds, Func<Task<bool>> condition)
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

    private string NameOf(ClusterStatus? status, Guid? id)
    {
        var address = status?.Members.FirstOrDefault(m => m.Id == id)?.Address;
        var node = address is null ? null : nodes.FirstOrDefault(n => address.StartsWith(n.Address + ":", StringComparison.Ordinal));
        return node is null ? Out.Short(id) : $"node {node.Number}";
    }
}
