using System.Collections.Concurrent;
using Skiff.Core;

namespace Skiff.Net.Runtime;

/// <summary>Where a call entered this node, which decides whether it may be forwarded on.</summary>
internal enum CallOrigin
{
    /// <summary>The embedding application, or a client connected to this node: forwarded to the leader when this
    /// node is not it.</summary>
    Local,

    /// <summary>Another member forwarded it here: answered here or refused with NotLeader, never forwarded again
    /// (the forwarding member retries), so a call cannot loop between members that disagree about the leader.</summary>
    Forwarded,
}

/// <summary>
/// Runs a call on this node when it can, forwards it to the leader when it cannot, and tries again within the call's
/// deadline under one retry policy shared by every key-value and membership call.
/// </summary>
internal sealed class LeaderRouter : IDisposable
{
    private readonly Guid _self;
    private readonly Func<Guid?> _leader;
    private readonly Func<Role> _role;
    private readonly Func<Guid, string?> _addressOf;
    private readonly Func<Guid?> _cluster;
    private readonly Tls.ChannelSecurity _security;
    private readonly TimeSpan _defaultTimeout;
    private readonly CancellationToken _shutdown;
    private readonly ConcurrentDictionary<string, SkiffGrpcClient> _forwarders = new();

    // Completed (and replaced) whenever the leader this node knows changes, so a call forwarded to a leader that
    // stopped answering is sent to the next one as soon as it is known.
    private TaskCompletionSource _leaderChange = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Guid? _knownLeader;

    /// <summary>Creates the router of node <paramref name="self"/>; the functions read the node's current view.</summary>
    public LeaderRouter(Guid self, Func<Guid?> leader, Func<Role> role, Func<Guid, string?> addressOf, Func<Guid?> cluster,
        Tls.ChannelSecurity security, TimeSpan defaultTimeout, CancellationToken shutdown)
    {
        _cluster = cluster;
        _security = security;
        _self = self;
        _leader = leader;
        _role = role;
        _addressOf = addressOf;
        _defaultTimeout = defaultTimeout;
        _shutdown = shutdown;
    }

    /// <summary>Tells the router the leader this node knows now (called on every role change).</summary>
    public void NoteLeader(Guid? leader)
    {
        if (leader == _knownLeader) return;
        _knownLeader = leader;
        Interlocked.Exchange(ref _leaderChange, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
    }

    /// <summary>Errors after which a call is tried again (on this node or forwarded to the leader) within its deadline:
    /// the node was not the leader or lost leadership, the leader was unreachable or broke the call, the request's
    /// entry was replaced, or a transfer or membership change was under way.</summary>
    private static bool Retryable(SkiffException e) => e.Kind is ErrorKind.NotLeader or ErrorKind.ClientConnectFailed
        or ErrorKind.RpcCallFailed or ErrorKind.StreamClosed or ErrorKind.Timeout or ErrorKind.NoQuorum or ErrorKind.InsertFailed;

    /// <summary>Runs a call locally, forwarding it to the leader when this node is not it, and tries again within the
    /// deadline while no leader is known or a retryable failure comes back.</summary>
    /// <remarks>An <paramref name="idempotent"/> call (a read, a membership call, a write in a client session, which
    /// the state machine applies once however often it is proposed) is tried again after any retryable failure,
    /// including one that may have hidden its outcome, and a forwarded attempt is abandoned for the new leader as
    /// soon as the leader changes. Any other call is tried again only after a failure that proves it did not take
    /// effect. Every error thrown says, in <see cref="SkiffException.Outcome"/>, whether some attempt may have taken
    /// effect.</remarks>
    public async Task<T> RouteAsync<T>(Func<CancellationToken, Task<T>> local, Func<SkiffGrpcClient, CancellationToken, Task<T>>? remote,
        CallOrigin origin, CancellationToken ct, TimeSpan? timeout = null, bool idempotent = true)
    {
        var forwarded = origin == CallOrigin.Forwarded;
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct, _shutdown);
        cts.CancelAfter(timeout ?? _defaultTimeout);
        var token = cts.Token;
        var delay = 5;
        Exception? last = null;
        var mayHaveApplied = false; // an earlier attempt may have taken effect
        var inFlight = false;       // an attempt is under way (so the deadline may cut it after it took effect)
        while (true)
        {
            try
            {
                // The attempt, local or forwarded; its errors (those thrown by the handlers too) then meet the rule
                // below, so that a forwarded attempt's refusal is held to it as a local one is.
                try
                {
                    try
                    {
                        inFlight = true;
                        return await local(token).ConfigureAwait(false);
                    }
                    catch (NotLeaderException nl)
                    {
                        inFlight = false;
                        var leader = nl.Hint ?? _leader();
                        if (forwarded || remote is null)
                        {
                            var addr = leader is { } l0 ? _addressOf(l0) : null;
                            throw new SkiffException(ErrorKind.NotLeader,
                                leader is null ? "no leader is known" : $"the leader is {leader} at {addr}", null,
                                mayHaveApplied ? WriteOutcome.Unknown : WriteOutcome.NotApplied);
                        }
                        last = nl;
                        if (leader is { } l && l != _self && _addressOf(l) is { } address)
                        {
                            try
                            {
                                inFlight = true;
                                return await ForwardAsync(remote, address, idempotent, token).ConfigureAwait(false);
                            }
                            catch (SkiffException e) when (Retryable(e) && (idempotent || e.Outcome == WriteOutcome.NotApplied))
                            {
                                last = e;
                                mayHaveApplied |= e.Outcome == WriteOutcome.Unknown;
                            }
                            inFlight = false;
                        }
                    }
                    catch (RetryableException r) { last = r; }
                    catch (SkiffException e) when (Retryable(e) && !forwarded && (idempotent || e.Outcome == WriteOutcome.NotApplied))
                    {
                        last = e;
                        mayHaveApplied |= e.Outcome == WriteOutcome.Unknown;
                    }
                }
                catch (SkiffException e) when (mayHaveApplied && e.Kind == ErrorKind.Overloaded && e.Outcome == WriteOutcome.NotApplied)
                {
                    // A resend refused before it was proposed, while an earlier attempt may sit uncommitted in the
                    // log (and fill the cap that refused it): sent again until the write's outcome is known (the
                    // session answers a resend of an applied write with its result) or the deadline says unknown.
                    last = e;
                }
                catch (SkiffException e) when (mayHaveApplied && e.Outcome == WriteOutcome.NotApplied)
                {
                    // This attempt did nothing, but an earlier one may have: whatever ends the call must say so.
                    throw new SkiffException(e.Kind, e.Detail + "; an earlier attempt may have taken effect", e, WriteOutcome.Unknown);
                }
                inFlight = false;
                await Task.Delay(delay, token).ConfigureAwait(false);
                delay = Math.Min(100, delay * 2);
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                throw DeadlinePassed(mayHaveApplied || inFlight ? WriteOutcome.Unknown : WriteOutcome.NotApplied, last);
            }
        }
    }

