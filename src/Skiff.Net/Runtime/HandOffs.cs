namespace Skiff.Net.Runtime;

/// <summary>
/// Counts the thread hand-offs of the runtime (for measurements, process-wide like <see cref="WriteStages"/>): each
/// time work queued by one thread makes another one run. A dedicated thread (event loop, storage writer, applier,
/// loader) counts a wake-up only when it had to block and was woken, not per item: a thread that finds more queued
/// after a batch takes it without a hand-off. Thread-pool hops the runtime causes itself are counted where they
/// are caused; those inside gRPC and Kestrel are not visible here (compare ThreadPool.CompletedWorkItemCount, as
/// <c>Skiff.Bench writepath</c> does).
/// </summary>
internal static class HandOffs
{
    /// <summary>Where a hand-off happens.</summary>
    public enum Stage
    {
        /// <summary>The event loop woke for an inbox item (a client request, a peer message, a completion, a tick).</summary>
        LoopWake,

        /// <summary>The storage writer woke for a durable write.</summary>
        WriterWake,

        /// <summary>The applier woke for committed entries or a write or read to answer.</summary>
        ApplierWake,

        /// <summary>The log loader woke for a read of older entries.</summary>
        LoaderWake,

        /// <summary>A log flush completed on another thread than the writer's (FASTER's commit continuation).</summary>
        FlushCompletion,

        /// <summary>A peer link's sender task was resumed on the thread pool for queued messages.</summary>
        PeerSendWake,

        /// <summary>A request's answer resumed its caller on the thread pool (not inline on the answering thread).</summary>
        ReplyContinuation,
    }

    private static readonly long[] Counts = new long[Enum.GetValues<Stage>().Length];

    /// <summary>Counts one hand-off at <paramref name="stage"/>.</summary>
    public static void Count(Stage stage) => Interlocked.Increment(ref Counts[(int)stage]);

    /// <summary>The stage a dedicated thread's wake-ups count under, from its name.</summary>
    internal static Stage? ForThread(string name) => name switch
    {
        "skiff-loop" => Stage.LoopWake,
        "skiff-writer" => Stage.WriterWake,
        "skiff-applier" => Stage.ApplierWake,
        "skiff-loader" => Stage.LoaderWake,
        _ => null,
    };

    // Bytes allocated so far by the dedicated thread of each wake-up stage, as of its last wait (one node per
    // process when measured: one thread per stage).
    private static readonly long[] Allocated = new long[Counts.Length];

    /// <summary>Notes what the current dedicated thread has allocated so far (called before it waits).</summary>
    internal static void NoteAllocated(Stage stage) =>
        Volatile.Write(ref Allocated[(int)stage], GC.GetAllocatedBytesForCurrentThread());

    /// <summary>Every stage's count so far, by name, and the bytes each dedicated thread allocated (as
    /// "Allocated" + the stage's name).</summary>
    public static IReadOnlyDictionary<string, long> Snapshot()
    {
        var result = new Dictionary<string, long>();
        foreach (var stage in Enum.GetValues<Stage>())
        {
            result[stage.ToString()] = Interlocked.Read(ref Counts[(int)stage]);
            if (ForThreadStage(stage)) result[AllocatedPrefix + stage] = Volatile.Read(ref Allocated[(int)stage]);
        }
        return result;
    }

    /// <summary>The prefix of the allocation entries of <see cref="Snapshot"/>.</summary>
    public const string AllocatedPrefix = "Allocated";

    private static bool ForThreadStage(Stage stage) => stage is Stage.LoopWake or Stage.WriterWake or Stage.ApplierWake or Stage.LoaderWake;
}
