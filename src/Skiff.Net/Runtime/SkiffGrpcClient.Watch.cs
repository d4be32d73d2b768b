using System.Runtime.CompilerServices;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using Skiff.Net.Protocol;

namespace Skiff.Net.Runtime;

/// <summary>The watch calls of <see cref="SkiffGrpcClient"/>.</summary>
internal sealed partial class SkiffGrpcClient
{
    /// <summary>Streams committed changes under <paramref name="prefix"/> from the contacted member, in commit order;
    /// with <paramref name="fromIndex"/> &gt; 0, replays changes from that index first.</summary>
    public IAsyncEnumerable<Change> WatchAsync(string prefix, long fromIndex = 0, CancellationToken ct = default)
    {
        var client = _clients[Volatile.Read(ref _current) % _clients.Length];
        return ReadWatch(client.Subscribe(new SubscribeRequest { Prefix = prefix, FromIndex = (ulong)Math.Max(0, fromIndex) },
            new CallOptions(_headers.Current, cancellationToken: ct)), ct);
    }

    /// <summary>Starts a watch and returns once the contacted member has registered it (its response headers
    /// arrived), so every change committed after this returns is streamed. Dispose the enumerator's token source to
    /// stop.</summary>
    public async Task<IAsyncEnumerable<Change>> SubscribeAsync(string prefix, long fromIndex, CancellationToken ct)
    {
        await EnsureTokenAsync(renew: false, ct).ConfigureAwait(false);
        await _headers.EnsureKnownAsync(ct).ConfigureAwait(false);
        var client = _clients[Volatile.Read(ref _current) % _clients.Length];
        var call = client.Subscribe(new SubscribeRequest { Prefix = prefix, FromIndex = (ulong)Math.Max(0, fromIndex) },
            new CallOptions(_headers.Current, cancellationToken: ct));
        try
        {
            var headers = await call.ResponseHeadersAsync.ConfigureAwait(false);
            // A member that refuses the watch (Overloaded at MaxWatchers, a compacted start) answers with trailers
            // only, so its error kind comes as a header: the call is already over. Reading it throws the refusal,
            // reported now rather than at the first read of a watch that never started.
            if (headers.GetValue(ErrorMapping.KindTrailer) is not null) await call.ResponseStream.MoveNext(ct).ConfigureAwait(false);
        }
        catch (RpcException e)
        {
            call.Dispose();
            ct.ThrowIfCancellationRequested();
            throw ErrorMapping.FromRpc(e);
        }
        return ReadWatch(call, ct);
    }

    private static async IAsyncEnumerable<Change> ReadWatch(AsyncServerStreamingCall<SubscribeReply> call,
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
            yield return r.Action == SubscribeReply.Types.Action.Delete
                ? Change.Removed((long)r.Index, r.Key)
                : Change.Inserted((long)r.Index, r.Key, r.HasValue ? r.Value.Memory : ReadOnlyMemory<byte>.Empty);
        }
    }
}