    /// <summary>The error a call ends with when its deadline passes (or the node shuts down) before it completed.</summary>
    private SkiffException DeadlinePassed(WriteOutcome outcome, Exception? last)
    {
        if (_shutdown.IsCancellationRequested) return new SkiffException(ErrorKind.StreamClosed, "the node is shutting down", null, outcome);
        var what = outcome == WriteOutcome.Unknown ? "its outcome is unknown" : "it did not take effect";
        var leader = _leader();
        if (leader is null || (_role() == Role.Leader && last is null))
            return new SkiffException(ErrorKind.NoQuorum,
                leader is null ? $"no leader could be reached before the deadline; {what}"
                    : $"no quorum of members answered before the deadline; {what}", null, outcome);
        return new SkiffException(ErrorKind.Timeout, $"the request did not complete before the deadline ({last?.Message}); {what}", null, outcome);
    }

    /// <summary>One forwarded attempt. An idempotent one is abandoned (its outcome unknown) when the leader changes,
    /// so a call sent to a leader that was paused or cut off goes to the new leader at once, not at its deadline.</summary>
    private async Task<T> ForwardAsync<T>(Func<SkiffGrpcClient, CancellationToken, Task<T>> remote, string address, bool idempotent,
        CancellationToken token)
    {
        if (!idempotent) return await remote(ForwarderFor(address), token).ConfigureAwait(false);
        var changed = Volatile.Read(ref _leaderChange).Task;
        using var attempt = CancellationTokenSource.CreateLinkedTokenSource(token);
        var call = remote(ForwarderFor(address), attempt.Token);
        if (await Task.WhenAny(call, changed).ConfigureAwait(false) == call) return await call.ConfigureAwait(false);
        attempt.Cancel();
        _ = call.ContinueWith(t => _ = t.Exception, TaskScheduler.Default); // observed: the attempt is abandoned
        throw new SkiffException(ErrorKind.RpcCallFailed, $"the leader changed while {address} handled the call", null, WriteOutcome.Unknown);
    }

    private SkiffGrpcClient ForwarderFor(string address) =>
        _forwarders.GetOrAdd(address, a =>
        {
            var forwarder = new SkiffGrpcClient(new[] { a }, forwarded: true, _security)
            {
                TokenSource = () => ForwardToken?.Invoke(),
                MemberTokenSource = () => MemberToken?.Invoke(),
            };
            return _cluster() is { } id ? forwarder.ExpectCluster(id) : forwarder;
        });

    /// <summary>The auth token a forwarded call carries (see Auth.AuthForwarding); null: none.</summary>
    public Func<string?>? ForwardToken { get; set; }

    /// <summary>The token proving a forwarded call comes from a member, carried beside the client's; null: none.</summary>
    public Func<string?>? MemberToken { get; set; }

    /// <summary>Closes the connections to the leaders calls were forwarded to.</summary>
    public void Dispose()
    {
        foreach (var f in _forwarders.Values) f.Dispose();
        _forwarders.Clear();
    }
}
