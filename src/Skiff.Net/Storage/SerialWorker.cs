using System.Threading.Channels;
using Skiff.Net.Runtime;

namespace Skiff.Net.Storage;

/// <summary>
/// One long-lived background thread that runs work in the order it was given: a store's checkpoints and their
/// clean-up, which block on fsync for hundreds of milliseconds and so cannot go to the thread pool. Starting a new
/// thread for each snapshot instead cost applying up to 12 ms while it waited (measured with
/// <c>Skiff.Bench disk --overwrites 300000 --keys 100</c>: thread creation was most of a snapshot's pause). The thread
/// starts with the worker, when the store opens, so no snapshot waits for its creation (the first snapshot's
/// remaining pause is first-use JIT, see Storage/README.md), and ends once the worker is disposed and what was
/// queued has run.
/// </summary>
internal sealed class SerialWorker : IDisposable
{
    private readonly Channel<Action> _work = Channel.CreateUnbounded<Action>(
        new UnboundedChannelOptions { SingleReader = true, AllowSynchronousContinuations = true });
    private readonly string _name;

    /// <summary>Starts the worker's thread, named <paramref name="name"/>.</summary>
    public SerialWorker(string name)
    {
        _name = name;
        DedicatedThread.Start(name, Loop);
    }

    /// <summary>Queues <paramref name="work"/>; the task completes with its result on the worker's thread
    /// (continuations that ask to run synchronously run there too, as on a thread of their own).</summary>
    public Task<T> Run<T>(Func<T> work)
    {
        var done = new TaskCompletionSource<T>();
        if (!_work.Writer.TryWrite(() =>
            {
                try { done.TrySetResult(work()); }
                catch (Exception e) { done.TrySetException(e); }
            }))
            done.TrySetException(new ObjectDisposedException(_name));
        return done.Task;
    }

    /// <summary>Queues <paramref name="work"/>; see <see cref="Run{T}(Func{T})"/>.</summary>
    public Task Run(Action work) => Run(() =>
    {
        work();
        return true;
    });

    private void Loop()
    {
        var reader = _work.Reader;
        while (DedicatedThread.WaitToRead(reader))
            while (reader.TryRead(out var work)) work();
    }

    /// <summary>Takes no more work; what was queued still runs.</summary>
    public void Dispose() => _work.Writer.TryComplete();
}
