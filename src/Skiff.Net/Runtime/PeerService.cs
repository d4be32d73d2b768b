using Grpc.Core;
using Microsoft.Extensions.Logging;
using Skiff.Core;
using Skiff.Net.Protocol;
using Skiff.Net.Runtime.Tls;
using Skiff.Net.Storage.Ports;

namespace Skiff.Net.Runtime;

/// <summary>
/// The `skiff.Peer` service: Raft messages in, snapshots in. Nothing reaches the reducer, the peer links or the
/// snapshot staging before two checks: the message is from this node's cluster (<see cref="ClusterIdentity"/>), and,
/// with TLS, the caller's certificate is a member's that covers the address of the member the message says it is
/// from (<see cref="PeerCaller"/>).
/// </summary>
internal sealed class PeerService : Peer.PeerBase
{
    /// <summary>Header naming the sender's address on a peer stream, so replies can reach a node not yet in our configuration.</summary>
    public const string FromAddressHeader = "skiff-from-address";

    private readonly SkiffServer _node;

    public PeerService(SkiffServer node) => _node = node;

    public override async Task<Empty> Stream(IAsyncStreamReader<PeerEnvelope> requestStream, ServerCallContext context)
    {
        var fromAddress = context.RequestHeaders.GetValue(FromAddressHeader);
        var caller = Authenticate(context, fromAddress);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, _node.ShutdownToken);
        try
        {
            var refused = false;
            while (await requestStream.MoveNext(cts.Token).ConfigureAwait(false))
            {
                if (!_node.Cluster.Admits(requestStream.Current.ClusterId))
                {
                    // Another cluster's member still sends to this address (this node lost its directory and
                    // founded a new cluster, say): its messages must never reach the reducer. Logged once a stream.
                    _node.NotePeerMessageRefused(requestStream.Current.ClusterId, fromAddress, logIt: !refused);
                    refused = true;
                    continue;
                }
                var env = WireCodec.FromWire(requestStream.Current);
                if (env is null || !SpeaksFor(caller, env.From, fromAddress, ref refused)) continue;
                // On every message, not once per stream: a configuration change on this node (an installed
                // snapshot whose configuration predates the sender, say a joiner's) drops the link to a peer it
                // does not list, and the sender, a leader, must still get its answers (issue 15, seed 899178).
                if (fromAddress is not null && (caller is null || caller.SpeaksFor(fromAddress))) _node.EnsurePeer(env.From, fromAddress);
                _node.DeliverPeerMessage(env);
            }
        }
        catch (OperationCanceledException) { }
        catch (IOException) { }
        return new Empty();
    }

    public override async Task<SnapshotAck> InstallSnapshot(IAsyncStreamReader<SnapshotChunk> requestStream, ServerCallContext context)
    {
        if (_node.IsIsolated) return new SnapshotAck { Ok = false };
        var fromAddress = context.RequestHeaders.GetValue(FromAddressHeader);
        var caller = Authenticate(context, fromAddress);
        IStagedSnapshot staged;
        try { staged = _node.BeginStaging(); }
        catch (SkiffException e) { throw ErrorMapping.ToRpc(e); }
        using (staged)
        {
            try { return await ReceiveSnapshotAsync(requestStream, context, staged, caller, fromAddress).ConfigureAwait(false); }
            catch (SkiffException e)
            {
                // A malformed, corrupt or oversized stream (or a full disk): refused here, before Raft sees it; the
                // member goes on, and a genuine leader sends the snapshot again.
                _node.Logger.LogWarning("Skiff node {NodeId}: refused a snapshot from {From}: {Reason}", _node.Id, fromAddress ?? context.Peer, e.Message);
                return new SnapshotAck { Ok = false };
            }
        }
    }

    private async Task<SnapshotAck> ReceiveSnapshotAsync(IAsyncStreamReader<SnapshotChunk> requestStream, ServerCallContext context,
        IStagedSnapshot staged, PeerCaller? caller, string? fromAddress)
    {
        SnapshotChunk? last = null;
        var complete = false;
        var refused = false;
        while (await requestStream.MoveNext(context.CancellationToken).ConfigureAwait(false))
        {
            last = requestStream.Current;
            if (!_node.Cluster.Admits(last.ClusterId))
            {
                _node.NotePeerMessageRefused(last.ClusterId, fromAddress ?? context.Peer, logIt: true);
                return new SnapshotAck { Ok = false };
            }
            if (!SpeaksFor(caller, WireCodec.ToGuid(last.From), fromAddress, ref refused)) return new SnapshotAck { Ok = false };
            staged.Write(last.Data.Span);
            if (last.Last)
            {
                complete = true;
                break;
            }
        }
        if (!complete || last is null || _node.IsIsolated) return new SnapshotAck { Ok = false };
        var name = staged.Finish();
        var from = WireCodec.ToGuid(last.From);
        var request = new SnapshotRequest(last.Term, from, WireCodec.FromWire(last.Meta), name);
        _node.DeliverPeerMessage(new Envelope(from, WireCodec.ToGuid(last.To), Message.NewSnapshot(request)));
        return new SnapshotAck { Ok = true };
    }

    /// <summary>With TLS, the caller's certificate must be a member's (else the call is refused, PermissionDenied);
    /// without, there is nothing to check (null).</summary>
    private PeerCaller? Authenticate(ServerCallContext context, string? fromAddress)
    {
        if (_node.Tls is not { } tls) return null;
        if (PeerCaller.Authenticate(context, tls) is { } caller) return caller;
        _node.Logger.LogWarning("Skiff node {NodeId}: refused a peer call from {Peer} ({From}): no member certificate signed by the peer CA",
            _node.Id, context.Peer, fromAddress ?? "no address given");
        throw ErrorMapping.ToRpc(new SkiffException(ErrorKind.PermissionDenied,
            "peer calls need a member certificate signed by the cluster's peer CA", outcome: WriteOutcome.NotApplied));
    }

    /// <summary>Whether the caller may speak for <paramref name="sender"/>: its certificate covers the address the
    /// configuration gives that member, or for a member not in it, the address the stream announces. Logged once.</summary>
    private bool SpeaksFor(PeerCaller? caller, Guid sender, string? fromAddress, ref bool logged)
    {
        if (caller is null) return true;
        var claimed = _node.AddressOf(sender) ?? fromAddress;
        if (caller.SpeaksFor(claimed)) return true;
        if (!logged)
            _node.Logger.LogWarning("Skiff node {NodeId}: refused peer messages from {Subject} claiming to be {Sender} at {Address}",
                _node.Id, caller.Subject, sender, claimed ?? "an unknown address");
        logged = true;
        _node.NotePeerMessageDenied();
        return false;
    }
}
