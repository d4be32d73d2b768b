using System.Collections.Concurrent;
using System.Threading.Channels;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using Skiff.Core;
using Skiff.Net.Protocol;
using Skiff.Net.Storage.Ports;

namespace Skiff.Net.Runtime;

/// <summary>
/// Outbound Raft traffic: one long-lived gRPC channel and client stream per peer, fed from a bounded queue so a
/// slow or dead peer never delays the others (on overflow the oldest message is dropped; Raft tolerates loss).
/// Reconnects with exponential backoff. A member whose address changes (<c>member update</c>) is dialled at the new
/// address at once and, until a connection there succeeds, at the last address that answered too: the change must
/// still reach the member where it runs now, or with one other voter down (or in a two-member cluster) it could
/// never commit. Raft tolerates the duplicate messages this may cause.
/// </summary>
internal sealed class PeerTransport : IAsyncDisposable
{
    private readonly Guid _self;
    private readonly int _capacity;
    private readonly ConcurrentDictionary<Guid, PeerLink> _links = new();
    // A moved member's link at its last address that answered, kept until its new address answers.
    private readonly ConcurrentDictionary<Guid, PeerLink> _previous = new();
    private readonly Func<ISnapshotStore> _snapshots;
    private readonly ClusterIdentity _cluster;
    private readonly Tls.ChannelSecurity _security;
    private readonly CancellationTokenSource _stop = new();

    /// <summary>Test hook: when set, every outbound message is dropped (simulates a partition).</summary>
    public volatile bool Isolated;

    private readonly Metadata _headers;

    public PeerTransport(Guid self, string selfAddress, int capacity, Func<ISnapshotStore> snapshots, ClusterIdentity cluster,
        Tls.ChannelSecurity security)
    {
        _security = security;
        _self = self;
        _cluster = cluster;
        _headers = new Metadata { { PeerService.FromAddressHeader, selfAddress } };
        _capacity = capacity;
        _snapshots = snapshots;
    }

    /// <summary>Messages dropped because a peer's queue was full.</summary>
    public long Dropped;

    /// <summary>Keeps links for exactly the members of <paramref name="configuration"/> other than this node.</summary>
    public void Update(Configuration configuration)
    {
        foreach (var kv in configuration.Members)
        {
            if (kv.Key == _self) continue;
            var address = kv.Value.Address;
            if (_links.TryGetValue(kv.Key, out var existing))
            {
                if (existing.Address == address) continue;
                _links.TryRemove(kv.Key, out _);
                if (existing.Connected || !_previous.ContainsKey(kv.Key)) Retire(kv.Key, existing);
                else _ = existing.DisposeAsync().AsTask();
            }
            if (_previous.TryGetValue(kv.Key, out var back) && back.Address == address)
            {
                _previous.TryRemove(kv.Key, out _);
                _links[kv.Key] = back; // moved back before the move was finished
            }
            else _links[kv.Key] = new PeerLink(this, kv.Key, address);
        }
        foreach (var id in _links.Keys)
        {
            if (configuration.Members.ContainsKey(id)) continue;
            // Keep links to removed members briefly: the leader still tells them about their removal.
            if (_links.TryRemove(id, out var gone))
                _ = Task.Delay(2000).ContinueWith(_ => gone.DisposeAsync().AsTask());
            if (_previous.TryRemove(id, out var old))
                _ = Task.Delay(2000).ContinueWith(_ => old.DisposeAsync().AsTask());
        }
    }

    /// <summary>Keeps <paramref name="link"/> as member <paramref name="id"/>'s previous link, in place of any earlier one.</summary>
    private void Retire(Guid id, PeerLink link)
    {
        var replaced = _previous.TryGetValue(id, out var earlier) ? earlier : null;
        _previous[id] = link;
        if (replaced is not null) _ = replaced.DisposeAsync().AsTask();
    }

    /// <summary>A link connected: a moved member answers at its new address, so its previous one is let go.</summary>
    private void Connected(Guid id, PeerLink link)
    {
        if (_links.TryGetValue(id, out var current) && ReferenceEquals(current, link) && _previous.TryRemove(id, out var old))
            _ = old.DisposeAsync().AsTask();
    }

