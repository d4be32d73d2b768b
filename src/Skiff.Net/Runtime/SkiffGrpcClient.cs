using System.Runtime.CompilerServices;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Grpc.Net.Client;
using Skiff.Net.Protocol;

namespace Skiff.Net.Runtime;

/// <summary>
/// A minimal client of the `skiff.Skiff` service: talks to the first reachable of the given addresses (any member
/// answers every call; writes and linearizable reads are forwarded to the leader). Errors are SkiffException.
/// </summary>
/// <remarks>
/// Writes are exactly-once with <see cref="UseSessions"/>: the client opens a session, numbers its writes, and
/// sends a write again (same number) after any failure that may have hidden its outcome — a lost connection, a
/// member that stopped answering, a deposed leader — through the next member, until the call's deadline; the
/// cluster applies it once and every attempt gets the first answer. Without sessions a write is sent to another
/// member only when the connection to the first could not be made (at most once).
/// </remarks>
internal sealed partial class SkiffGrpcClient : IDisposable
{
    private readonly string[] _addresses;
    private readonly GrpcChannel[] _channels;
    private readonly Protocol.Skiff.SkiffClient[] _clients;
    private readonly CallHeaders _headers;
    private readonly Tls.ChannelSecurity _security;
    private ClientSession? _session;
    private long _sessionTimeoutMs;
    private TimeSpan _attemptTimeout = TimeSpan.FromSeconds(1);
    private int _current;

    /// <summary>A client of the members at <paramref name="addresses"/> ("ip:port"), over plain HTTP/2 or, with
    /// <paramref name="security"/>, TLS.</summary>
    public SkiffGrpcClient(IEnumerable<string> addresses, Tls.ChannelSecurity? security = null) : this(addresses, forwarded: false, security) { }

    internal SkiffGrpcClient(IEnumerable<string> addresses, bool forwarded, Tls.ChannelSecurity? security)
    {
        _addresses = addresses.ToArray();
        if (_addresses.Length == 0) throw new SkiffException(ErrorKind.InvalidAddress, "no addresses given");
        _security = security ?? Tls.ChannelSecurity.Plaintext;
        _channels = _addresses.Select(a =>
        {
            var handler = new SocketsHttpHandler
            {
                EnableMultipleHttp2Connections = true,
                ConnectTimeout = TimeSpan.FromSeconds(1),
                PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
            };
            _security.Apply(handler, a);
            return GrpcChannel.ForAddress(_security.Url(a), new GrpcChannelOptions
            {
                HttpHandler = handler,
                MaxReceiveMessageSize = 64 << 20,
                // gRPC's reconnect backoff starts at 1 s and grows to 120 s, and calls fail at once while it runs:
                // a restarted member stayed unusable to this client (and to a follower forwarding through it) for
                // up to that long after it listened. A connect attempt every 250 ms at most costs next to nothing.
                InitialReconnectBackoff = TimeSpan.FromMilliseconds(20),
                MaxReconnectBackoff = TimeSpan.FromMilliseconds(250),
            });
        }).ToArray();
        _clients = _channels.Select(c => new Protocol.Skiff.SkiffClient(c.Intercept(new Auth.TokenHeader(() => Token, () => MemberTokenSource?.Invoke())))).ToArray();
        _headers = new CallHeaders(forwarded, _clients, () => Volatile.Read(ref _current), () => _attemptTimeout);
    }

    /// <summary>The cluster this client talks to: learned from the first member that answers (its first call asks
    /// for it), or given with <see cref="ExpectCluster"/>; null until then. Every later call carries it, and a
    /// member of another cluster refuses the call with <see cref="ErrorKind.ClusterMismatch"/>.</summary>
    public Guid? ClusterId => _headers.ClusterId;

    /// <summary>Makes this client expect cluster <paramref name="id"/> (no learning call).</summary>
    public SkiffGrpcClient ExpectCluster(Guid id)
    {
        _headers.Expect(id);
        return this;
    }

    /// <summary>The addresses this client uses.</summary>
    public IReadOnlyList<string> Addresses => _addresses;

    /// <summary>Makes writes exactly-once: they go through a client session (opened on first use, expiring after
    /// <paramref name="timeout"/> without writes; zero: the member's default) and are retried through the members
    /// until the call's deadline, each attempt waiting at most <paramref name="attemptTimeout"/> (default 1 s) for
    /// an answer before trying the next member.</summary>
    public SkiffGrpcClient UseSessions(TimeSpan timeout = default, TimeSpan? attemptTimeout = null)
    {
        _sessionTimeoutMs = (long)Math.Max(0, timeout.TotalMilliseconds);
        if (attemptTimeout is { } a) _attemptTimeout = a;
        _session ??= new ClientSession(OpenOwnSessionAsync);
        return this;
    }

