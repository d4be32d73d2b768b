using Skiff.Core;

namespace Skiff.Net.Runtime;

/// <summary>A client request waiting for the reducer's answer (and, for writes and reads, for the applier).</summary>
internal sealed class Pending
{
    private readonly TaskCompletionSource<LogResult?> _tcs = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>The request's id as given to the reducer.</summary>
    public long Id { get; }

    /// <summary>The log index a write was appended at, once Accepted.</summary>
    public long Index { get; set; }

    /// <summary>When the request was submitted, reached the loop, was accepted, and was answered (Stopwatch ticks).</summary>
    public long Submitted = System.Diagnostics.Stopwatch.GetTimestamp(), Stepped, AcceptedAt, Answered;

    /// <summary>Creates a pending request.</summary>
    public Pending(long id) => Id = id;

    /// <summary>Completes when the request is answered.</summary>
    public Task<LogResult?> Task => _tcs.Task;

    /// <summary>The caller's cancellation registration, released once the request is answered.</summary>
    public CancellationTokenRegistration Registration;

    /// <summary>Answers with success.</summary>
    public bool Succeed(LogResult? result)
    {
        Answered = System.Diagnostics.Stopwatch.GetTimestamp();
        var answered = _tcs.TrySetResult(result);
        if (answered) Answer();
        if (answered && Index > 0)
            RuntimeMetrics.CommitLatency.Record(System.Diagnostics.Stopwatch.GetElapsedTime(Submitted, Answered).TotalMilliseconds);
        return answered;
    }

    /// <summary>Answers with an error.</summary>
    public bool Fail(Exception error)
    {
        var answered = _tcs.TrySetException(error);
        if (answered) Answer();
        return answered;
    }

    private void Answer()
    {
        // Unregister, not Dispose: Dispose would wait for a callback running on another thread (or deadlock in it).
        Registration.Unregister();
        HandOffs.Count(HandOffs.Stage.ReplyContinuation);
    }
}
