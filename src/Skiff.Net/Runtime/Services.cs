using Google.Protobuf;
using Grpc.Core;
using Skiff.Core;
using Skiff.Net.Protocol;

namespace Skiff.Net.Runtime;

/// <summary>The `skiff.Skiff` client service of one node.</summary>
internal sealed partial class ClientService : Protocol.Skiff.SkiffBase
{
    private readonly SkiffServer _node;

    public ClientService(SkiffServer node) => _node = node;

    private static CallOrigin Origin(ServerCallContext ctx) =>
        ctx.RequestHeaders.GetValue(ErrorMapping.ForwardedHeader) is not null ? CallOrigin.Forwarded : CallOrigin.Local;

    private static SessionRef? Map(Protocol.SessionRef? s) =>
        s is null ? null : new SessionRef((long)s.Id, (long)s.Sequence, (long)s.Acknowledged);

    private static ReadConsistency Map(Protocol.ReadConsistency c) =>
        c == Protocol.ReadConsistency.Stale ? ReadConsistency.Stale : ReadConsistency.Linearizable;

    private async Task<T> Guard<T>(Func<Task<T>> body)
    {
        // The node may finish this call on the thread that answers it (the applier): see Pending.
        Pending.AnswerInlineHere();
        try { return await body().ConfigureAwait(false); }
        catch (SkiffException e)
        {
            var (leader, address) = _node.LeaderInfo();
            throw ErrorMapping.ToRpc(e, leader, address);
        }
    }

    public override Task<GetReply> Get(GetRequest request, ServerCallContext context) => Guard(async () =>
    {
        RequestLimits.Key(request.Key);
        var value = await _node.KeyValue.GetAsync(request.Key, Map(request.Consistency), Origin(context), context.CancellationToken).ConfigureAwait(false);
        var reply = new GetReply { Index = (ulong)_node.AppliedIndex };
        if (value is not null) reply.Value = UnsafeByteOperations.UnsafeWrap(value);
        return reply;
    });

    public override Task<InsertReply> Insert(InsertRequest request, ServerCallContext context) => Guard(async () =>
    {
        RequestLimits.Put(request.Key, request.Value.Length, _node.MaxValueBytes);
        var index = await _node.KeyValue.InsertAsync(request.Key, request.Value.ToByteArray(), Map(request.Session), Origin(context), context.CancellationToken).ConfigureAwait(false);
        return new InsertReply { Success = true, Index = (ulong)index };
    });

    public override Task<DeleteReply> Delete(DeleteRequest request, ServerCallContext context) => Guard(async () =>
    {
        RequestLimits.Key(request.Key);
        var index = await _node.KeyValue.RemoveAsync(request.Key, Map(request.Session), Origin(context), context.CancellationToken).ConfigureAwait(false);
        return new DeleteReply { Success = true, Index = (ulong)index };
    });

    public override Task<CompareAndSwapReply> CompareAndSwap(CompareAndSwapRequest request, ServerCallContext context) => Guard(async () =>
    {
        RequestLimits.CompareAndSwap(request.Key, request.HasExpected ? request.Expected.Length : null,
            request.HasValue ? request.Value.Length : null, _node.MaxValueBytes);
        var (swapped, index) = await _node.KeyValue.CompareAndSwapAsync(request.Key,
            request.HasExpected ? request.Expected.ToByteArray() : null,
            request.HasValue ? request.Value.ToByteArray() : null,
            Map(request.Session), Origin(context), context.CancellationToken).ConfigureAwait(false);
        return new CompareAndSwapReply { Swapped = swapped, Index = (ulong)index };
    });

    public override Task<OpenSessionReply> OpenSession(OpenSessionRequest request, ServerCallContext context) => Guard(async () =>
    {
        var (id, timeoutMs) = await _node.KeyValue.OpenSessionAsync(TimeSpan.FromMilliseconds(Math.Min(request.TimeoutMs, (ulong)Sessions.MaxTimeoutMs)),
            Origin(context), context.CancellationToken).ConfigureAwait(false);
        return new OpenSessionReply { Id = (ulong)id, TimeoutMs = (ulong)timeoutMs };
    });

    public override Task<CloseSessionReply> CloseSession(CloseSessionRequest request, ServerCallContext context) => Guard(async () =>
    {
        await _node.KeyValue.CloseSessionAsync((long)request.Id, Origin(context), context.CancellationToken).ConfigureAwait(false);
        return new CloseSessionReply();
    });

    public override Task<PrefixReply> GetPrefixes(PrefixesRequest request, ServerCallContext context) => Guard(async () =>
    {
        var stale = context.RequestHeaders.GetValue("skiff-consistency") == "stale";
        var page = await _node.KeyValue.GetPrefixesPageAsync(NullIfEmpty(request.StartAfter), request.Limit,
            stale ? ReadConsistency.Stale : ReadConsistency.Linearizable, Origin(context), context.CancellationToken).ConfigureAwait(false);
        var reply = new PrefixReply { More = page.HasMore };
        reply.Prefixes.AddRange(page.Items);
        return reply;
    });

