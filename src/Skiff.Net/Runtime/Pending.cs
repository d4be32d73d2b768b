using Skiff.Core;

namespace Skiff.Net.Runtime;

/// <summary>A client request waiting for the reducer's answer (and, for writes and reads, for the applier).</summary>
/// <remarks>How the caller resumes: by default on the thread pool, so no caller's code ever runs on a runtime thread.
/// A request made inside a client call of this node's gRPC service (<see cref="AnswerInlineHere"/>) resumes on the
/// thread that answers it when that is the applier or any other thread than the event loop, writer or loader: its
/// continuation only finishes the call and queues its reply to the connection, so the applier writes replies itself
/// instead of waking a pool thread per write. Answers given on the event loop, writer or loader (refusals, shutdown)
/// still go through the pool: those threads must never run call code.</remarks>
internal sealed class Pending
{
    private static readonly AsyncLocal<bool> InlineHere = new();

    /// <summary>Lets requests made from here on, in the current async flow, resume inline (see the remarks).</summary>
    internal static void AnswerInlineHere() => InlineHere.Value = true;

    private readonly TaskCompletionSource<LogResult?> _tcs;
    private readonly bool _inline;
    private int _answered;

    /// <summary>The request's id as given to the reducer.</summary>
    public long Id { get; }

    /// <summary>The log index a write was appended at, once Accepted.</summary>
    public long Index { get; set; }

    /// <summary>When the request was submitted, reached the loop, was accepted, and was answered (Stopwatch ticks).</summary>
    public long Submitted = System.Diagnostics.Stopwatch.GetTimestamp(), Stepped, AcceptedAt, Answered;

    /// <summary>Creates a pending request.</summary>
    public Pending(long id)
    {
        Id = id;
        _inline = InlineHere.Value;
        _tcs = new(_inline ? TaskCreationOptions.None : TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>Completes when the request is answered.</summary>
    public Task<LogResult?> Task => _tcs.Task;

    /// <summary>Whether the request was answered (its task may complete a moment later, on the pool).</summary>
    public bool IsAnswered => Volatile.Read(ref _answered) != 0;

    /// <summary>The caller's cancellation registration, released once the request is answered.</summary>
    public CancellationTokenRegistration Registration;

    /// <summary>Answers with success.</summary>
    public bool Succeed(LogResult? result)
    {
        Answered = System.Diagnostics.Stopwatch.GetTimestamp();
        if (!Claim()) return false;
        if (Index > 0)
            RuntimeMetrics.CommitLatency.Record(System.Diagnostics.Stopwatch.GetElapsedTime(Submitted, Answered).TotalMilliseconds);
        if (ResumeInline()) _tcs.TrySetResult(result);
        else ThreadPool.UnsafeQueueUserWorkItem(static s => s.Tcs.TrySetResult(s.Result), (Tcs: _tcs, Result: result), preferLocal: false);
        return true;
    }

    /// <summary>Answers with an error.</summary>
    public bool Fail(Exception error)
    {
        if (!Claim()) return false;
        if (ResumeInline()) _tcs.TrySetException(error);
        else ThreadPool.UnsafeQueueUserWorkItem(static s => s.Tcs.TrySetException(s.Error), (Tcs: _tcs, Error: error), preferLocal: false);
        return true;
    }

    private bool Claim()
    {
        if (Interlocked.Exchange(ref _answered, 1) != 0) return false;
        // Unregister, not Dispose: Dispose would wait for a callback running on another thread (or deadlock in it).
        Registration.Unregister();
        return true;
    }

    /// <summary>Whether to complete the task on this thread: always for a task that resumes its caller
    /// asynchronously anyway (that is the hand-off); for an inline one, unless this is the loop, writer or loader.</summary>
    private bool ResumeInline()
    {
        if (!_inline)
        {
            HandOffs.Count(HandOffs.Stage.ReplyContinuation);
            return true;
        }
        if (DedicatedThread.Current is null or HandOffs.Stage.ApplierWake) return true;
        HandOffs.Count(HandOffs.Stage.ReplyContinuation);
        return false;
    }
}
