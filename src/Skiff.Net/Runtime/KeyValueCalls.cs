using System.Runtime.CompilerServices;
using Microsoft.FSharp.Core;
using Skiff.Core;
using Skiff.Net.Storage.Ports;

namespace Skiff.Net.Runtime;

/// <summary>
/// The key-value calls of one node (client sessions, writes, reads, watches), whichever way they arrive: from the
/// embedding application, from a client of this node, or forwarded by another member. Writes are applied exactly
/// once, reads are linearizable unless asked otherwise, and every call is routed by the node's <see cref="LeaderRouter"/>.
/// </summary>
internal sealed class KeyValueCalls
{
    private readonly Func<NodeRuntime> _runtime;
    private readonly IStateMachine _state;
    private readonly LeaderRouter _router;
    private readonly SkiffServerOptions _options;
    private readonly CancellationToken _shutdown;
    private readonly ClientSession _ownSession;

    /// <summary>Creates the calls of a node whose running loop <paramref name="runtime"/> returns (it throws while
    /// the node is not running).</summary>
    public KeyValueCalls(Func<NodeRuntime> runtime, IStateMachine state, LeaderRouter router, SkiffServerOptions options,
        CancellationToken shutdown)
    {
        _runtime = runtime;
        _state = state;
        _router = router;
        _options = options;
        _shutdown = shutdown;
        _ownSession = new ClientSession(OpenOwnAsync);
    }

    private volatile bool _ownOpenedWithAuth;

    /// <summary>The id of this node's own session (0 while none is open; for tests and diagnostics).</summary>
    internal long OwnSessionId => _ownSession.Id;

    /// <summary>Opens this node's own session: as the member itself, not as whichever client's write happened to
    /// need it first (so the session belongs to the members, Auth.AuthCheck's session rule).</summary>
    private async Task<long> OpenOwnAsync(CancellationToken ct)
    {
        Auth.AuthForwarding.Clear();
        var withAuth = _state.Auth.Enabled;
        var (id, _) = await OpenSessionAsync(TimeSpan.Zero, CallOrigin.Local, ct).ConfigureAwait(false);
        _ownOpenedWithAuth = withAuth;
        return id;
    }

    private static long NowMs() => DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();

    // ------------------------------------------------------------------ client sessions

    private long SessionTimeoutMs(TimeSpan requested)
    {
        var chosen = requested > TimeSpan.Zero ? requested : _options.SessionTimeout;
        return Math.Clamp((long)chosen.TotalMilliseconds, Sessions.MinTimeoutMs, Sessions.MaxTimeoutMs);
    }

    /// <summary>Opens a client session through the log (expiring after <paramref name="timeout"/> without writes;
    /// zero: the node's <see cref="SkiffServerOptions.SessionTimeout"/>); returns its id and timeout.</summary>
    public Task<(long Id, long TimeoutMs)> OpenSessionAsync(TimeSpan timeout, CallOrigin origin, CancellationToken ct)
    {
        var ms = SessionTimeoutMs(timeout);
        return _router.RouteAsync(async t =>
        {
            var (result, _) = await _runtime().ProposeAsync(LogCommandCodec.encode(LogCommand.NewOpenSession(NowMs(), ms, SessionOwner())), t).ConfigureAwait(false);
            return result is LogResult.SessionOpened opened
                ? (opened.session, ms)
                : throw new SkiffException(ErrorKind.StorageError, $"opening a session gave {result}");
        }, async (c, t) => (await c.OpenSessionAsync(TimeSpan.FromMilliseconds(ms), t).ConfigureAwait(false), ms),
            origin, ct, idempotent: false);
    }

    /// <summary>The owner a session opened now gets: the user the call was identified as (with auth on); the
    /// members themselves for a call that is no client's (this node's own session, the embedding application's
    /// calls, a member's forwarded own session); nobody in particular for a client's call while auth is off.</summary>
    private static string SessionOwner() =>
        Auth.AuthForwarding.User ?? (Auth.AuthForwarding.Token is null ? Auth.Tokens.MemberPrincipal : "");

