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
        var thread = new Thread(() =>
        {
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
    /// through a thread-pool hop (which cost hundreds of microseconds per event under load).</summary>
    public static bool WaitToRead<T>(ChannelReader<T> reader)
    {
        var wait = reader.WaitToReadAsync();
        return wait.IsCompletedSuccessfully ? wait.Result : wait.AsTask().GetAwaiter().GetResult();
    }
}