    /// <summary>Opens this client's session, trying the members in turn, each for at most an attempt timeout: a
    /// member that stopped answering must not hold up every write waiting for the session. An attempt that timed
    /// out may still have opened a session; it is never used and expires by itself.</summary>
    private async Task<long> OpenOwnSessionAsync(CancellationToken ct)
    {
        var delay = 5;
        await _headers.EnsureKnownAsync(ct).ConfigureAwait(false);
        for (var attempt = 0; ; attempt++)
        {
            var i = (Volatile.Read(ref _current) + attempt) % _clients.Length;
            using var attemptCts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            attemptCts.CancelAfter(_attemptTimeout);
            try
            {
                var reply = await _clients[i].OpenSessionAsync(new OpenSessionRequest { TimeoutMs = (ulong)_sessionTimeoutMs },
                    new CallOptions(_headers.Current, cancellationToken: attemptCts.Token)).ConfigureAwait(false);
                Volatile.Write(ref _current, i);
                return (long)reply.Id;
            }
            catch (RpcException e) when (!ct.IsCancellationRequested)
            {
                if (!attemptCts.IsCancellationRequested && ErrorMapping.FromRpc(e) is var error && !Resendable(error)) throw error;
            }
            catch (RpcException) { throw new OperationCanceledException(ct); }
            await Task.Delay(delay, ct).ConfigureAwait(false);
            delay = Math.Min(100, delay * 2);
        }
    }

    /// <summary>The session this client's writes use (0: none open).</summary>
    public long SessionId => _session?.Id ?? 0;

    // A failed call is sent to the next member only when that cannot make anything happen twice: an idempotent call
    // (a read) after any transport failure, a write only when its connection was never made.
    private static bool MayTryNext(RpcException e, bool idempotent) =>
        idempotent
            ? (e.StatusCode == StatusCode.Unavailable && e.Trailers.GetValue(ErrorMapping.KindTrailer) is null) || ErrorMapping.NeverSent(e)
            : ErrorMapping.NeverSent(e);

    private Task<T> Call<T>(Func<Protocol.Skiff.SkiffClient, CallOptions, Task<T>> call, CancellationToken ct) => Call(call, ct, idempotent: true);

    private async Task<T> CallCore<T>(Func<Protocol.Skiff.SkiffClient, CallOptions, Task<T>> call, CancellationToken ct, bool idempotent)
    {
        RpcException? last = null;
        await _headers.EnsureKnownAsync(ct).ConfigureAwait(false);
        for (var attempt = 0; attempt < _clients.Length; attempt++)
        {
            var i = (Volatile.Read(ref _current) + attempt) % _clients.Length;
            try
            {
                var result = await call(_clients[i], new CallOptions(_headers.Current, cancellationToken: ct)).ConfigureAwait(false);
                Volatile.Write(ref _current, i);
                return result;
            }
            catch (RpcException e) when (MayTryNext(e, idempotent) && !ct.IsCancellationRequested)
            {
                last = e;
            }
            catch (RpcException e)
            {
                if (ct.IsCancellationRequested && e.StatusCode == StatusCode.Cancelled) throw new OperationCanceledException(ct);
                throw ErrorMapping.FromRpc(e);
            }
        }
        throw new SkiffException(ErrorKind.ClientConnectFailed,
            $"no member reachable at {string.Join(", ", _addresses)} over {(_security.IsTls ? "TLS" : "plain HTTP/2")}: {last?.Status.Detail}" +
            (_security.IsTls ? " (a member without TLS, or one whose certificate the CA did not sign or that does not name the address?)"
                : " (if the members use TLS, give the client their CA: Client.WithTls, skiff --cacert)"), last);
    }

    /// <summary>Errors after which a write in a session is sent again: everything but a refusal of the request
    /// itself (it would be refused again).</summary>
    private static bool Resendable(SkiffException e) => e.Kind is not (ErrorKind.ClusterMismatch or ErrorKind.PermissionDenied or ErrorKind.Unauthenticated or ErrorKind.InvalidKey or ErrorKind.ValueTooLarge
        or ErrorKind.InvalidArgument or ErrorKind.InvalidAddress or ErrorKind.PeerNotFound or ErrorKind.SessionExpired
        or ErrorKind.SerializeFailed or ErrorKind.DeserializeFailed);

