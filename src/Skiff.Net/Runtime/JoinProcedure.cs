using Microsoft.Extensions.Logging;
using Microsoft.FSharp.Core;
using Skiff.Core;

namespace Skiff.Net.Runtime;

/// <summary>
/// How a new node joins a running cluster: it asks the members it was given, one after another with backoff, to add
/// it (any member forwards the request to the leader), then waits until the leader has promoted it from learner to
/// voter, so that a caller who stops it next does not leave the others a majority that does not count it.
/// </summary>
internal sealed class JoinProcedure
{
    private readonly SkiffServer _node;
    private readonly NodeRuntime _runtime;
    private readonly SkiffServerOptions _options;
    private readonly ILogger _logger;

    /// <summary>The join of <paramref name="node"/>, whose loop <paramref name="runtime"/> is running.</summary>
    public JoinProcedure(SkiffServer node, NodeRuntime runtime, SkiffServerOptions options, ILogger logger)
    {
        _node = node;
        _runtime = runtime;
        _options = options;
        _logger = logger;
    }

    private Guid Id => _node.Id;

    /// <summary>Joins through <see cref="SkiffServerOptions.JoinPeers"/>: asks for this node to be added (as a learner),
    /// then waits until the leader promotes it, which takes as long as catching up takes. Every attempt has its own
    /// deadline (a member that dies mid-call must not hold the join); the whole join has <see
    /// cref="SkiffServerOptions.JoinTimeout"/>, or none with <see cref="SkiffServerOptions.KeepJoining"/> (as
    /// <c>skiff serve</c>). Fails at once only on a definitive refusal: the cluster holds this id at another address.
    /// A node dropped from the configuration while it waits (an uncommitted add lost with its leader) asks again.</summary>
    /// <exception cref="SkiffException">ClusterJoinFailed when refused, or not added and promoted in time.</exception>
    public async Task JoinAsync(CancellationToken shutdown, CancellationToken ct)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct, shutdown);
        if (!_options.KeepJoining) cts.CancelAfter(_options.JoinTimeout);
        var peers = _options.JoinPeers.Select(p => p.Contains(':') ? p : $"{p}:{_options.Port}").ToArray();
        Exception? last = null;
        var delay = 50;
        var added = false;
        var trying = System.Diagnostics.Stopwatch.StartNew();
        while (!cts.IsCancellationRequested)
        {
            foreach (var peer in peers)
            {
                if (peer == _node.Address || cts.IsCancellationRequested) continue;
                try
                {
                    await AskToBeAddedAsync(peer, cts.Token).ConfigureAwait(false);
                }
                catch (SkiffException e) when (e.Kind is ErrorKind.PeerNotFound or ErrorKind.ClusterMismatch)
                {
                    // The leader refused the change itself ("already a member with another address"), or the member
                    // belongs to another cluster than this directory: asking again cannot help.
                    var moved = e.Kind == ErrorKind.PeerNotFound
                        ? $" (if this member moved, give it its new address first: skiff member update {Id} {_node.Address})"
                        : "";
                    throw new SkiffException(ErrorKind.ClusterJoinFailed, $"the cluster refused to add this node through {peer}: {e.Message}{moved}", e);
                }
                catch (Exception e) when (e is SkiffException or OperationCanceledException)
                {
                    last = e;
                    continue;
                }
                added = true;
                try
                {
                    if (await WaitUntilVoterAsync(peer, cts.Token).ConfigureAwait(false)) return;
                    _logger.LogWarning("Skiff node {NodeId}: no longer in the configuration while waiting to be promoted; asking to be added again", Id);
                }
                catch (OperationCanceledException) when (!ct.IsCancellationRequested && !shutdown.IsCancellationRequested)
                {
                    throw new SkiffException(ErrorKind.ClusterJoinFailed,
                        $"added to the cluster through {peer} as a learner, but not promoted to voter within {_options.JoinTimeout.TotalSeconds:0.#} s");
                }
            }
            try { await Task.Delay(delay, cts.Token).ConfigureAwait(false); }
            catch (OperationCanceledException) { break; }
            delay = Math.Min(500, delay * 2);
            if (trying.Elapsed >= TimeSpan.FromSeconds(5))
            {
                _logger.LogInformation("Skiff node {NodeId}: still trying to join through {Peers}: {Error}", Id, string.Join(", ", peers), last?.Message);
                trying.Restart();
            }
        }
        ct.ThrowIfCancellationRequested();
        throw new SkiffException(ErrorKind.ClusterJoinFailed,
            $"could not {(added ? "stay in the cluster" : "join")} through {string.Join(", ", peers)} within {_options.JoinTimeout.TotalSeconds:0.#} s: {last?.Message}", last);
    }

    /// <summary>One AddServer call through <paramref name="peer"/>, with a deadline of its own. A node that knows its
    /// cluster asks only a member of it (another refuses with ClusterMismatch); a new node first learns the cluster
    /// of the member it asks and keeps it, so that from then on it refuses every other cluster.</summary>
    private async Task AskToBeAddedAsync(string peer, CancellationToken ct)
    {
        using var attempt = CancellationTokenSource.CreateLinkedTokenSource(ct);
        using var client = new SkiffGrpcClient(new[] { peer }, forwarded: false, _node.PeerChannels);
        attempt.CancelAfter(_options.RequestTimeout);
        if (_node.Cluster.Id is { } mine) client.ExpectCluster(mine);
        else
        {
            await client.ClusterStatusAsync(attempt.Token).ConfigureAwait(false);
            if (client.ClusterId is { } learned) _node.Cluster.Adopt(learned);
        }
        await client.AddServerAsync(Id, _node.Address, attempt.Token).ConfigureAwait(false);
    }

    /// <summary>Completes with true once the configuration in force on this node lists it as a voter, with false
    /// if a configuration that listed it no longer does. Logs its progress every 5 s while it waits.</summary>
    private async Task<bool> WaitUntilVoterAsync(string through, CancellationToken ct)
    {
        var done = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var listed = false;
        void Check(Configuration c)
        {
            if (c.Members.TryFind(Id) is { } m && FSharpOption<Member>.get_IsSome(m))
            {
                listed = true;
                if (m.Value.Voter) done.TrySetResult(true);
            }
            else if (listed) done.TrySetResult(false);
        }
        _runtime.ConfigurationChanged += Check;
        try
        {
            Check(_runtime.Configuration);
            var waited = System.Diagnostics.Stopwatch.StartNew();
            while (true)
            {
                var finished = await Task.WhenAny(done.Task, Task.Delay(TimeSpan.FromSeconds(5), ct)).ConfigureAwait(false);
                if (finished == done.Task) return await done.Task.ConfigureAwait(false);
                ct.ThrowIfCancellationRequested();
                _logger.LogInformation(
                    "Skiff node {NodeId}: added through {Peer}, a learner for {Seconds:0} s, catching up: commit {Commit}, applied {Applied}, leader {Leader}",
                    Id, through, waited.Elapsed.TotalSeconds, _node.CommitIndex, _node.AppliedIndex, _node.LeaderId?.ToString() ?? "unknown");
            }
        }
        finally
        {
            _runtime.ConfigurationChanged -= Check;
        }
    }
}
