using Skiff.Core;

namespace Skiff.Net.Runtime;

// Exceptions the event loop raises to tell the LeaderRouter what to do with a call; they never reach a caller (the
// router turns them into a forward, a retry or a SkiffException).

/// <summary>Thrown internally when the reducer answers NotLeader; the server forwards or retries.</summary>
internal sealed class NotLeaderException : Exception
{
    /// <summary>The leader the reducer named, if any.</summary>
    public Guid? Hint { get; }

    /// <summary>Creates one.</summary>
    public NotLeaderException(Guid? hint) : base("this node is not the leader") => Hint = hint;
}

/// <summary>Thrown internally for refusals worth retrying within the deadline (transfer or config change under way).</summary>
internal sealed class RetryableException : Exception
{
    /// <summary>The refusal.</summary>
    public Rejection Rejection { get; }

    /// <summary>Creates one.</summary>
    public RetryableException(Rejection rejection) : base(rejection.ToString()) => Rejection = rejection;
}
