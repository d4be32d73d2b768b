using System.Runtime.CompilerServices;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using Skiff.Net.Protocol;

namespace Skiff.Net.Runtime;

/// <summary>A change seen by a watcher.</summary>
/// <param name="Index">The commit index of the change.</param>
/// <param name="Key">The key.</param>
/// <param name="Value">The new value, or null when the key was deleted.</param>
public readonly record struct WatchEvent(long Index, string Key, byte[]? Value);

/// <summary>
/// A minimal client of the `skiff.Skiff` service: talks to the first reachable of the given addresses (any member
/// answers every call; writes and linearizable reads are forwarded to the leader). Errors are SkiffException.
/// </summary>
public sealed class SkiffGrpcClient : IDisposable
{
    private readonly string[] _addresses;
    private readonly GrpcChannel[] _channels;
    private readonly Protocol.Skiff.SkiffClient[] _clients;
    private readonly Metadata? _headers;
    private int _current;

    /// <summary>A client of the members at <paramref name="addresses"/> ("ip:port").</summary>
    public SkiffGrpcClient(IEnumerable<string> addresses) : this(addresses, forwarded: false) { }

    internal SkiffGrpcClient(IEnumerable<string> addresses, bool forwarded)
    {
        _addresses = addresses.ToArray();
        if (_addresses.Length == 0) throw new SkiffException(ErrorKind.InvalidAddress, "no addresses given");
        _channels = _addresses.Select(a => GrpcChannel.ForAddress("http://" + a, new GrpcChannelOptions
        {
            HttpHandler = new SocketsHttpHandler
            {
                EnableMultipleHttp2Connections = true,
                ConnectTimeout = TimeSpan.FromSeconds(1),
                PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
            },
            MaxReceiveMessageSize = 64 << 20,
        })).ToArray();
        _clients = _channels.Select(c => new Protocol.Skiff.SkiffClient(c)).ToArray();
        if (forwarded) _headers = new Metadata { { ErrorMapping.ForwardedHeader, "1" } };
    }

    /// <summary>The addresses this client uses.</summary>
    public IReadOnlyList<string> Addresses => _addresses;

    private static bool IsConnectFailure(RpcException e) =>
        e.StatusCode == StatusCode.Unavailable && e.Trailers.GetValue(ErrorMapping.KindTrailer) is null;

