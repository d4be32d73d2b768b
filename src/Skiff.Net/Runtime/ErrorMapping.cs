using Grpc.Core;

namespace Skiff.Net.Runtime;

/// <summary>Carries SkiffException across gRPC: the kind travels in the `skiff-error` trailer, the leader (for
/// NotLeader) in `skiff-leader` / `skiff-leader-address`.</summary>
public static class ErrorMapping
{
    /// <summary>Trailer naming the ErrorKind.</summary>
    public const string KindTrailer = "skiff-error";

    /// <summary>Trailer naming the leader's id.</summary>
    public const string LeaderTrailer = "skiff-leader";

    /// <summary>Trailer naming the leader's address.</summary>
    public const string LeaderAddressTrailer = "skiff-leader-address";

    /// <summary>Header marking a call forwarded by another member (never forwarded again).</summary>
    public const string ForwardedHeader = "skiff-forwarded";

    /// <summary>The gRPC status for an error kind.</summary>
    public static StatusCode StatusOf(ErrorKind kind) => kind switch
    {
        ErrorKind.NotLeader => StatusCode.FailedPrecondition,
        ErrorKind.Timeout => StatusCode.DeadlineExceeded,
        ErrorKind.NoQuorum => StatusCode.Unavailable,
        ErrorKind.InvalidKey or ErrorKind.ValueTooLarge or ErrorKind.InvalidAddress => StatusCode.InvalidArgument,
        ErrorKind.PeerNotFound => StatusCode.NotFound,
        ErrorKind.StreamClosed => StatusCode.Aborted,
        ErrorKind.ClusterJoinFailed => StatusCode.FailedPrecondition,
        _ => StatusCode.Internal,
    };

    /// <summary>An RpcException for a SkiffException.</summary>
    public static RpcException ToRpc(SkiffException e, Guid? leader = null, string? leaderAddress = null)
    {
        var trailers = new Metadata { { KindTrailer, e.Kind.ToString() } };
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
            return new SkiffException(kind, message, e);
        }
        return e.StatusCode switch
        {
            StatusCode.DeadlineExceeded => new SkiffException(ErrorKind.Timeout, "the call's deadline passed", e),
            StatusCode.Unavailable => new SkiffException(ErrorKind.ClientConnectFailed, e.Status.Detail, e),
            StatusCode.Cancelled => new SkiffException(ErrorKind.RpcCallFailed, "the call was cancelled", e),
            _ => new SkiffException(ErrorKind.RpcCallFailed, $"{e.StatusCode}: {e.Status.Detail}", e),
        };
    }
}
