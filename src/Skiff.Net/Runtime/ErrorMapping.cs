using Grpc.Core;

namespace Skiff.Net.Runtime;

/// <summary>Carries SkiffException across gRPC: the kind travels in the `skiff-error` trailer, the leader (for
/// NotLeader) in `skiff-leader` / `skiff-leader-address`.</summary>
internal static class ErrorMapping
{
    /// <summary>Trailer naming the ErrorKind.</summary>
    public const string KindTrailer = "skiff-error";

    /// <summary>Trailer naming the leader's id.</summary>
    public const string LeaderTrailer = "skiff-leader";

    /// <summary>Trailer naming the leader's address.</summary>
    public const string LeaderAddressTrailer = "skiff-leader-address";

    /// <summary>Trailer saying what an error means for a write: `not-applied` (it surely did not take effect) or
    /// `unknown` (it may have).</summary>
    public const string OutcomeTrailer = "skiff-outcome";

    /// <summary>Header marking a call forwarded by another member (never forwarded again).</summary>
    public const string ForwardedHeader = "skiff-forwarded";

    /// <summary>Header carrying the cluster id a client expects (learned on first contact); a member of another
    /// cluster refuses the call with <see cref="ErrorKind.ClusterMismatch"/>.</summary>
    public const string ClusterHeader = "skiff-cluster-id";

    /// <summary>The gRPC status for an error kind.</summary>
    public static StatusCode StatusOf(ErrorKind kind) => kind switch
    {
        ErrorKind.NotLeader => StatusCode.FailedPrecondition,
        ErrorKind.Timeout => StatusCode.DeadlineExceeded,
        ErrorKind.NoQuorum => StatusCode.Unavailable,
        ErrorKind.InvalidKey or ErrorKind.ValueTooLarge or ErrorKind.InvalidAddress or ErrorKind.InvalidArgument => StatusCode.InvalidArgument,
        ErrorKind.PeerNotFound => StatusCode.NotFound,
        ErrorKind.StreamClosed => StatusCode.Aborted,
        ErrorKind.ClusterJoinFailed => StatusCode.FailedPrecondition,
        ErrorKind.SessionExpired => StatusCode.FailedPrecondition,
        ErrorKind.Overloaded or ErrorKind.DiskFull => StatusCode.ResourceExhausted,
        ErrorKind.ClusterMismatch => StatusCode.FailedPrecondition,
        ErrorKind.PermissionDenied => StatusCode.PermissionDenied,
        ErrorKind.Unauthenticated => StatusCode.Unauthenticated,
        _ => StatusCode.Internal,
    };

    /// <summary>An RpcException for a SkiffException.</summary>
    public static RpcException ToRpc(SkiffException e, Guid? leader = null, string? leaderAddress = null)
    {
        var trailers = new Metadata
        {
            { KindTrailer, e.Kind.ToString() },
            { OutcomeTrailer, e.Outcome == WriteOutcome.Unknown ? "unknown" : "not-applied" },
        };
        if (leader is { } l) trailers.Add(LeaderTrailer, l.ToString());
        if (leaderAddress is not null) trailers.Add(LeaderAddressTrailer, leaderAddress);
        return new RpcException(new Status(StatusOf(e.Kind), e.Message), trailers);
    }

    /// <summary>The SkiffException an RpcException stands for.</summary>
    public static SkiffException FromRpc(RpcException e)
    {
        var kindText = e.Trailers.GetValue(KindTrailer);
        if (kindText is not null && Enum.TryParse<ErrorKind>(kindText, out var kind))
        {
            var message = e.Status.Detail;
            var prefix = kind + ": ";
            if (message.StartsWith(prefix, StringComparison.Ordinal)) message = message[prefix.Length..];
            WriteOutcome? outcome = e.Trailers.GetValue(OutcomeTrailer) switch
            {
                "unknown" => WriteOutcome.Unknown,
                "not-applied" => WriteOutcome.NotApplied,
                _ => null,
            };
            return new SkiffException(kind, message, e, outcome);
        }
        // No Skiff trailer: the call broke in transport. Only a connection that was never made proves the request
        // was not delivered; grpc-dotnet also answers Unavailable for a connection lost in the middle of a call.
        return e.StatusCode switch
        {
            StatusCode.DeadlineExceeded => new SkiffException(ErrorKind.Timeout, "the call's deadline passed", e, WriteOutcome.Unknown),
            StatusCode.Unavailable or StatusCode.Internal when NeverSent(e) =>
                new SkiffException(ErrorKind.ClientConnectFailed, e.Status.Detail, e, WriteOutcome.NotApplied),
            StatusCode.Unavailable => new SkiffException(ErrorKind.ClientConnectFailed,
                $"the connection broke during the call: {e.Status.Detail}", e, WriteOutcome.Unknown),
            StatusCode.Cancelled => new SkiffException(ErrorKind.RpcCallFailed, "the call was cancelled", e, WriteOutcome.Unknown),
            _ => new SkiffException(ErrorKind.RpcCallFailed, $"{e.StatusCode}: {e.Status.Detail}", e, WriteOutcome.Unknown),
        };
    }

    /// <summary>True when a call surely never reached a server: the connection to it could not be made (refused,
    /// unreachable, its name did not resolve, or the TLS handshake failed: a plain member, an untrusted certificate).</summary>
    public static bool NeverSent(RpcException e)
    {
        if (e.StatusCode is not (StatusCode.Unavailable or StatusCode.Internal) || e.Trailers.GetValue(KindTrailer) is not null) return false;
        for (Exception? x = e.Status.DebugException; x is not null; x = x.InnerException)
        {
            if (x is HttpRequestException
                {
                    HttpRequestError: HttpRequestError.ConnectionError or HttpRequestError.NameResolutionError or HttpRequestError.SecureConnectionError
                })
                return true;
            // A plain HTTP/2 client at a TLS port: the connection opens but the server never answers the HTTP/2
            // preface, and no request is sent before it does (SocketsHttpHandler waits for the server's SETTINGS).
            // Only the message tells this apart from a protocol error in the middle of a call.
            if (x is HttpRequestException h && h.Message.Contains("did not complete the HTTP/2 handshake", StringComparison.Ordinal))
                return true;
            if (e.StatusCode == StatusCode.Internal) continue;
            if (x is System.Net.Sockets.SocketException
                {
                    SocketErrorCode: System.Net.Sockets.SocketError.ConnectionRefused or System.Net.Sockets.SocketError.HostUnreachable
                        or System.Net.Sockets.SocketError.NetworkUnreachable or System.Net.Sockets.SocketError.AddressNotAvailable
                })
                return true;
        }
        return false;
    }
}