    private async Task<T> Call<T>(Func<Protocol.Skiff.SkiffClient, CallOptions, Task<T>> call, CancellationToken ct)
    {
        RpcException? last = null;
        for (var attempt = 0; attempt < _clients.Length; attempt++)
        {
            var i = (Volatile.Read(ref _current) + attempt) % _clients.Length;
            try
            {
                var result = await call(_clients[i], new CallOptions(_headers, cancellationToken: ct)).ConfigureAwait(false);
                Volatile.Write(ref _current, i);
                return result;
            }
            catch (RpcException e) when (IsConnectFailure(e) && !ct.IsCancellationRequested)
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
            $"no member reachable at {string.Join(", ", _addresses)}: {last?.Status.Detail}", last);
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
        Call(async (c, o) => (long)(await c.InsertAsync(new InsertRequest { Key = key, Value = ByteString.CopyFrom(value) }, o).ConfigureAwait(false)).Index, ct);

    /// <summary>Removes a key (an absent key is fine); returns the commit index.</summary>
    public Task<long> DeleteAsync(string key, CancellationToken ct = default) =>
        Call(async (c, o) => (long)(await c.DeleteAsync(new DeleteRequest { Key = key }, o).ConfigureAwait(false)).Index, ct);

    /// <summary>Sets <paramref name="key"/> to <paramref name="value"/> (null: deletes it) if its value is
    /// <paramref name="expected"/> (null: absent). True if swapped.</summary>
    public Task<bool> CompareAndSwapAsync(string key, byte[]? expected, byte[]? value, CancellationToken ct = default) =>
        Call(async (c, o) =>
        {
            var req = new CompareAndSwapRequest { Key = key };
            if (expected is not null) req.Expected = ByteString.CopyFrom(expected);
            if (value is not null) req.Value = ByteString.CopyFrom(value);
            return (await c.CompareAndSwapAsync(req, o).ConfigureAwait(false)).Swapped;
        }, ct);

    /// <summary>Keys that start with <paramref name="prefix"/>.</summary>
    public Task<IReadOnlyList<string>> ListKeysAsync(string prefix, ReadConsistency consistency = ReadConsistency.Linearizable, CancellationToken ct = default) =>
        Call(async (c, o) => (IReadOnlyList<string>)(await c.ListKeysAsync(new ListKeysRequest
        {
            Prefix = prefix,
            Consistency = consistency == ReadConsistency.Stale ? Protocol.ReadConsistency.Stale : Protocol.ReadConsistency.Linearizable,
        }, o).ConfigureAwait(false)).Keys.ToList(), ct);

    /// <summary>Every directory part of the stored keys.</summary>
    public Task<IReadOnlyList<string>> GetPrefixesAsync(CancellationToken ct = default) =>
        Call(async (c, o) => (IReadOnlyList<string>)(await c.GetPrefixesAsync(new Empty(), o).ConfigureAwait(false)).Prefixes.ToList(), ct);

    /// <summary>Asks the cluster to add a member (as a learner, promoted once caught up).</summary>
    public Task AddServerAsync(Guid id, string address, CancellationToken ct = default) =>
        Call(async (c, o) => await c.AddServerAsync(new ServerRequest { Id = id.ToString(), Address = address }, o).ConfigureAwait(false), ct);

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

    /// <summary>Streams committed changes under <paramref name="prefix"/> from the contacted member, in commit order;
    /// with <paramref name="fromIndex"/> &gt; 0, replays changes from that index first.</summary>
    public IAsyncEnumerable<WatchEvent> WatchAsync(string prefix, long fromIndex = 0, CancellationToken ct = default)
    {
        var client = _clients[Volatile.Read(ref _current) % _clients.Length];
        return ReadWatch(client.Subscribe(new SubscribeRequest { Prefix = prefix, FromIndex = (ulong)Math.Max(0, fromIndex) },
            new CallOptions(_headers, cancellationToken: ct)), ct);
    }

    /// <summary>Starts a watch and returns once the contacted member has registered it (its response headers
    /// arrived), so every change committed after this returns is streamed. Dispose the enumerator's token source to
    /// stop.</summary>
    public async Task<IAsyncEnumerable<WatchEvent>> SubscribeAsync(string prefix, long fromIndex, CancellationToken ct)
    {
        var client = _clients[Volatile.Read(ref _current) % _clients.Length];
        var call = client.Subscribe(new SubscribeRequest { Prefix = prefix, FromIndex = (ulong)Math.Max(0, fromIndex) },
            new CallOptions(_headers, cancellationToken: ct));
        try
        {
            await call.ResponseHeadersAsync.ConfigureAwait(false);
        }
        catch (RpcException e)
        {
            call.Dispose();
            if (ct.IsCancellationRequested) throw new OperationCanceledException(ct);
            throw ErrorMapping.FromRpc(e);
        }
        return ReadWatch(call, ct);
    }

    private static async IAsyncEnumerable<WatchEvent> ReadWatch(AsyncServerStreamingCall<SubscribeReply> call,
        [EnumeratorCancellation] CancellationToken ct)
    {
        using var _ = call;
        var stream = call.ResponseStream;
        while (true)
        {
            bool more;
            try { more = await stream.MoveNext(ct).ConfigureAwait(false); }
            catch (RpcException e) when (!ct.IsCancellationRequested) { throw ErrorMapping.FromRpc(e); }
            if (!more) yield break;
            var r = stream.Current;
            yield return new WatchEvent((long)r.Index, r.Key,
                r.Action == SubscribeReply.Types.Action.Delete ? null : r.HasValue ? r.Value.ToByteArray() : Array.Empty<byte>());
        }
    }

    /// <summary>Closes the connections.</summary>
    public void Dispose()
    {
        foreach (var c in _channels) c.Dispose();
    }
}
