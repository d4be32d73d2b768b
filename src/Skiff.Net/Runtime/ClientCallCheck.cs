using Grpc.Core;
using Grpc.Core.Interceptors;

namespace Skiff.Net.Runtime;

/// <summary>A check every client call (unary or a watch) passes before it runs: it throws the call's refusal.</summary>
internal abstract class ClientCallCheck : Interceptor
{
    /// <summary>Throws an RpcException (a typed SkiffException's) when the call may not run.</summary>
    protected abstract void Check(ServerCallContext context);

    public override Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context,
        UnaryServerMethod<TRequest, TResponse> continuation)
    {
        Check(context);
        return continuation(request, context);
    }

    public override Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream,
        ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Check(context);
        return continuation(request, responseStream, context);
    }
}
