using Grpc.Core;
using Grpc.Core.Interceptors;

namespace Skiff.Net.Runtime.Auth;

/// <summary>A client-side interceptor that adds the current token (if any) to every call's headers, on a copy: the
/// headers a call is given are shared by concurrent calls. A member forwarding calls also adds its own member token
/// (<paramref name="memberToken"/>), proving to the leader that a member forwarded the call.</summary>
internal sealed class TokenHeader(Func<string?> token, Func<string?>? memberToken = null) : Interceptor
{
    private CallOptions With(CallOptions options)
    {
        var t = token();
        var m = memberToken?.Invoke();
        if (string.IsNullOrEmpty(t) && string.IsNullOrEmpty(m)) return options;
        var headers = new Metadata();
        if (options.Headers is { } given)
            foreach (var h in given) headers.Add(h);
        if (!string.IsNullOrEmpty(t)) headers.Add(AuthCheck.TokenHeader, t);
        if (!string.IsNullOrEmpty(m)) headers.Add(AuthCheck.MemberTokenHeader, m);
        return options.WithHeaders(headers);
    }

    public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(TRequest request, ClientInterceptorContext<TRequest, TResponse> context,
        AsyncUnaryCallContinuation<TRequest, TResponse> continuation) =>
        continuation(request, new ClientInterceptorContext<TRequest, TResponse>(context.Method, context.Host, With(context.Options)));

    public override AsyncServerStreamingCall<TResponse> AsyncServerStreamingCall<TRequest, TResponse>(TRequest request,
        ClientInterceptorContext<TRequest, TResponse> context, AsyncServerStreamingCallContinuation<TRequest, TResponse> continuation) =>
        continuation(request, new ClientInterceptorContext<TRequest, TResponse>(context.Method, context.Host, With(context.Options)));
}
