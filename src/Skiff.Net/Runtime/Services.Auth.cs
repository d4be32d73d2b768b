using Grpc.Core;
using Skiff.Net.Protocol;

namespace Skiff.Net.Runtime;

/// <summary>The auth calls of the client service (who may make them is <see cref="Auth.AuthCheck"/>'s decision).</summary>
internal sealed partial class ClientService
{
    public override Task<AuthenticateReply> Authenticate(AuthenticateRequest request, ServerCallContext context) => Guard(async () =>
    {
        var (token, expires) = await _node.AuthCalls.AuthenticateAsync(request.User, request.Password, context.CancellationToken).ConfigureAwait(false);
        return new AuthenticateReply { Token = token, ExpiresUnixMs = (ulong)expires.ToUnixTimeMilliseconds() };
    });

    public override Task<AuthChangeReply> AuthChange(AuthChangeRequest request, ServerCallContext context) => Guard(async () =>
    {
        var revision = await _node.AuthCalls.ChangeAsync(request, Origin(context), context.CancellationToken).ConfigureAwait(false);
        return new AuthChangeReply { Revision = (ulong)revision };
    });

    public override Task<AuthStatusReply> AuthStatus(Empty request, ServerCallContext context) => Task.FromResult(_node.AuthCalls.Status());
}
