using Skiff.Core;

namespace Skiff.Net.Runtime;

/// <summary>
/// The membership calls of one node (add a member, remove one, hand leadership over), routed to the leader like the
/// key-value calls. They are idempotent: asking for a change already made succeeds.
/// </summary>
internal sealed class MembershipCalls
{
    private readonly SkiffServer _node;
    private readonly Func<NodeRuntime> _runtime;
    private readonly LeaderRouter _router;
    private readonly TimeSpan _changeTimeout;

    /// <summary>Creates the calls of <paramref name="node"/>; a membership change may take up to
    /// <paramref name="changeTimeout"/> (the join timeout: a new member may have a log to catch up).</summary>
    public MembershipCalls(SkiffServer node, Func<NodeRuntime> runtime, LeaderRouter router, TimeSpan changeTimeout)
    {
        _node = node;
        _runtime = runtime;
        _router = router;
        _changeTimeout = changeTimeout;
    }

    private bool IsLeader => _node.Role == Role.Leader;

    /// <summary>Another voter to hand leadership to, if there is one.</summary>
    private Guid? AnotherVoter() =>
        _node.Members.Where(m => m.Key != _node.Id && m.Value.Voter).Select(m => (Guid?)m.Key).FirstOrDefault();

    /// <summary>Adds a member (as a learner that the leader promotes once caught up). A no-op if it is already a
    /// member at that address. Retries while another change is in progress, within the deadline.</summary>
    public Task AddServerAsync(Guid id, string address, CallOrigin origin, CancellationToken ct)
    {
        MemberAddress.Validate(address, "the new member's address");
        return _router.RouteAsync(async t =>
        {
            if (IsLeader && _node.AddressOf(id) == address) return true;
            await _runtime().ChangeConfigAsync(ConfigChange.NewAddServer(id, address), t).ConfigureAwait(false);
            return true;
        }, async (c, t) =>
        {
            await c.AddServerAsync(id, address, t).ConfigureAwait(false);
            return true;
        }, origin, ct, _changeTimeout);
    }

    /// <summary>Gives member <paramref name="id"/> a new address (<c>host:port</c>), as etcd's <c>member update</c>:
    /// one replicated configuration change that keeps its id and vote, committed like the other membership changes
    /// (one at a time). The other members dial it at the new address from the moment they have the change; the
    /// member itself is restarted there by its operator. A no-op if it already has that address.</summary>
    /// <exception cref="SkiffException">InvalidAddress for a malformed address or one another member has;
    /// PeerNotFound for an id that is not a member.</exception>
    public Task UpdateServerAsync(Guid id, string address, CallOrigin origin, CancellationToken ct)
    {
        MemberAddress.Validate(address, "the member's new address");
        return _router.RouteAsync(async t =>
        {
            if (IsLeader)
            {
                // Checked here for a precise error; the reducer checks again against the configuration it holds.
                var members = _node.Members;
                if (!members.TryGetValue(id, out var current))
                    throw new SkiffException(ErrorKind.PeerNotFound, $"{id} is not a member", outcome: WriteOutcome.NotApplied);
                if (current.Address == address) return true;
                var holder = members.Where(m => m.Key != id && m.Value.Address == address).Select(m => (Guid?)m.Key).FirstOrDefault();
                if (holder is { } other)
                    throw new SkiffException(ErrorKind.InvalidAddress, $"{address} is the address of member {other}", outcome: WriteOutcome.NotApplied);
            }
            await _runtime().ChangeConfigAsync(ConfigChange.NewUpdateServer(id, address), t).ConfigureAwait(false);
            return true;
        }, async (c, t) =>
        {
            await c.UpdateServerAsync(id, address, t).ConfigureAwait(false);
            return true;
        }, origin, ct, _changeTimeout);
    }

    /// <summary>Removes a member. Removing the leader hands leadership to another voter first.</summary>
    public Task RemoveServerAsync(Guid id, CallOrigin origin, CancellationToken ct) =>
        _router.RouteAsync(async t =>
        {
            if (IsLeader && !_node.Members.ContainsKey(id)) return true;
            if (IsLeader && id == _node.Id && AnotherVoter() is { } target)
            {
                await _runtime().TransferLeadershipAsync(target, t).ConfigureAwait(false);
                throw new NotLeaderException(target); // the new leader removes this node
            }
            await _runtime().ChangeConfigAsync(ConfigChange.NewRemoveServer(id), t).ConfigureAwait(false);
            return true;
        }, async (c, t) =>
        {
            await c.RemoveServerAsync(id, "", t).ConfigureAwait(false);
            return true;
        }, origin, ct, _changeTimeout);

    /// <summary>Hands leadership to <paramref name="target"/> (any other voter when null); returns the new leader.</summary>
    public Task<Guid> TransferLeadershipAsync(Guid? target, CallOrigin origin, CancellationToken ct) =>
        _router.RouteAsync(async t =>
        {
            if (!IsLeader) throw new NotLeaderException(_node.LeaderId);
            var to = target ?? AnotherVoter() ?? throw new SkiffException(ErrorKind.PeerNotFound, "no other voter to hand leadership to");
            if (to == _node.Id) return _node.Id;
            await _runtime().TransferLeadershipAsync(to, t).ConfigureAwait(false);
            return to;
        }, (c, t) => c.TransferLeadershipAsync(target, t), origin, ct);
}
