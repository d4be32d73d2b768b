namespace Skiff.Net.Runtime;

/// <summary>A write gave up because its token was cancelled (its deadline passed, or its caller cancelled it);
/// <see cref="Outcome"/> says whether an attempt may have taken effect.</summary>
internal sealed class WriteCancelledException : OperationCanceledException
{
    /// <summary>Whether the write may have taken effect.</summary>
    public WriteOutcome Outcome { get; }

    /// <summary>The last error an attempt met, if any.</summary>
    public SkiffException? LastError { get; }

    /// <summary>Creates one.</summary>
    public WriteCancelledException(WriteOutcome outcome, SkiffException? last, CancellationToken token)
        : base(outcome == WriteOutcome.Unknown
            ? $"the write was cancelled after it was sent; it may have taken effect ({last?.Message ?? "no answer"})"
            : $"the write was cancelled before any member could have applied it ({last?.Message ?? "no answer"})", last, token)
    {
        Outcome = outcome;
        LastError = last;
    }
}
