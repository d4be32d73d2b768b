using System.Threading.Channels;

namespace Skiff.Net.Runtime;

/// <summary>
/// Runs a consumer loop on its own OS thread. The event loop, the storage writer and the applier block on purpose
/// (on fsync, on FASTER commits, on a full channel wait); doing that on thread-pool threads starves the pool (it
/// starts with one thread per core and adds more slowly), which stalls every continuation in the process, FASTER's
/// commit completions included. Measured: a 3-node cluster's leader did 50 commits/s instead of hundreds.
/// </summary>
internal static class DedicatedThread
{
    /// <summary>Starts <paramref name="body"/> on a new background thread; the task completes when it returns.</summary>
    public static Task Start(string name, Action body)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var stage = HandOffs.ForThread(name);
        var thread = new Thread(() =>
        {
            t_stage = stage;
            try
            {
                body();
                done.TrySetResult();
            }
            catch (Exception e)
            {
                done.TrySetException(e);
            }
        })
        {
            IsBackground = true,
            Name = name,
        };
        thread.Start();
        return done.Task;
    }

    /// <summary>Blocks until the channel has an item (true) or is completed (false). The channels these threads
    /// read allow synchronous continuations, so a producer's write wakes the blocked thread directly instead of
    /// through a thread-pool hop (which cost hundreds of microseconds per event under load).
    /// The wait does not spin: <c>Task.GetAwaiter().GetResult()</c> spins (SpinWait, then a ManualResetEventSlim
    /// that spins again) before it sleeps, and with three such threads per node, woken several times per write,
    /// that spinning was ~22% of a member's CPU samples on 2 cores, taken from the threads doing the work.
    /// A futex wake-up costs a few microseconds; spinning on an oversubscribed machine costs far more.</summary>
    public static bool WaitToRead<T>(ChannelReader<T> reader)
    {
        var wait = reader.WaitToReadAsync();
        if (wait.IsCompleted) return wait.GetAwaiter().GetResult();
        var signal = t_signal ??= new ManualResetEventSlim(false, spinCount: 0);
        signal.Reset();
        if (t_stage is { } waking) HandOffs.NoteAllocated(waking);
        var awaiter = wait.GetAwaiter();
        awaiter.UnsafeOnCompleted(t_set ??= signal.Set);
        signal.Wait();
        if (t_stage is { } stage) HandOffs.Count(stage);
        return awaiter.GetResult();
    }

    /// <summary>Blocks until <paramref name="task"/> completes, without spinning (see <see cref="WaitToRead{T}"/>),
    /// and rethrows its exception if it failed.</summary>
    public static void Wait(Task task)
    {
        if (!task.IsCompleted)
        {
            var signal = t_signal ??= new ManualResetEventSlim(false, spinCount: 0);
            signal.Reset();
            task.ConfigureAwait(false).GetAwaiter().UnsafeOnCompleted(signal.Set);
            signal.Wait();
        }
        task.GetAwaiter().GetResult();
    }

    [ThreadStatic] private static ManualResetEventSlim? t_signal;
    [ThreadStatic] private static Action? t_set;
    [ThreadStatic] private static HandOffs.Stage? t_stage;

    /// <summary>Which of the runtime's dedicated threads this is (by the stage its wake-ups count under), or null
    /// on any other thread.</summary>
    internal static HandOffs.Stage? Current => t_stage;
}
