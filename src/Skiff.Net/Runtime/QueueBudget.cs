using Skiff.Core;

namespace Skiff.Net.Runtime;

/// <summary>
/// What waits in one of a node's internal queues (items, and bytes as the reducer counts entries), against caps.
/// <para>The queues themselves (the loop's inbox, the storage writer's, the applier's, the log loader's) are channels
/// without a capacity, on purpose: the event loop is the only producer of the writer's, the applier's and the
/// loader's queues and the only consumer of the inbox, and those three post their completions to the inbox. A
/// bounded channel that made the loop wait would deadlock it (the loop waiting on the writer, the writer waiting
/// for room in the inbox only the loop empties), and one that dropped silently would lose a completion the reducer
/// waits for. So the queues are bounded where work enters the node instead, with these budgets: a client request
/// over the inbox's budget, or a proposal while the writer or the applier is over its budget, is refused with
/// <see cref="ErrorKind.Overloaded"/> (nothing proposed); a peer message is dropped (Raft resends it); the loop
/// never waits. What the loop then adds to the writer and applier is bounded by what it admitted (and by the
/// reducer's own caps: uncommitted bytes, in-flight appends per follower, one load per follower and one for
/// applying), and ticks are coalesced.</para>
/// </summary>
internal sealed class QueueBudget
{
    private readonly int _maxItems;
    private readonly long _maxBytes;
    private int _items;
    private long _bytes;

    /// <summary>A budget of at most <paramref name="maxItems"/> items and <paramref name="maxBytes"/> bytes.</summary>
    public QueueBudget(int maxItems, long maxBytes)
    {
        _maxItems = Math.Max(1, maxItems);
        _maxBytes = Math.Max(1, maxBytes);
    }

    /// <summary>Items waiting.</summary>
    public int Items => Volatile.Read(ref _items);

    /// <summary>Bytes waiting.</summary>
    public long Bytes => Interlocked.Read(ref _bytes);

    /// <summary>Whether the queue is at or over a cap (new work for it should be refused).</summary>
    public bool Full => Items >= _maxItems || Bytes >= _maxBytes;

    /// <summary>Admits an item of <paramref name="bytes"/> if the queue stays within both caps (an item alone always
    /// fits, so no single item is refused for ever); the caller removes it when it leaves the queue.</summary>
    public bool TryAdd(long bytes)
    {
        var items = Interlocked.Increment(ref _items);
        var total = Interlocked.Add(ref _bytes, bytes);
        if (items == 1 || (items <= _maxItems && total <= _maxBytes)) return true;
        Remove(bytes);
        return false;
    }

    /// <summary>Counts an item that must be queued whatever the caps say (work the loop already admitted).</summary>
    public void Add(long bytes)
    {
        Interlocked.Increment(ref _items);
        Interlocked.Add(ref _bytes, bytes);
    }

    /// <summary>Counts an item out of the queue.</summary>
    public void Remove(long bytes)
    {
        Interlocked.Decrement(ref _items);
        Interlocked.Add(ref _bytes, -bytes);
    }

    /// <summary>The bytes of entries as the reducer counts them (payload and a fixed overhead each).</summary>
    public static long SizeOf(IEnumerable<Entry> entries)
    {
        long bytes = 0;
        foreach (var e in entries) bytes += LogViewModule.entrySize(e);
        return bytes;
    }
}