    /// <summary>Makes sure a link exists to a peer whose address is known from elsewhere (e.g. a joining node).</summary>
    public void Ensure(Guid id, string address)
    {
        if (id == _self || _links.ContainsKey(id)) return;
        var link = new PeerLink(this, id, address);
        if (!_links.TryAdd(id, link)) _ = link.DisposeAsync().AsTask();
    }

    /// <summary>The append encoded last, with the reducer's message it encodes.</summary>
    private sealed record EncodedAppend(AppendRequest Source, AppendRequestMsg Wire);

    private EncodedAppend? _lastAppend;

    /// <summary>Queues a message for its addressee.</summary>
    public void Send(Envelope envelope)
    {
        if (Isolated) return;
        if (!_links.TryGetValue(envelope.To, out var link)) return;
        // Followers in step get the very same append from the reducer: it is encoded once, for the first of them.
        AppendRequestMsg? encoded = null;
        if (envelope.Message is Message.Append append)
        {
            var last = Volatile.Read(ref _lastAppend);
            if (last is not null && ReferenceEquals(last.Source, append.Request)) encoded = last.Wire;
            else
            {
                encoded = WireCodec.ToWire(append.Request);
                Volatile.Write(ref _lastAppend, new EncodedAppend(append.Request, encoded));
            }
        }
        var wire = WireCodec.ToWire(envelope, encoded);
        if (wire is null) return;
        wire.ClusterId = _cluster.Wire; // read per message: a joiner learns its cluster while it runs
        link.Enqueue(wire);
        if (_previous.TryGetValue(envelope.To, out var previous)) previous.Enqueue(wire);
    }

    /// <summary>Streams the latest snapshot to a peer; the peer hands it to its reducer once staged.</summary>
    public void SendSnapshot(Guid to, long term, SnapshotMeta meta)
    {
        if (Isolated) return;
        if (!_links.TryGetValue(to, out var link)) return;
        _ = link.SendSnapshotAsync(term, meta);
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        foreach (var link in _links.Values.Concat(_previous.Values)) await link.DisposeAsync().ConfigureAwait(false);
        _links.Clear();
        _previous.Clear();
    }

    /// <summary>One peer: its channel, queue and sender task.</summary>
    private sealed class PeerLink : IAsyncDisposable
    {
        private const double MaxReconnectDelayMs = 100;

        private readonly PeerTransport _owner;
        private readonly Guid _id;
        private readonly GrpcChannel _channel;
        private readonly Peer.PeerClient _client;
        private readonly Channel<PeerEnvelope> _queue;
        private readonly CancellationTokenSource _stop;
        private readonly Task _run;
        private int _snapshotBusy;

        public string Address { get; }

        /// <summary>Whether a message has gone out on this link (the member answered at <see cref="Address"/>).</summary>
        public bool Connected => Volatile.Read(ref _connected);

        private bool _connected;

        public PeerLink(PeerTransport owner, Guid id, string address)
        {
            _owner = owner;
            _id = id;
            Address = address;
            _stop = CancellationTokenSource.CreateLinkedTokenSource(owner._stop.Token);
            var handler = new SocketsHttpHandler
            {
                EnableMultipleHttp2Connections = true,
                ConnectTimeout = TimeSpan.FromSeconds(1),
                KeepAlivePingDelay = TimeSpan.FromSeconds(5),
                KeepAlivePingTimeout = TimeSpan.FromSeconds(5),
                PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
            };
            owner._security.Apply(handler, address);
            _channel = GrpcChannel.ForAddress(owner._security.Url(address), new GrpcChannelOptions
            {
                HttpHandler = handler,
                MaxReceiveMessageSize = 64 << 20,
                MaxSendMessageSize = 64 << 20,
                // gRPC's own reconnect backoff starts at 1 s and grows to 120 s; while it runs, every call fails at
                // once with the last connect error. A member back after a minute down would not hear its leader
                // for up to two more. Retry as this link's own loop does, at most 100 ms apart (etcd's pace).
                InitialReconnectBackoff = TimeSpan.FromMilliseconds(10),
                MaxReconnectBackoff = TimeSpan.FromMilliseconds(MaxReconnectDelayMs),
            });
            _client = new Peer.PeerClient(_channel);
            _queue = Channel.CreateBounded<PeerEnvelope>(new BoundedChannelOptions(owner._capacity)
            {
                SingleReader = true,
                FullMode = BoundedChannelFullMode.DropOldest,
            }, _ => Interlocked.Increment(ref owner.Dropped));
            _run = Task.Run(Run);
        }

