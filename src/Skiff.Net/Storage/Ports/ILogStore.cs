using Skiff.Core;

namespace Skiff.Net.Runtime;

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
    /// appended (FASTER's commit loop) overrides this, so the storage writer can append the next group while the
    /// previous one is being synced; the default flushes synchronously.</summary>
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

/// <summary>The durable hard state (term and vote).</summary>
internal interface IHardStateStore : IDisposable
{
    /// <summary>The stored hard state, or null on a fresh node.</summary>
    HardState? Load();

    /// <summary>Stores the hard state durably before returning.</summary>
    void Save(HardState state);
}

/// <summary>The replicated key-value state machine. Apply and Skip are called from the runtime's applier only;
/// reads may come from any thread.</summary>
internal interface IStateMachine : IDisposable
{
    /// <summary>The index of the last entry applied (or restored from a snapshot).</summary>
    long AppliedIndex { get; }

    /// <summary>Records that an entry that carries no command was applied at <paramref name="index"/>.</summary>
    void Skip(long index, long term);

    /// <summary>Applies a log command at <paramref name="index"/> (through the session layer: a session request is
    /// applied at most once); the change (if any) is reported for watchers.</summary>
    LogResult Apply(long index, long term, LogCommand command, out Change? change);

    /// <summary>The value of a key, or null.</summary>
    byte[]? Get(string key);

    /// <summary>The replicated auth state as of the applied index (a state machine without one: auth never set up).</summary>
    AuthState Auth => Skiff.Core.Auth.empty;

    /// <summary>Up to <paramref name="limit"/> keys that start with <paramref name="prefix"/> and come after
    /// <paramref name="startAfter"/> (null: from the first), in ordinal order: one page, never a whole walk.</summary>
    IReadOnlyList<string> ListKeys(string prefix, string? startAfter, int limit);

    /// <summary>Up to <paramref name="limit"/> distinct directory parts ("a/b" for "a/b/c") of the stored keys after
    /// <paramref name="startAfter"/> (null: from the first), in ordinal order.</summary>
    IReadOnlyList<string> GetPrefixes(string? startAfter, int limit);

    /// <summary>Whether the state machine has housekeeping under way (compaction of its files) that the applying
    /// thread should advance with <see cref="CompactStep"/>.</summary>
    bool CompactionPending => false;

    /// <summary>Advances that housekeeping by a short, bounded step. Called only by the applying thread, between
    /// applies, so a state machine needs no second thread of its own to keep its files small.</summary>
    void CompactStep() { }
}

/// <summary>A state machine that keeps a durable history of its recent changes (carried by its snapshots and
/// rebuilt by replaying the log), so watchers can resume from indexes the runtime no longer holds in memory.</summary>
internal interface IChangeHistory
{
    /// <summary>The changes applied at indexes <paramref name="from"/> to <paramref name="to"/> (inclusive) under
    /// <paramref name="prefix"/>, in order; false, with the <paramref name="floor"/> at or below which changes
    /// are no longer kept, if the history does not reach back to <paramref name="from"/>.</summary>
    bool TryReadChanges(long from, long to, string prefix, List<Change> into, out long floor);
}

/// <summary>A snapshot being received from a leader.</summary>
internal interface IStagedSnapshot : IDisposable
{
    /// <summary>Adds the next bytes.</summary>
    void Write(ReadOnlySpan<byte> chunk);

    /// <summary>All bytes arrived: makes them durable and returns the name the reducer will pass back in
    /// InstallSnapshot.</summary>
    string Finish();
}

/// <summary>Durable snapshots of the state machine, with their metadata (including the configuration).</summary>
internal interface ISnapshotStore : IDisposable
{
    /// <summary>The newest durable snapshot's metadata, or null.</summary>
    SnapshotMeta? Latest { get; }

    /// <summary>Snapshots the state machine at its applied index (called on the applier, between applies),
    /// durably, with <paramref name="configuration"/> as the configuration in force there.</summary>
    SnapshotMeta Take(long term, Configuration configuration);

    /// <summary>Starts a snapshot as <see cref="Take"/> does, without making applying wait for it where the store
    /// can: returns the snapshot if it is already done (the default: <see cref="Take"/>), or null, and then calls
    /// <paramref name="ready"/> (on any thread) once <see cref="Finish"/> can complete it.</summary>
    SnapshotMeta? Begin(long term, Configuration configuration, Action ready) => Take(term, configuration);

    /// <summary>Completes the snapshot <see cref="Begin"/> started (on the applier, between applies): durable on
    /// return.</summary>
    SnapshotMeta Finish() => throw new InvalidOperationException("this store takes snapshots in one step");

    /// <summary>Opens the newest snapshot as one byte stream for sending, or null if there is none.</summary>
    (SnapshotMeta Meta, Stream Data)? OpenLatest();

    /// <summary>Starts receiving a snapshot from a leader.</summary>
    IStagedSnapshot BeginStaging();

    /// <summary>Replaces the state machine with a staged snapshot, durably (the log is reset separately).</summary>
    void Install(string staged, SnapshotMeta meta);
}
