using Microsoft.FSharp.Core;
using Skiff.Core;

namespace Skiff.Net.Runtime;

/// <summary>What each of the reducer's refusals (<see cref="Rejection"/>) means to a caller, as an exception.</summary>
internal static class RejectionErrors
{
    /// <summary>The exception a caller sees for a request the reducer refused.</summary>
    public static Exception ToException(Rejection r) => r switch
    {
        Rejection.NotLeader nl => new NotLeaderException(FSharpOption<Guid>.get_IsSome(nl.LeaderHint) ? nl.LeaderHint!.Value : null),
        Rejection.Invalid inv => new SkiffException(ErrorKind.PeerNotFound, inv.Reason),
        _ when r.IsTransferTimedOut => new SkiffException(ErrorKind.Timeout,
            "the leadership transfer did not complete within an election timeout; the leader is unchanged"),
        _ when r.IsTransferOutcomeUnknown => new SkiffException(ErrorKind.Timeout,
            "the transfer target was told to campaign but leadership had not moved an election timeout later; it may still move"),
        _ when r.IsOverloaded => new SkiffException(ErrorKind.Overloaded,
            "refused before proposing: nothing was applied; retry later"),
        _ when r.IsLeadershipLost => new SkiffException(ErrorKind.NotLeader,
            "leadership was lost before the request was answered; a write's outcome is unknown", null, WriteOutcome.Unknown),
        _ => new RetryableException(r),
    };
}