        public void Enqueue(PeerEnvelope message) => _queue.Writer.TryWrite(message);

        private async Task Run()
        {
            var backoff = TimeSpan.FromMilliseconds(10);
            var reader = _queue.Reader;
            while (!_stop.IsCancellationRequested)
            {
                try
                {
                    if (!await WaitAsync(reader).ConfigureAwait(false)) return;
                    using var call = _client.Stream(_owner._headers, cancellationToken: _stop.Token);
                    var stream = call.RequestStream;
                    while (true)
                    {
                        while (reader.TryRead(out var m))
                        {
                            await stream.WriteAsync(m).ConfigureAwait(false);
                            backoff = TimeSpan.FromMilliseconds(10);
                            if (!_connected)
                            {
                                Volatile.Write(ref _connected, true);
                                _owner.Connected(_id, this);
                            }
                        }
                        if (!await WaitAsync(reader).ConfigureAwait(false)) break;
                    }
                    await stream.CompleteAsync().ConfigureAwait(false);
                    return;
                }
                catch (OperationCanceledException) when (_stop.IsCancellationRequested) { return; }
                catch (Exception)
                {
                    // The peer is down or restarting: whatever is queued is stale by the time it is back.
                    while (reader.TryRead(out _)) { }
                    try { await Task.Delay(backoff, _stop.Token).ConfigureAwait(false); }
                    catch (OperationCanceledException) { return; }
                    // Capped at 100 ms, as etcd's peer streams retry: a restarted member must hear its leader as soon
                    // as it listens, or it serves stale data (and campaigns) meanwhile. With a 1 s cap a member back
                    // after half a second waited up to another second. A refused connection costs next to nothing,
                    // and an unreachable host is paced by ConnectTimeout anyway.
                    backoff = TimeSpan.FromMilliseconds(Math.Min(MaxReconnectDelayMs, backoff.TotalMilliseconds * 2));
                }
            }
        }

        /// <summary>Waits for queued messages, counting the thread-pool hop when it had to wait.</summary>
        private ValueTask<bool> WaitAsync(ChannelReader<PeerEnvelope> reader)
        {
            var wait = reader.WaitToReadAsync(_stop.Token);
            if (!wait.IsCompleted) HandOffs.Count(HandOffs.Stage.PeerSendWake);
            return wait;
        }

        public async Task SendSnapshotAsync(long term, SnapshotMeta meta)
        {
            if (Interlocked.Exchange(ref _snapshotBusy, 1) == 1) return; // one at a time; the reducer asks again
            try
            {
                var latest = _owner._snapshots().OpenLatest();
                if (latest is null) return;
                var (m, data) = latest.Value;
                await using var file = data;
                using var call = _client.InstallSnapshot(_owner._headers, cancellationToken: _stop.Token);
                var from = WireCodec.FromGuid(_owner._self);
                var to = WireCodec.FromGuid(_id);
                var wireMeta = WireCodec.ToWire(m);
                var buffer = new byte[1 << 20];
                while (true)
                {
                    var n = await file.ReadAsync(buffer, _stop.Token).ConfigureAwait(false);
                    var last = n < buffer.Length;
                    await call.RequestStream.WriteAsync(new SnapshotChunk
                    {
                        From = from,
                        To = to,
                        Term = term,
                        Meta = wireMeta,
                        Last = last,
                        Data = ByteString.CopyFrom(buffer, 0, n),
                        ClusterId = _owner._cluster.Wire,
                    }).ConfigureAwait(false);
                    if (last) break;
                }
                await call.RequestStream.CompleteAsync().ConfigureAwait(false);
                await call.ResponseAsync.ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is RpcException or IOException or OperationCanceledException)
            {
                // The reducer retries after its own timeout.
            }
            finally { Volatile.Write(ref _snapshotBusy, 0); }
        }

        public async ValueTask DisposeAsync()
        {
            _stop.Cancel();
            _queue.Writer.TryComplete();
            try { await _run.ConfigureAwait(false); } catch (Exception) { }
            _channel.Dispose();
        }
    }
}