    /// <summary>Closes a client session (an unknown one is fine).</summary>
    public Task CloseSessionAsync(long id, CallOrigin origin, CancellationToken ct) =>
        _router.RouteAsync(async t =>
        {
            await _runtime().ProposeAsync(LogCommandCodec.encode(LogCommand.NewCloseSession(id, NowMs())), t).ConfigureAwait(false);
            return true;
        }, async (c, t) =>
        {
            await c.CloseSessionAsync(id, t).ConfigureAwait(false);
            return true;
        }, origin, ct);

    // ------------------------------------------------------------------ writes

    /// <summary>Applies a key-value write exactly once: in the caller's session when one is given; otherwise in this
    /// node's own session, so that sending it again to a new leader, after a lost connection or a deposed leader,
    /// cannot apply it twice.</summary>
    public async Task<(CommandResult Result, long Index)> WriteAsync(Command command, SessionRef? session, CallOrigin origin, CancellationToken ct)
    {
        CheckLimits(command);
        if (session is { } given) return await WriteInSessionAsync(command, given, origin, ct).ConfigureAwait(false);
        var own = _ownSession;
        // Opened while auth was off, this node's session belongs to nobody in particular: once auth is on, any user
        // who may write could write in it. Open one that belongs to the members instead.
        if (!_ownOpenedWithAuth && own.Id != 0 && _state.Auth.Enabled) own.Forget(own.Id);
        var sequence = own.Begin();
        try
        {
            while (true)
            {
                var id = await OpenOwnSessionAsync(ct).ConfigureAwait(false);
                try
                {
                    return await WriteInSessionAsync(command, own.Stamp(id, sequence), origin, ct).ConfigureAwait(false);
                }
                catch (SkiffException e) when (e.Kind == ErrorKind.SessionExpired && e.Outcome == WriteOutcome.NotApplied)
                {
                    own.Forget(id); // this node's session expired while it was idle: open a new one and write in it
                }
            }
        }
        finally
        {
            own.End(sequence);
        }
    }

