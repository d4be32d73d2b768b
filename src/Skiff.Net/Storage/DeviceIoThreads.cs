using System.Collections.Concurrent;

namespace Skiff.Net.Storage;

/// <summary>
/// The threads that carry out the key-value store's disk reads and writes (<see cref="DedicatedIoDevice"/>), so that
/// no FASTER I/O waits for the .NET thread pool.
/// <para>Why: FASTER's own device on Linux completes every read and write on the thread pool. The store's lock is
/// held while FASTER waits for a read from disk (a compaction step, a read of an evicted key) or for page flushes to
/// free memory, and request handlers that read the store block pool threads on that lock. In an application with the
/// pool's default minimum (the processor count) a burst of reads then took every pool thread, the I/O they waited
/// for could not run, and the node stopped answering for seconds: the thread pool only adds a thread or two a
/// second. A library may not raise the application's minimum, so its I/O does not use the pool.</para>
/// <para>Reads and writes have threads of their own, so a read of an evicted key never waits behind a page flush.
/// One set per process: a member is one process, and the disk is the limit, not the threads.</para>
/// </summary>
internal sealed class DeviceIoThreads
{
    /// <summary>The set every store of this process uses.</summary>
    public static readonly DeviceIoThreads Shared = new(readers: 2, writers: 1);

    private readonly BlockingCollection<Action> _reads = new(new ConcurrentQueue<Action>());
    private readonly BlockingCollection<Action> _writes = new(new ConcurrentQueue<Action>());

    private DeviceIoThreads(int readers, int writers)
    {
        for (int i = 0; i < readers; i++) Start(_reads, $"skiff-io-read-{i}");
        for (int i = 0; i < writers; i++) Start(_writes, $"skiff-io-write-{i}");
    }

    private static void Start(BlockingCollection<Action> queue, string name) =>
        new Thread(() =>
        {
            // Each action reports its own failure to FASTER through the device's callback; one that throws anyway
            // must not take the thread (and every later I/O of the process) with it.
            foreach (var work in queue.GetConsumingEnumerable())
                try { work(); }
                catch (Exception) { }
        })
        { IsBackground = true, Name = name }.Start();

    /// <summary>Queues a read.</summary>
    public void Read(Action work) => _reads.Add(work);

    /// <summary>Queues a write.</summary>
    public void Write(Action work) => _writes.Add(work);
}
