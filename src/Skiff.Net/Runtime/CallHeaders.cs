using Grpc.Core;
using Skiff.Net.Protocol;

namespace Skiff.Net.Runtime;

/// <summary>
/// The headers every call of one <see cref="SkiffGrpcClient"/> carries: that a member forwarded it, and the cluster
/// the client expects. The cluster is learned on the client's first call (one ClusterStatus call to the first member
/// that answers, shared by concurrent first calls) or given; from then on a member of another cluster refuses every
/// call with <see cref="ErrorKind.ClusterMismatch"/>. A member that does not know its cluster yet settles the
/// question too (calls then go unchecked); if no member answers, the next call asks again, and the call itself
/// reports the failure.
/// </summary>
internal sealed class CallHeaders
{
    private readonly bool _forwarded;
    private readonly Protocol.Skiff.SkiffClient[] _members;
    private readonly Func<int> _first;
    private readonly Func<TimeSpan> _attemptTimeout;
    private readonly object _gate = new();
    private Task? _learning;
    private volatile bool _settled;
    private volatile Metadata? _current; // replaced, never changed, once the cluster is known

    /// <param name="forwarded">Whether the calls are forwarded by a member (which knows its cluster and never asks).</param>
    /// <param name="members">The clients of the members, in order.</param>
    /// <param name="first">The member to ask first (the one that answered last).</param>
    /// <param name="attemptTimeout">How long to wait for one member's answer.</param>
    public CallHeaders(bool forwarded, Protocol.Skiff.SkiffClient[] members, Func<int> first, Func<TimeSpan> attemptTimeout)
    {
        _forwarded = forwarded;
        _members = members;
        _first = first;
        _attemptTimeout = attemptTimeout;
        if (forwarded) _current = new Metadata { { ErrorMapping.ForwardedHeader, "1" } };
        _settled = forwarded;
    }

    /// <summary>The headers of the next call.</summary>
    public Metadata? Current => _current;

    /// <summary>The cluster the calls expect; null until learned or given.</summary>
    public Guid? ClusterId { get; private set; }

    /// <summary>Makes the calls expect cluster <paramref name="id"/> without asking.</summary>
    public void Expect(Guid id)
    {
        Set(id);
        _settled = true;
    }

    /// <summary>Completes once the cluster is known (at once after the first call).</summary>
    public Task EnsureKnownAsync(CancellationToken ct)
    {
        if (_settled) return Task.CompletedTask;
        Task learning;
        lock (_gate) learning = _learning ??= Task.Run(LearnAsync, CancellationToken.None); // shared: no one caller's token
        return learning.WaitAsync(ct);
    }

    private void Set(Guid id)
    {
        var headers = new Metadata { { ErrorMapping.ClusterHeader, id.ToString() } };
        if (_forwarded) headers.Add(ErrorMapping.ForwardedHeader, "1");
        ClusterId = id;
        _current = headers;
    }

    private async Task LearnAsync()
    {
        try
        {
            for (var attempt = 0; attempt < _members.Length; attempt++)
            {
                var i = (_first() + attempt) % _members.Length;
                using var attemptCts = new CancellationTokenSource(_attemptTimeout());
                try
                {
                    var reply = await _members[i].ClusterStatusAsync(new Empty(), new CallOptions(_current, cancellationToken: attemptCts.Token))
                        .ConfigureAwait(false);
                    if (Guid.TryParse(reply.ClusterId, out var id)) Set(id);
                    _settled = true;
                    return;
                }
                catch (RpcException) { }
            }
        }
        finally
        {
            if (!_settled)
                lock (_gate) _learning = null;
        }
    }
}
