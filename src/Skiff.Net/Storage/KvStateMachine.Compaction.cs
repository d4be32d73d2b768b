namespace Skiff.Net.Storage;

// Compaction of the store's hybrid log (KvCompactor), driven by the thread that applies: a part of KvStateMachine
// because its steps run under the state machine's lock, between applies, through the store's one session.
internal partial class KvStateMachine
{
    /// <summary>How many compactions of the store have finished since it was opened.</summary>
    public int Compactions { get { lock (_gate) return _compactor?.Completed ?? 0; } }

    /// <summary>Whether a compaction is under way and may go on: the applying thread should call
    /// <see cref="CompactStep(TimeSpan, int)"/> between applies, and when it has nothing else to do. It pauses while a snapshot is
    /// being taken (writes then go to an overlay that its liveness lookups would not see).</summary>
    public bool CompactionPending { get { lock (_gate) return _snapshot is null && (_compactor?.Pending ?? false); } }

    /// <summary>Whether the compaction under way has fallen behind the pace that keeps the store's files bounded: the
    /// applying thread should run a step before it applies more.</summary>
    public bool CompactionBehind { get { lock (_gate) return _snapshot is null && (_compactor?.Behind ?? false); } }

    /// <summary>Whether a snapshot now would free disk: the compaction moved the store's begin address past whole
    /// segments that the last checkpoint still holds (they are deleted once a newer checkpoint is durable).</summary>
    public bool SnapshotWanted { get { lock (_gate) return _snapshot is null && (_compactor?.WantsCheckpoint ?? false); } }

    /// <summary>How many times the store's lookups have waited for the disk (one wait may complete many reads): for
    /// tests.</summary>
    internal long DiskWaits { get { lock (_gate) return _store.DiskWaits; } }

    // The store's live records, for compaction's estimate of their size: keys, kept changes, client sessions, and
    // the applied-index record.
    private long LiveRecords() => _index.Count + _history.Count + _sessions.Table.Sessions.Count + 1L;

    /// <summary>Runs the compaction under way for a short step (<see cref="KvCompactor.StepBudget"/>); call it from
    /// the thread that applies, between applies.</summary>
    /// <param name="maxRecords">At most this many records in the step (tests make a pass span many steps).</param>
    public void CompactStep(int maxRecords = int.MaxValue) => CompactStep(KvCompactor.StepBudget, maxRecords);

    /// <summary>Runs the compaction under way for about <paramref name="budget"/>; call it from the thread that
    /// applies, between applies.</summary>
    /// <param name="budget">How long the step may run.</param>
    /// <param name="maxRecords">At most this many records in the step.</param>
    public void CompactStep(TimeSpan budget, int maxRecords = int.MaxValue)
    {
        lock (_gate)
        {
            if (_disposed || _compactor is null || _snapshot is not null) return;
            var compactor = _compactor;
            Guard(() => compactor.Step(budget, maxRecords), "compacting the key-value store in");
        }
    }
}