    /// <summary>A write: exactly-once through the session when <see cref="UseSessions"/> was called (see the class
    /// remarks), else one attempt (another member only if the first could not be connected to).</summary>
    private async Task<T> WriteCore<T>(Func<Protocol.Skiff.SkiffClient, CallOptions, SessionRef?, Task<T>> call, CancellationToken ct)
    {
        if (_session is not { } session) return await CallCore((c, o) => call(c, o, null), ct, idempotent: false).ConfigureAwait(false);
        await _headers.EnsureKnownAsync(ct).ConfigureAwait(false);
        var sequence = session.Begin();
        var delivered = false; // some attempt may have reached a member, so the write may have taken effect
        SkiffException? last = null;
        var delay = 5;
        try
        {
            for (var attempt = 0; !ct.IsCancellationRequested; attempt++)
            {
                long id;
                try { id = await session.EnsureOpenAsync(ct).ConfigureAwait(false); }
                catch (SkiffException e) when (!ct.IsCancellationRequested && Resendable(e))
                {
                    last = e;
                    goto next;
                }
                catch (OperationCanceledException) when (ct.IsCancellationRequested) { break; }
                var i = (Volatile.Read(ref _current) + attempt) % _clients.Length;
                using (var attemptCts = CancellationTokenSource.CreateLinkedTokenSource(ct))
                {
                    attemptCts.CancelAfter(_attemptTimeout);
                    try
                    {
                        var result = await call(_clients[i], new CallOptions(_headers.Current, cancellationToken: attemptCts.Token),
                            session.Stamp(id, sequence)).ConfigureAwait(false);
                        Volatile.Write(ref _current, i);
                        return result;
                    }
                    catch (RpcException e)
                    {
                        var error = attemptCts.IsCancellationRequested
                            ? new SkiffException(ErrorKind.Timeout, $"{_addresses[i]} did not answer within {_attemptTimeout.TotalSeconds:0.###} s", e, WriteOutcome.Unknown)
                            : ErrorMapping.FromRpc(e);
                        if (error.Kind == ErrorKind.SessionExpired && !ct.IsCancellationRequested)
                        {
                            // This attempt did nothing: the session is gone (or no longer remembers this request).
                            // If no earlier attempt can have reached the cluster, the write is new: send it in a new
                            // session. Otherwise an earlier attempt may have taken effect, and nobody can tell.
                            session.Forget(id);
                            if (delivered) throw EarlierMayHaveApplied(error);
                            last = error;
                            continue;
                        }
                        if (error.Outcome == WriteOutcome.Unknown) delivered = true;
                        if (ct.IsCancellationRequested) break;
                        if (!Resendable(error)) throw delivered ? EarlierMayHaveApplied(error) : error;
                        last = error;
                    }
                }
            next:
                try { await Task.Delay(delay, ct).ConfigureAwait(false); }
                catch (OperationCanceledException) { break; }
                delay = Math.Min(100, delay * 2);
            }
            throw new WriteCancelledException(delivered ? WriteOutcome.Unknown : WriteOutcome.NotApplied, last, ct);
        }
        finally
        {
            session.End(sequence);
        }
    }

    /// <summary>The error that ends a write after <paramref name="e"/> refused an attempt while an earlier attempt
    /// may have reached a member: that attempt may still take effect, so the error must not say it did not.</summary>
    private static SkiffException EarlierMayHaveApplied(SkiffException e) => e.Outcome == WriteOutcome.Unknown ? e
        : new SkiffException(e.Kind, e.Detail + "; an earlier attempt may have taken effect", e, WriteOutcome.Unknown);

    private static Protocol.SessionRef? ToWire(SessionRef? session) => session is { } s
        ? new Protocol.SessionRef { Id = (ulong)s.Id, Sequence = (ulong)s.Sequence, Acknowledged = (ulong)s.Acknowledged }
        : null;

    /// <summary>Opens a client session expiring after <paramref name="timeout"/> without writes (zero: the
    /// member's default); returns its id. Not retried on an unknown outcome: a second session is harmless but
    /// useless, and expires by itself.</summary>
    public Task<long> OpenSessionAsync(TimeSpan timeout, CancellationToken ct = default) =>
        Call(async (c, o) => (long)(await c.OpenSessionAsync(new OpenSessionRequest
        {
            TimeoutMs = (ulong)Math.Max(0, timeout.TotalMilliseconds),
        }, o).ConfigureAwait(false)).Id, ct, idempotent: false);