    /// <summary>The id of this node's own session, opened first if needed (within one request timeout).</summary>
    private async Task<long> OpenOwnSessionAsync(CancellationToken ct)
    {
        using var opening = CancellationTokenSource.CreateLinkedTokenSource(ct);
        opening.CancelAfter(_options.RequestTimeout);
        try { return await _ownSession.EnsureOpenAsync(opening.Token).ConfigureAwait(false); }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new SkiffException(ErrorKind.NoQuorum,
                "could not open this node's session before the deadline; the write did not take effect", null, WriteOutcome.NotApplied);
        }
    }

    private Task<(CommandResult Result, long Index)> WriteInSessionAsync(Command command, SessionRef session, CallOrigin origin, CancellationToken ct) =>
        _router.RouteAsync(t => ProposeInSessionAsync(command, session, t), (c, t) => ForwardWrite(c, command, session, t), origin, ct);

    private async Task<(CommandResult Result, long Index)> ProposeInSessionAsync(Command command, SessionRef session, CancellationToken ct)
    {
        var stamp = new SessionStamp(session.Id, session.Sequence, session.Acknowledged, NowMs());
        var (result, index) = await _runtime().ProposeAsync(LogCommandCodec.encode(LogCommand.NewInSession(stamp, command)), ct).ConfigureAwait(false);
        return result switch
        {
            LogResult.Applied applied => (applied.result, index),
            LogResult.Repeated repeated => (repeated.result, repeated.index),
            _ when result is not null && result.IsSessionUnknown => throw new SkiffException(ErrorKind.SessionExpired,
                $"session {session.Id} no longer exists (it was idle longer than its timeout, or was closed); this attempt did not take effect",
                null, WriteOutcome.NotApplied),
            _ when result is not null && result.IsResultDiscarded => throw new SkiffException(ErrorKind.SessionExpired,
                $"request {session.Sequence} of session {session.Id} is older than the results the session keeps; this attempt did not take effect",
                null, WriteOutcome.NotApplied),
            _ => throw new SkiffException(ErrorKind.StorageError, $"the write at index {index} gave {result}"),
        };
    }

    private static async Task<(CommandResult Result, long Index)> ForwardWrite(SkiffGrpcClient leader, Command command, SessionRef session, CancellationToken ct)
    {
        switch (command)
        {
            case Command.Insert put:
                return (CommandResult.Done, await leader.InsertOnceAsync(put.key, put.value, session, ct).ConfigureAwait(false));
            case Command.Remove delete:
                return (CommandResult.Done, await leader.RemoveOnceAsync(delete.key, session, ct).ConfigureAwait(false));
            case Command.CompareAndSwap cas:
                var (swapped, index) = await leader.CompareAndSwapOnceAsync(cas.key, cas.expected?.Value, cas.next?.Value, session, ct).ConfigureAwait(false);
                return (CommandResult.NewSwapped(swapped), index);
            default:
                throw new SkiffException(ErrorKind.InvalidArgument, $"unknown command {command}");
        }
    }

    /// <summary>The node's limits on keys and values (<see cref="RequestLimits"/>), checked before anything is
    /// proposed, whichever entry point the write came through (the client service checks them too, before forwarding).</summary>
    private void CheckLimits(Command command)
    {
        switch (command)
        {
            case Command.Insert p: RequestLimits.Put(p.key, p.value.Length, _options.MaxValueBytes); break;
            case Command.Remove d: RequestLimits.Key(d.key); break;
            case Command.CompareAndSwap c:
                RequestLimits.CompareAndSwap(c.key, c.expected?.Value.Length, c.next?.Value.Length, _options.MaxValueBytes);
                break;
        }
    }

    /// <summary>Sets a key; returns the commit index of the write.</summary>
    public async Task<long> InsertAsync(string key, byte[] value, SessionRef? session, CallOrigin origin, CancellationToken ct) =>
        (await WriteAsync(Command.NewInsert(key, value), session, origin, ct).ConfigureAwait(false)).Index;

    /// <summary>Removes a key (absent is fine); returns the commit index.</summary>
    public async Task<long> RemoveAsync(string key, SessionRef? session, CallOrigin origin, CancellationToken ct) =>
        (await WriteAsync(Command.NewRemove(key), session, origin, ct).ConfigureAwait(false)).Index;

    /// <summary>Atomically sets <paramref name="key"/> to <paramref name="next"/> (null deletes) if its value equals
    /// <paramref name="expected"/> (null: absent). Returns whether it swapped and the commit index.</summary>
    public async Task<(bool Swapped, long Index)> CompareAndSwapAsync(string key, byte[]? expected, byte[]? next, SessionRef? session,
        CallOrigin origin, CancellationToken ct)
    {
        var cmd = Command.NewCompareAndSwap(key,
            expected is null ? FSharpOption<byte[]>.None : FSharpOption<byte[]>.Some(expected),
            next is null ? FSharpOption<byte[]>.None : FSharpOption<byte[]>.Some(next));
        var (result, index) = await WriteAsync(cmd, session, origin, ct).ConfigureAwait(false);
        return (result is CommandResult.Swapped s && s.swapped, index);
    }

    // ------------------------------------------------------------------ reads

    /// <summary>Reads from this node's state machine: at once when stale reads are allowed; otherwise once this node,
    /// or the leader the read is forwarded to, has confirmed with a quorum that it holds every acknowledged write.</summary>
    private async Task<T> ReadAsync<T>(Func<IStateMachine, T> read, Func<SkiffGrpcClient, CancellationToken, Task<T>> remote,
        ReadConsistency consistency, CallOrigin origin, CancellationToken ct)
    {
        if (consistency == ReadConsistency.Stale) return read(_state);
        return await _router.RouteAsync(async t =>
        {
            await _runtime().ReadBarrierAsync(t).ConfigureAwait(false);
            return read(_state);
        }, remote, origin, ct).ConfigureAwait(false);
    }

    /// <summary>The value of a key, or null.</summary>
    public Task<byte[]?> GetAsync(string key, ReadConsistency consistency, CallOrigin origin, CancellationToken ct) =>
        ReadAsync(s => s.Get(key), (c, t) => c.GetAsync(key, ReadConsistency.Linearizable, t), consistency, origin, ct);

    /// <summary>One page of the keys that start with <paramref name="prefix"/> and come after
    /// <paramref name="startAfter"/>, in order: at most <paramref name="limit"/> (0: the largest page), and never more
    /// than <see cref="SkiffServerOptions.MaxListPage"/>; a negative limit is refused (InvalidArgument).</summary>
    public Task<ListPage> ListKeysPageAsync(string prefix, string? startAfter, int limit, ReadConsistency consistency, CallOrigin origin,
        CancellationToken ct)
    {
        RequestLimits.Prefix(prefix);
        Paging.CheckStartAfter(startAfter);
        var size = Paging.Size(limit, _options.MaxListPage);
        return ReadAsync(s => Paging.Cut(s.ListKeys(prefix, startAfter, size + 1), size),
            (c, t) => c.ListKeysPageAsync(prefix, startAfter, size, ReadConsistency.Linearizable, t), consistency, origin, ct);
    }

    /// <summary>Every key that starts with <paramref name="prefix"/>, in order, read page by page (each page a read of
    /// its own, so the state machine's lock is never held for the whole walk).</summary>
    public Task<IReadOnlyList<string>> ListKeysAsync(string prefix, ReadConsistency consistency, CallOrigin origin, CancellationToken ct) =>
        Paging.AllAsync((after, t) => ListKeysPageAsync(prefix, after, 0, consistency, origin, t), ct);

    /// <summary>One page of the directory parts of the stored keys after <paramref name="startAfter"/> (limits as
    /// <see cref="ListKeysPageAsync"/>).</summary>
    public Task<ListPage> GetPrefixesPageAsync(string? startAfter, int limit, ReadConsistency consistency, CallOrigin origin, CancellationToken ct)
    {
        Paging.CheckStartAfter(startAfter);
        var size = Paging.Size(limit, _options.MaxListPage);
        return ReadAsync(s => Paging.Cut(s.GetPrefixes(startAfter, size + 1), size),
            (c, t) => c.GetPrefixesPageAsync(startAfter, size, t), consistency, origin, ct);
    }

    /// <summary>Every directory part of the stored keys, read page by page.</summary>
    public Task<IReadOnlyList<string>> GetPrefixesAsync(ReadConsistency consistency, CallOrigin origin, CancellationToken ct) =>
        Paging.AllAsync((after, t) => GetPrefixesPageAsync(after, 0, consistency, origin, t), ct);

    // ------------------------------------------------------------------ watches

    /// <summary>Streams changes under <paramref name="prefix"/> as this node applies them, in commit order (see
    /// <see cref="SkiffServer.WatchAsync"/>). The watch is registered when this method returns.</summary>
    public IAsyncEnumerable<Change> WatchAsync(string prefix, long fromIndex, CancellationToken ct)
    {
        var cts = CancellationTokenSource.CreateLinkedTokenSource(ct, _shutdown);
        try
        {
            var reader = _runtime().Applier.Subscribe(prefix, fromIndex, cts.Token);
            return Drain(reader, cts, ct);
        }
        catch
        {
            cts.Dispose();
            throw;
        }
    }

    private async IAsyncEnumerable<Change> Drain(System.Threading.Channels.ChannelReader<Change> reader, CancellationTokenSource cts,
        [EnumeratorCancellation] CancellationToken ct = default)
    {
        using var _ = cts;
        using var link = ct.Register(cts.Cancel);
        try
        {
            while (true)
            {
                bool more;
                try { more = await reader.WaitToReadAsync(cts.Token).ConfigureAwait(false); }
                catch (OperationCanceledException) when (_shutdown.IsCancellationRequested && !ct.IsCancellationRequested)
                {
                    throw new SkiffException(ErrorKind.StreamClosed, "the node is shutting down");
                }
                if (!more) yield break;
                while (reader.TryRead(out var c)) yield return c;
            }
        }
        finally
        {
            // However the enumeration ends (its consumer stopped early too), the applier forgets the watch now and
            // its slot under MaxWatchers is free: disposing the source alone would not run its registrations.
            cts.Cancel();
        }
    }
}
