using Skiff.Core;

namespace Skiff.Net.Storage.Ports;

/// <summary>The durable Raft log as the runtime needs it. Only the runtime's storage writer calls the mutating
/// members, one at a time; reads may come from other threads.</summary>
internal interface ILogStore : IDisposable
{
    /// <summary>The index of the last entry in the snapshot the log starts after (0 if none).</summary>
    long SnapshotIndex { get; }

    /// <summary>The term of the entry at <see cref="SnapshotIndex"/>.</summary>
    long SnapshotTerm { get; }

    /// <summary>The index of the last stored entry (or <see cref="SnapshotIndex"/> when the log is empty).</summary>
    long LastIndex { get; }

    /// <summary>Appends entries, first discarding stored entries at or after the first one's index. Not durable
    /// until <see cref="Flush"/> returns.</summary>
    void Append(IReadOnlyList<Entry> entries);

    /// <summary>Appends entries as <see cref="Append(IReadOnlyList{Entry})"/> and, with them, records
    /// <paramref name="commitHint"/>: the node's commit index when it asked for this write, so every entry up to it
    /// (in the log as it stands after these entries) is committed. A store that keeps it reports it at the next
    /// open as <see cref="RecoveredCommitHint"/>; one that does not may ignore it (the default).</summary>
    void Append(IReadOnlyList<Entry> entries, long commitHint) => Append(entries);

    /// <summary>Records <paramref name="commitHint"/>, the node's commit index learned without an append (a
    /// heartbeat), after everything appended so far, best effort: no sync of its own. Ignored by default.</summary>
    void NoteCommit(long commitHint) { }

    /// <summary>The commit index recorded with the entries when the store was opened (0 if none): the node applies
    /// the stored entries up to it at once, instead of waiting for a leader to say they are committed.</summary>
    long RecoveredCommitHint => 0;

    /// <summary>Makes every appended entry durable (one fsync for everything appended since the last flush).</summary>
    void Flush();

    /// <summary>Starts making every appended entry durable and returns at once; the task completes when they are.
    /// Tasks of successive calls complete in call order. A store whose appends can be made durable while more are
    /// appended (the write-ahead log's group commit) overrides this, so the storage writer can append the next group
    /// while the previous one is being synced; the default flushes synchronously.</summary>
    Task FlushAsync()
    {
        Flush();
        return Task.CompletedTask;
    }

    /// <summary>The term of the entry at <paramref name="index"/> (or of the snapshot point), if stored.</summary>
    long? TermAt(long index);

    /// <summary>The largest command (encoded bytes) one entry can hold; the runtime refuses larger proposals and
    /// peer appends before they reach <see cref="Append(IReadOnlyList{Entry})"/>, where they would be a fatal write error.</summary>
    int MaxCommandBytes => int.MaxValue;

    /// <summary>Entries [from, to] that are still stored; empty if any of them was compacted away.</summary>
    IReadOnlyList<Entry> Read(long from, long to);

    /// <summary>Discards entries up to and including <paramref name="index"/>, whose term is <paramref name="term"/>.</summary>
    void CompactUntil(long index, long term);

    /// <summary>Starts <see cref="CompactUntil"/> and returns at once; the task completes when the discard is durable.
    /// The storage writer calls this, not <see cref="CompactUntil"/>, right after the appends queued before it, some
    /// of which may still be in flight (<see cref="FlushAsync"/>): the store must keep any entry not yet durable (it
    /// may discard less than asked). The default runs <see cref="CompactUntil"/> synchronously, which is right for a
    /// store whose flushes are synchronous; a store with asynchronous flushes overrides it, so that a compaction
    /// neither waits for the flushes in flight nor holds up the appends after it.</summary>
    Task CompactUntilAsync(long index, long term)
    {
        CompactUntil(index, term);
        return Task.CompletedTask;
    }

    /// <summary>Replaces the whole log with an empty one that starts after the snapshot point, durably.</summary>
    void Reset(long snapshotIndex, long snapshotTerm);
}