    /// <summary>Closes a client session (best effort: an unknown id is fine).</summary>
    public Task CloseSessionAsync(long id, CancellationToken ct = default) =>
        Call(async (c, o) => await c.CloseSessionAsync(new CloseSessionRequest { Id = (ulong)id }, o).ConfigureAwait(false), ct);

    /// <summary>Closes this client's session, if one is open (best effort, within <paramref name="timeout"/>).</summary>
    public async Task CloseSessionAsync(TimeSpan timeout)
    {
        if (_session?.Id is not (> 0 and var id)) return;
        using var cts = new CancellationTokenSource(timeout);
        try { await CloseSessionAsync(id, cts.Token).ConfigureAwait(false); }
        catch (Exception e) when (e is SkiffException or OperationCanceledException) { }
    }

    /// <summary>The value of a key, or null.</summary>
    public Task<byte[]?> GetAsync(string key, ReadConsistency consistency = ReadConsistency.Linearizable, CancellationToken ct = default) =>
        Call(async (c, o) =>
        {
            var r = await c.GetAsync(new GetRequest
            {
                Key = key,
                Consistency = consistency == ReadConsistency.Stale ? Protocol.ReadConsistency.Stale : Protocol.ReadConsistency.Linearizable,
            }, o).ConfigureAwait(false);
            return r.HasValue ? r.Value.ToByteArray() : null;
        }, ct);

    /// <summary>Sets a key; returns the commit index.</summary>
    public Task<long> InsertAsync(string key, byte[] value, CancellationToken ct = default) =>
        Write((c, o, s) => InsertOnce(c, o, key, value, s), ct);

    /// <summary>Removes a key (an absent key is fine); returns the commit index.</summary>
    public Task<long> RemoveAsync(string key, CancellationToken ct = default) =>
        Write((c, o, s) => RemoveOnce(c, o, key, s), ct);

    /// <summary>Sets <paramref name="key"/> to <paramref name="value"/> (null: deletes it) if its value is
    /// <paramref name="expected"/> (null: absent). True if swapped.</summary>
    public async Task<bool> CompareAndSwapAsync(string key, byte[]? expected, byte[]? value, CancellationToken ct = default) =>
        (await CompareAndSwapWithIndexAsync(key, expected, value, ct).ConfigureAwait(false)).Swapped;

    /// <summary>As <see cref="CompareAndSwapAsync(string, byte[], byte[], CancellationToken)"/>, with the commit
    /// index of the write.</summary>
    public Task<(bool Swapped, long Index)> CompareAndSwapWithIndexAsync(string key, byte[]? expected, byte[]? value, CancellationToken ct = default) =>
        Write((c, o, s) => CompareAndSwapOnce(c, o, key, expected, value, s), ct);

    // One attempt of each write, in a given session (null: none). A forwarding member calls these directly.
    internal Task<long> InsertOnceAsync(string key, byte[] value, SessionRef? session, CancellationToken ct) =>
        Call((c, o) => InsertOnce(c, o, key, value, session), ct, idempotent: false);

    internal Task<long> RemoveOnceAsync(string key, SessionRef? session, CancellationToken ct) =>
        Call((c, o) => RemoveOnce(c, o, key, session), ct, idempotent: false);

    internal Task<(bool Swapped, long Index)> CompareAndSwapOnceAsync(string key, byte[]? expected, byte[]? value, SessionRef? session, CancellationToken ct) =>
        Call((c, o) => CompareAndSwapOnce(c, o, key, expected, value, session), ct, idempotent: false);

    private static async Task<long> InsertOnce(Protocol.Skiff.SkiffClient c, CallOptions o, string key, byte[] value, SessionRef? session)
    {
        var request = new InsertRequest { Key = key, Value = UnsafeByteOperations.UnsafeWrap(value), Session = ToWire(session) };
        return (long)(await c.InsertAsync(request, o).ConfigureAwait(false)).Index;
    }

    private static async Task<long> RemoveOnce(Protocol.Skiff.SkiffClient c, CallOptions o, string key, SessionRef? session)
    {
        return (long)(await c.DeleteAsync(new DeleteRequest { Key = key, Session = ToWire(session) }, o).ConfigureAwait(false)).Index;
    }

