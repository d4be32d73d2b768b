using Skiff.Core;

namespace Skiff.Net.Storage.Ports;

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

    /// <summary>Who opened client session <paramref name="session"/> ("" for nobody in particular), or null if the
    /// session is not known here (yet, or any more).</summary>
    string? SessionOwner(long session) => null;

    /// <summary>Up to <paramref name="limit"/> keys that start with <paramref name="prefix"/> and come after
    /// <paramref name="startAfter"/> (null: from the first), in ordinal order: one page, never a whole walk.</summary>
    IReadOnlyList<string> ListKeys(string prefix, string? startAfter, int limit);

    /// <summary>Up to <paramref name="limit"/> distinct directory parts ("a/b" for "a/b/c") of the stored keys after
    /// <paramref name="startAfter"/> (null: from the first), in ordinal order.</summary>
    IReadOnlyList<string> GetPrefixes(string? startAfter, int limit);

    /// <summary>Whether the state machine has housekeeping under way (compaction of its files) that the applying
    /// thread should advance with <see cref="CompactStep"/>.</summary>
    bool CompactionPending => false;

    /// <summary>Whether that housekeeping has fallen behind the pace that keeps the files bounded: the applying
    /// thread should advance it before applying more.</summary>
    bool CompactionBehind => false;

    /// <summary>Whether a snapshot now would free disk: the housekeeping moved past data that only a snapshot's
    /// checkpoint can delete. The applying thread then asks the reducer for one (<see cref="Event.SnapshotWanted"/>).</summary>
    bool SnapshotWanted => false;

    /// <summary>Advances that housekeeping by a step of about <paramref name="budget"/>. Called only by the applying
    /// thread, between applies, so a state machine needs no second thread of its own to keep its files small; a
    /// write that arrives meanwhile waits for the step.</summary>
    /// <param name="budget">How long the step may run.</param>
    void CompactStep(TimeSpan budget) { }
}
