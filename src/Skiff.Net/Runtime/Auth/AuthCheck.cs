using System.Security.Cryptography.X509Certificates;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Skiff.Core;
using Skiff.Net.Protocol;

namespace Skiff.Net.Runtime.Auth;

/// <summary>
/// With auth enabled, every client call names a user, by a token (<see cref="TokenHeader"/>) or, with client
/// certificate authentication, by its certificate's common name, and the user must be allowed the call: reading
/// a key or a prefix (a listing or a watch covers the whole prefix; the prefix list covers every key) needs a read
/// permission on a prefix of it, writing one a read-write permission, and membership, leadership transfer and auth
/// changes the root role. Only ClusterStatus (how clients find the cluster) and Authenticate are open. Checked at
/// whichever member the call reaches, forwarded calls too; no header grants anything by itself.
/// </summary>
internal sealed class AuthCheck(SkiffServer node) : Interceptor
{
    /// <summary>The request header carrying a token from <c>Authenticate</c>.</summary>
    public const string TokenHeader = "skiff-token";

    /// <summary>The request header with which a member forwarding a call proves it is one (a token it signs for
    /// itself, beside the client's): only such a call may use a member's own session.</summary>
    public const string MemberTokenHeader = "skiff-member-token";

    public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context,
        UnaryServerMethod<TRequest, TResponse> continuation)
    {
        var (forward, user, viaMember) = Check(request, context);
        AuthForwarding.Set(forward, user, viaMember);
        return await continuation(request, context).ConfigureAwait(false);
    }

    public override async Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream,
        ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        var (forward, user, viaMember) = Check(request, context);
        AuthForwarding.Set(forward, user, viaMember);
        // A watch outlives the check at its start: each change it sends is checked again, so a user whose read
        // permission goes (a revoked role or grant, a deleted user) stops receiving at the next change.
        if (user is not null && request is SubscribeRequest watch)
            responseStream = new RecheckedWriter<TResponse>(responseStream, () => WatchDenied(user, watch.Prefix));
        await continuation(request, responseStream, context).ConfigureAwait(false);
    }

    /// <summary>Throws the call's refusal, or returns the token its forwarded attempts carry, the user (null with
    /// auth off, or for an open call) and whether a member forwarded it.</summary>
    private (string Forward, string? User, bool ViaMember) Check(object request, ServerCallContext context)
    {
        var state = node.AuthState;
        if (!state.Enabled) return (AuthForwarding.Anonymous, null, false);
        var method = context.Method[(context.Method.LastIndexOf('/') + 1)..];
        if (method is "ClusterStatus" or "Authenticate") return (AuthForwarding.Anonymous, null, false);
        var (user, token) = Identify(state, context);
        var viaMember = ForwardedByMember(state, context);
        var denied = Denied(state, user, method, request) ?? SessionDenied(state, user, viaMember, request);
        if (denied is not null) throw PermissionDenied(user, denied);
        return (token ?? Tokens.Issue(state, user, DateTimeOffset.UtcNow + TimeSpan.FromMinutes(1)), user, viaMember);
    }

    private static bool ForwardedByMember(AuthState state, ServerCallContext context) =>
        context.RequestHeaders.GetValue(MemberTokenHeader) is { Length: > 0 } token
        && Tokens.Verify(state, token, DateTimeOffset.UtcNow, out _) == Tokens.MemberPrincipal;

    /// <summary>Why <paramref name="user"/> may not use the session the call names, or null if it may (or names
    /// none). A session belongs to the user who opened it: another user writing in it or closing it would break
    /// its owner's exactly-once writes (a retry answered with someone else's result). A member's own session (the
    /// one it writes session-less calls in) is usable only through a member. A session this member does not know
    /// (opened moments ago, or gone) is left to the leader, which checks again, and to the log, which refuses an
    /// unknown session. Sessions opened while auth was off belong to nobody in particular.</summary>
    private string? SessionDenied(AuthState state, string user, bool viaMember, object request)
    {
        if (user == Tokens.MemberPrincipal || Core.Auth.isRootUser(state, user)) return null;
        var session = request switch
        {
            InsertRequest { Session: { } r } => r.Id,
            DeleteRequest { Session: { } r } => r.Id,
            CompareAndSwapRequest { Session: { } r } => r.Id,
            CloseSessionRequest r => r.Id,
            _ => 0UL,
        };
        if (session == 0) return null;
        var owner = node.SessionOwner((long)session);
        if (owner is null or "" || owner == user || (owner == Tokens.MemberPrincipal && viaMember)) return null;
        return $"may not use session {session}: {(owner == Tokens.MemberPrincipal ? "a member's own session" : "another user opened it")}";
    }

    private static RpcException PermissionDenied(string user, string why) =>
        ErrorMapping.ToRpc(new SkiffException(ErrorKind.PermissionDenied, $"user '{user}' {why}", outcome: WriteOutcome.NotApplied));

    private RpcException? WatchDenied(string user, string prefix)
    {
        var state = node.AuthState;
        if (!state.Enabled) return null;
        var why = Denied(state, user, "Subscribe", new SubscribeRequest { Prefix = prefix });
        return why is null ? null : PermissionDenied(user, why + " any more; the watch ends");
    }

    private (string User, string? Token) Identify(AuthState state, ServerCallContext context)
    {
        var token = context.RequestHeaders.GetValue(TokenHeader);
        if (!string.IsNullOrEmpty(token))
        {
            var user = Tokens.Verify(state, token, DateTimeOffset.UtcNow, out var reason);
            if (user is null) throw Unauthenticated(reason);
            if (user != Tokens.MemberPrincipal && !state.Users.ContainsKey(user)) throw Unauthenticated($"user '{user}' no longer exists");
            return (user, token);
        }
        if (node.Tls is { ClientCertAuth: true } tls && context.GetHttpContext().Connection.ClientCertificate is { } cert && tls.IsClient(cert))
        {
            var name = cert.GetNameInfo(X509NameType.SimpleName, forIssuer: false);
            if (!string.IsNullOrEmpty(name) && state.Users.ContainsKey(name)) return (name, null);
            throw Unauthenticated($"the client certificate names '{name}', which is not a user");
        }
        throw Unauthenticated("auth is enabled: authenticate (skiff --user, Client.WithCredentials) or present a client certificate naming a user");
    }

    private static RpcException Unauthenticated(string reason) =>
        ErrorMapping.ToRpc(new SkiffException(ErrorKind.Unauthenticated, reason, outcome: WriteOutcome.NotApplied));

    /// <summary>Why <paramref name="user"/> may not make the call, or null if it may.</summary>
    private static string? Denied(AuthState state, string user, string method, object request)
    {
        if (user == Tokens.MemberPrincipal || Core.Auth.isRootUser(state, user)) return null;
        return request switch
        {
            GetRequest r => NeedKey(state, user, Access.Read, r.Key),
            InsertRequest r => NeedKey(state, user, Access.Write, r.Key),
            DeleteRequest r => NeedKey(state, user, Access.Write, r.Key),
            CompareAndSwapRequest r => NeedKey(state, user, Access.Write, r.Key),
            ListKeysRequest r => NeedPrefix(state, user, r.Prefix, "list"),
            SubscribeRequest r => NeedPrefix(state, user, r.Prefix, "watch"),
            PrefixesRequest => NeedPrefix(state, user, "", "list the prefixes of"),
            OpenSessionRequest or CloseSessionRequest => null,
            _ => $"may not call {method}: it needs the root role",
        };
    }

    private static string? NeedKey(AuthState state, string user, Access access, string key) =>
        Core.Auth.allows(state, user, access, key) ? null
            : $"has no {(access.IsWrite ? "read-write" : "read")} permission on key '{key}'";

    private static string? NeedPrefix(AuthState state, string user, string prefix, string what) =>
        Core.Auth.allows(state, user, Access.Read, prefix) ? null
            : $"may not {what} {(prefix.Length == 0 ? "every key" : $"prefix '{prefix}'")}: no read permission covers it";
}

/// <summary>A watch's response stream that asks before each change whether the watch may still go on.</summary>
internal sealed class RecheckedWriter<T>(IServerStreamWriter<T> inner, Func<RpcException?> refusal) : IServerStreamWriter<T>
{
    public WriteOptions? WriteOptions
    {
        get => inner.WriteOptions;
        set => inner.WriteOptions = value;
    }

    public Task WriteAsync(T message) => refusal() is { } e ? Task.FromException(e) : inner.WriteAsync(message);
}