    private static async Task<(bool, long)> CompareAndSwapOnce(Protocol.Skiff.SkiffClient c, CallOptions o, string key, byte[]? expected,
        byte[]? value, SessionRef? session)
    {
        var req = new CompareAndSwapRequest { Key = key, Session = ToWire(session) };
        if (expected is not null) req.Expected = UnsafeByteOperations.UnsafeWrap(expected);
        if (value is not null) req.Value = UnsafeByteOperations.UnsafeWrap(value);
        var reply = await c.CompareAndSwapAsync(req, o).ConfigureAwait(false);
        return (reply.Swapped, (long)reply.Index);
    }

    /// <summary>One page of the keys that start with <paramref name="prefix"/>, after <paramref name="startAfter"/>
    /// (at most <paramref name="limit"/>; 0: the member's largest page).</summary>
    public Task<ListPage> ListKeysPageAsync(string prefix, string? startAfter, int limit, ReadConsistency consistency = ReadConsistency.Linearizable,
        CancellationToken ct = default) =>
        Call(async (c, o) =>
        {
            var wire = consistency == ReadConsistency.Stale ? Protocol.ReadConsistency.Stale : Protocol.ReadConsistency.Linearizable;
            var request = new ListKeysRequest { Prefix = prefix, Consistency = wire, Limit = limit, StartAfter = startAfter ?? "" };
            var reply = await c.ListKeysAsync(request, o).ConfigureAwait(false);
            return new ListPage(reply.Keys.ToList(), reply.More);
        }, ct);

    /// <summary>Every key that starts with <paramref name="prefix"/>, read page by page.</summary>
    public Task<IReadOnlyList<string>> ListKeysAsync(string prefix, ReadConsistency consistency = ReadConsistency.Linearizable, CancellationToken ct = default) =>
        Paging.AllAsync((after, t) => ListKeysPageAsync(prefix, after, 0, consistency, t), ct);

    /// <summary>One page of the directory parts of the stored keys, after <paramref name="startAfter"/>.</summary>
    public Task<ListPage> GetPrefixesPageAsync(string? startAfter, int limit, CancellationToken ct = default) =>
        Call(async (c, o) =>
        {
            var reply = await c.GetPrefixesAsync(new PrefixesRequest { Limit = limit, StartAfter = startAfter ?? "" }, o).ConfigureAwait(false);
            return new ListPage(reply.Prefixes.ToList(), reply.More);
        }, ct);

    /// <summary>Every directory part of the stored keys, read page by page.</summary>
    public Task<IReadOnlyList<string>> GetPrefixesAsync(CancellationToken ct = default) =>
        Paging.AllAsync((after, t) => GetPrefixesPageAsync(after, 0, t), ct);

    /// <summary>Asks the cluster to add a member (as a learner, promoted once caught up).</summary>
    public Task AddServerAsync(Guid id, string address, CancellationToken ct = default) =>
        Call(async (c, o) => await c.AddServerAsync(new ServerRequest { Id = id.ToString(), Address = address }, o).ConfigureAwait(false), ct);

    /// <summary>Asks the cluster to give a member a new address.</summary>
    public Task UpdateServerAsync(Guid id, string address, CancellationToken ct = default) =>
        Call(async (c, o) => await c.UpdateServerAsync(new ServerRequest { Id = id.ToString(), Address = address }, o).ConfigureAwait(false), ct);

    /// <summary>Asks the cluster to remove a member.</summary>
    public Task RemoveServerAsync(Guid id, string address = "", CancellationToken ct = default) =>
        Call(async (c, o) => await c.RemoveServerAsync(new ServerRequest { Id = id.ToString(), Address = address }, o).ConfigureAwait(false), ct);

    /// <summary>Hands leadership to a voter (any, when <paramref name="target"/> is null); returns the new leader.</summary>
    public Task<Guid> TransferLeadershipAsync(Guid? target, CancellationToken ct = default) =>
        Call(async (c, o) =>
        {
            var r = await c.TransferLeadershipAsync(new TransferLeadershipRequest { TargetId = target?.ToString() ?? "" }, o).ConfigureAwait(false);
            return Guid.TryParse(r.LeaderId, out var g) ? g : Guid.Empty;
        }, ct);

    /// <summary>The cluster as the contacted member sees it.</summary>
    public Task<ClusterStatusReply> ClusterStatusAsync(CancellationToken ct = default) =>
        Call(async (c, o) => await c.ClusterStatusAsync(new Empty(), o).ConfigureAwait(false), ct);

    /// <summary>Closes the connections (call <see cref="CloseSessionAsync(TimeSpan)"/> first to free the session
    /// at once; otherwise it expires by itself).</summary>
    public void Dispose()
    {
        foreach (var c in _channels) c.Dispose();
    }
}
