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
    /// peer appends before they reach <see cref="Append"/>, where they would be a fatal write error.</summary>
    int MaxCommandBytes => int.MaxValue;

    /// <summary>Entries [from, to] that are still stored; empty if any of them was compacted away.</summary>
    IReadOnlyList<Entry> Read(long from, long to);

    /// <summary>Discards entries up to and including <paramref name="index"/>, whose term is <paramref name="term"/>.</summary>
    void CompactUntil(long index, long term);

    /// <summary>Replaces the whole log with an empty one that starts after the snapshot point, durably.</summary>
    void Reset(long snapshotIndex, long snapshotTerm);
}
