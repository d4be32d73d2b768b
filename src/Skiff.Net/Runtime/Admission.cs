using Skiff.Core;

namespace Skiff.Net.Runtime;

/// <summary>
/// Decides whether work from outside a node (a client request, a peer message) may enter its event loop's inbox,
/// so that the node's queues stay bounded without the loop ever waiting (why they are bounded here rather than by
/// channel capacities: <see cref="QueueBudget"/>). Requests are refused with a retryable
/// <see cref="ErrorKind.Overloaded"/> that guarantees nothing was proposed; peer messages are dropped and counted
/// (Raft resends what is lost: the leader's next round, the candidate's next election). New writes, and entries from
/// the leader, are also refused while the disk is nearly full (<see cref="DiskSpaceGate"/>).
/// </summary>
internal sealed class Admission
{
    /// <summary>The default number of outside requests and messages waiting for the loop at once.</summary>
    public const int DefaultMaxInboxItems = 10_000;

    /// <summary>The default bytes (commands, entries) of outside work waiting for the loop at once.</summary>
    public const long DefaultMaxInboxBytes = 64L << 20;

    /// <summary>What an item without entries or a command is counted as.</summary>
    private const long SmallItemBytes = 64;

    private readonly QueueBudget _inbox;
    private readonly QueueBudget _writer;
    private readonly QueueBudget _applier;
    private long _droppedPeerMessages;

    /// <summary>Admission against the inbox's budget, refusing new log entries while the writer's or the applier's
    /// backlog is over its budget.</summary>
    public Admission(QueueBudget inbox, QueueBudget writer, QueueBudget applier)
    {
        _inbox = inbox;
        _writer = writer;
        _applier = applier;
    }

    /// <summary>The data directory's free space; null (tests of the queues alone) does not watch it.</summary>
    public DiskSpaceGate? DiskSpace { get; set; }

    /// <summary>Peer messages dropped because the node was over a budget.</summary>
    public long DroppedPeerMessages => Interlocked.Read(ref _droppedPeerMessages);

    /// <summary>Admits a client request of <paramref name="commandBytes"/> (0 for a read or a membership request),
    /// or throws Overloaded; an admitted request is counted until <see cref="Leave"/>.</summary>
    public long Request(long commandBytes)
    {
        if (commandBytes > 0 && (_writer.Full || _applier.Full))
            throw Overloaded(_writer.Full ? $"the log writer is {_writer.Bytes} bytes behind" : $"applying is {_applier.Bytes} bytes behind");
        if (commandBytes > 0 && DiskSpace is { } disk && disk.IsLow(out var free))
            throw new SkiffException(ErrorKind.DiskFull,
                $"disk full: {free} bytes free under the data directory, and this member takes writes only with at least " +
                $"{disk.MinFreeBytes}; refused before proposing, nothing was applied. Free some space: writes resume by themselves",
                null, WriteOutcome.NotApplied);
        var bytes = Math.Max(SmallItemBytes, commandBytes);
        if (!_inbox.TryAdd(bytes)) throw Overloaded($"{_inbox.Items} requests and messages ({_inbox.Bytes} bytes) are waiting for the event loop");
        return bytes;
    }

    /// <summary>Admits a peer message, counted until <see cref="Leave"/>; false (the message is to be dropped) when
    /// over a budget: new entries while the writer or the applier is behind, anything while the inbox is full.</summary>
    public bool PeerMessage(Envelope envelope, out long bytes)
    {
        bytes = SmallItemBytes;
        if (envelope.Message is Message.Append a && !a.Request.Entries.IsEmpty)
        {
            bytes = Math.Max(bytes, QueueBudget.SizeOf(a.Request.Entries));
            if (_writer.Full || _applier.Full || (DiskSpace?.IsLow(out _) ?? false)) return Dropped();
        }
        return _inbox.TryAdd(bytes) || Dropped();
    }

    /// <summary>Counts admitted work out of the inbox (the loop took it).</summary>
    public void Leave(long bytes) => _inbox.Remove(bytes);

    private bool Dropped()
    {
        Interlocked.Increment(ref _droppedPeerMessages);
        return false;
    }

    private static SkiffException Overloaded(string why) =>
        new(ErrorKind.Overloaded, $"refused before proposing, nothing was applied; retry later ({why})", null, WriteOutcome.NotApplied);
}
