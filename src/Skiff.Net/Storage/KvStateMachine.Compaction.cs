namespace Skiff.Net.Storage;

// Compaction of the store's hybrid log (KvCompactor), driven by the thread that applies: a part of KvStateMachine
// because its steps run under the state machine's lock, between applies, through the store's one session.
internal partial class KvStateMachine
{
    /// <summary>How many compactions of the store have finished since it was opened.</summary>
    public int Compactions { get { lock (_gate) return _compactor?.Completed ?? 0; } }

    /// <summary>Whether a compaction is under way: the applying thread should call <see cref="CompactStep"/>
    /// between applies, and when it has nothing else to do.</summary>
    public bool CompactionPending { get { lock (_gate) return _compactor?.Pending ?? false; } }

    /// <summary>Runs the compaction under way for a short step (<see cref="KvCompactor.StepBudget"/>); call it from
    /// the thread that applies, between applies.</summary>
    /// <param name="maxRecords">At most this many records in the step (tests make a pass span many steps).</param>
    public void CompactStep(int maxRecords = int.MaxValue)
    {
        lock (_gate)
        {
            if (_disposed || _compactor is null) return;
            try
            {
                _compactor.Step(KvCompactor.StepBudget, maxRecords);
            }
            catch (Exception e) when (e is not SkiffException)
            {
                if (e is IOException or UnauthorizedAccessException) throw StorageIo.Wrap(_dir, e);
                throw new SkiffException(ErrorKind.StorageError, $"compacting the key-value store in {_dir} failed: {e.Message}", e);
            }
        }
    }
}
