using Skiff.Core;

namespace Skiff.Net.Runtime;

/// <summary>The durable Raft log as the runtime needs it. Only the runtime's storage writer calls the mutating
/// members, one at a time; reads may come from other threads.</summary>
public interface ILogStore : IDisposable
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

    /// <summary>The term of the entry at <paramref name="index"/> (or of the snapshot point), if stored.</summary>
    long? TermAt(long index);

    /// <summary>Entries [from, to] that are still stored; empty if any of them was compacted away.</summary>
    IReadOnlyList<Entry> Read(long from, long to);

    /// <summary>Discards entries up to and including <paramref name="index"/>, whose term is <paramref name="term"/>.</summary>
    void CompactUntil(long index, long term);

    /// <summary>Replaces the whole log with an empty one that starts after the snapshot point, durably.</summary>
    void Reset(long snapshotIndex, long snapshotTerm);
}

/// <summary>The durable hard state (term and vote).</summary>
public interface IHardStateStore : IDisposable
{
    /// <summary>The stored hard state, or null on a fresh node.</summary>
    HardState? Load();

    /// <summary>Stores the hard state durably before returning.</summary>
    void Save(HardState state);
}

/// <summary>A change applied to the key-value state machine, as watchers see it.</summary>
/// <param name="Index">The log index of the command.</param>
/// <param name="Key">The key changed.</param>
/// <param name="Value">The new value, or null for a deletion.</param>
public readonly record struct KvChange(long Index, string Key, byte[]? Value);

/// <summary>The replicated key-value state machine. Apply, Snapshot and Restore are called from the runtime's
/// applier only; reads may come from any thread.</summary>
public interface IStateMachine : IDisposable
{
    /// <summary>The index of the last entry applied (or restored from a snapshot).</summary>
    long AppliedIndex { get; }

    /// <summary>Records that an entry that carries no command was applied at <paramref name="index"/>.</summary>
    void Skip(long index);

    /// <summary>Applies a command at <paramref name="index"/>; the change (if any) is reported for watchers.</summary>
    CommandResult Apply(long index, Command command, out KvChange? change);

    /// <summary>The value of a key, or null.</summary>
    byte[]? Get(string key);

    /// <summary>Every key that starts with <paramref name="prefix"/>, in order.</summary>
    IReadOnlyList<string> ListKeys(string prefix);

    /// <summary>Every distinct directory part ("a/b" for "a/b/c") of the stored keys.</summary>
    IReadOnlyList<string> GetPrefixes();

    /// <summary>Writes the whole state to a stream.</summary>
    void WriteSnapshot(Stream output);

    /// <summary>Replaces the whole state with a snapshot taken at <paramref name="index"/>.</summary>
    void Restore(Stream input, long index);
}

/// <summary>Durable snapshots of the state machine, with their metadata.</summary>
public interface ISnapshotStore
{
    /// <summary>The newest durable snapshot, or null.</summary>
    (SnapshotMeta Meta, string Path)? Latest { get; }

    /// <summary>Writes a snapshot durably and makes it the latest.</summary>
    void Save(SnapshotMeta meta, Action<Stream> write);

    /// <summary>A fresh path for a snapshot being received from a leader.</summary>
    string NewStagingPath();

    /// <summary>Makes a staged file (fully received, already flushed) the latest snapshot.</summary>
    void Adopt(SnapshotMeta meta, string stagedPath);
}
