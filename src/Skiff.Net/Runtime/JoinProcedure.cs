using Microsoft.FSharp.Core;
using Skiff.Core;

namespace Skiff.Net.Runtime;

/// <summary>
/// How a new node joins a running cluster: it asks the members it was given, one after another with backoff, to add
/// it (any member forwards the request to the leader), then waits until the leader has promoted it from learner to
/// voter, so that a caller who stops it next does not leave the others a majority that does not count it.
/// </summary>
internal static class JoinProcedure
{
    /// <summary>Joins through <see cref="SkiffServerOptions.JoinPeers"/> within <see cref="SkiffServerOptions.JoinTimeout"/>.</summary>
    /// <exception cref="SkiffException">ClusterJoinFailed when no member added it, or it was not promoted in time.</exception>
    public static async Task JoinAsync(Guid id, string address, SkiffServerOptions options, NodeRuntime runtime, CancellationToken shutdown,
        CancellationToken ct)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct, shutdown);
        cts.CancelAfter(options.JoinTimeout);
        var peers = options.JoinPeers.Select(p => p.Contains(':') ? p : $"{p}:{options.Port}").ToArray();
        Exception? last = null;
        var delay = 50;
        while (!cts.IsCancellationRequested)
        {
            foreach (var peer in peers)
            {
                if (peer == address) continue;
                try
                {
                    using (var client = new SkiffGrpcClient(new[] { peer }))
                        await client.AddServerAsync(id, address, cts.Token).ConfigureAwait(false);
                    try
                    {
                        await WaitUntilVoterAsync(id, runtime, cts.Token).ConfigureAwait(false);
                        return;
                    }
                    catch (OperationCanceledException) when (!ct.IsCancellationRequested && !shutdown.IsCancellationRequested)
                    {
                        throw new SkiffException(ErrorKind.ClusterJoinFailed,
                            $"added to the cluster through {peer} as a learner, but not promoted to voter within {options.JoinTimeout.TotalSeconds:0.#} s");
                    }
                }
                catch (Exception e) when (e is SkiffException or OperationCanceledException)
                {
                    last = e;
                }
            }
            try { await Task.Delay(delay, cts.Token).ConfigureAwait(false); }
            catch (OperationCanceledException) { break; }
            delay = Math.Min(500, delay * 2);
        }
        ct.ThrowIfCancellationRequested();
        throw new SkiffException(ErrorKind.ClusterJoinFailed,
            $"could not join through {string.Join(", ", peers)} within {options.JoinTimeout.TotalSeconds:0.#} s: {last?.Message}", last);
    }

    /// <summary>Completes once the configuration in force on this node lists it as a voter.</summary>
    private static async Task WaitUntilVoterAsync(Guid id, NodeRuntime runtime, CancellationToken ct)
    {
        var voter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        void Check(Configuration c)
        {
            if (c.Members.TryFind(id) is { } m && FSharpOption<Member>.get_IsSome(m) && m.Value.Voter) voter.TrySetResult();
        }
        runtime.ConfigurationChanged += Check;
        try
        {
            Check(runtime.Configuration);
            await voter.Task.WaitAsync(ct).ConfigureAwait(false);
        }
        finally
        {
            runtime.ConfigurationChanged -= Check;
        }
    }
}