    public override Task<ListKeysReply> ListKeys(ListKeysRequest request, ServerCallContext context) => Guard(async () =>
    {
        var page = await _node.KeyValue.ListKeysPageAsync(request.Prefix, NullIfEmpty(request.StartAfter), request.Limit,
            Map(request.Consistency), Origin(context), context.CancellationToken).ConfigureAwait(false);
        var reply = new ListKeysReply { More = page.HasMore };
        reply.Keys.AddRange(page.Items);
        return reply;
    });

    private static string? NullIfEmpty(string s) => s.Length == 0 ? null : s;

    public override async Task Subscribe(SubscribeRequest request, IServerStreamWriter<SubscribeReply> responseStream, ServerCallContext context)
    {
        try
        {
            RequestLimits.Prefix(request.Prefix);
            // Register first, then send the response headers: a client that waits for the headers knows the watch is
            // active, so it sees every change committed after its WatchAsync returns.
            var changes = _node.KeyValue.WatchAsync(request.Prefix, (long)request.FromIndex, context.CancellationToken);
            await context.WriteResponseHeadersAsync(new Metadata()).ConfigureAwait(false);
            await foreach (var c in changes.ConfigureAwait(false))
            {
                var reply = new SubscribeReply
                {
                    Key = c.Key,
                    Index = (ulong)c.Index,
                    Action = c.Kind == ChangeKind.Remove ? SubscribeReply.Types.Action.Delete : SubscribeReply.Types.Action.Insert,
                };
                if (c.Value is { } value) reply.Value = UnsafeByteOperations.UnsafeWrap(value);
                await responseStream.WriteAsync(reply).ConfigureAwait(false);
            }
        }
        catch (SkiffException e)
        {
            throw ErrorMapping.ToRpc(e);
        }
        catch (OperationCanceledException) when (context.CancellationToken.IsCancellationRequested) { }
    }

    private static Guid ParseId(string id) =>
        Guid.TryParse(id, out var g) ? g : throw new SkiffException(ErrorKind.InvalidAddress, $"'{id}' is not a node id");

    public override Task<ServerReply> AddServer(ServerRequest request, ServerCallContext context) => Guard(async () =>
    {
        await _node.Membership.AddServerAsync(ParseId(request.Id), request.Address, Origin(context), context.CancellationToken).ConfigureAwait(false);
        var (leader, address) = _node.LeaderInfo();
        return new ServerReply { Success = true, LeaderId = leader?.ToString() ?? "", LeaderAddress = address ?? "" };
    });

    public override Task<ServerReply> UpdateServer(ServerRequest request, ServerCallContext context) => Guard(async () =>
    {
        await _node.Membership.UpdateServerAsync(ParseId(request.Id), request.Address, Origin(context), context.CancellationToken).ConfigureAwait(false);
        var (leader, address) = _node.LeaderInfo();
        return new ServerReply { Success = true, LeaderId = leader?.ToString() ?? "", LeaderAddress = address ?? "" };
    });

    public override Task<ServerReply> RemoveServer(ServerRequest request, ServerCallContext context) => Guard(async () =>
    {
        await _node.Membership.RemoveServerAsync(ParseId(request.Id), Origin(context), context.CancellationToken).ConfigureAwait(false);
        var (leader, address) = _node.LeaderInfo();
        return new ServerReply { Success = true, LeaderId = leader?.ToString() ?? "", LeaderAddress = address ?? "" };
    });

    public override Task<TransferLeadershipReply> TransferLeadership(TransferLeadershipRequest request, ServerCallContext context) => Guard(async () =>
    {
        Guid? target = string.IsNullOrEmpty(request.TargetId) ? null : ParseId(request.TargetId);
        var leader = await _node.Membership.TransferLeadershipAsync(target, Origin(context), context.CancellationToken).ConfigureAwait(false);
        return new TransferLeadershipReply { Success = true, LeaderId = leader.ToString() };
    });

    public override Task<ClusterStatusReply> ClusterStatus(Empty request, ServerCallContext context)
    {
        var (leader, address) = _node.LeaderInfo();
        var reply = new ClusterStatusReply
        {
            Id = _node.Id.ToString(),
            Role = _node.Role.ToString(),
            Term = _node.Term,
            LeaderId = leader?.ToString() ?? "",
            LeaderAddress = address ?? "",
            CommitIndex = _node.CommitIndex,
            AppliedIndex = _node.AppliedIndex,
            ClusterId = _node.Cluster.Id?.ToString() ?? "",
        };
        foreach (var m in _node.Members)
            reply.Members.Add(new MemberInfo { Id = m.Key.ToString(), Address = m.Value.Address, Voter = m.Value.Voter });
        return Task.FromResult(reply);
    }
}
