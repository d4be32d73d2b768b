using System.Diagnostics;
using Skiff.Net.Storage.Ports;

namespace Skiff.Net.Runtime;

/// <summary>
/// Paces the state machine's compaction (<see cref="IStateMachine.CompactStep"/>) on the applier's thread, so every
/// store operation stays on that one thread: the applier runs steps back to back while it has nothing else to do,
/// and under load one step per <see cref="Interval"/> of applying, so a write waits for at most one short step.
/// </summary>
internal sealed class Housekeeping(IStateMachine sm, Action<Exception> fatal)
{
    /// <summary>Under load, how much applying goes between two steps.</summary>
    public static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(10);

    private long _last = Stopwatch.GetTimestamp();

    /// <summary>Whether the state machine has compaction under way.</summary>
    public bool Pending => sm.CompactionPending;

    /// <summary>After a batch applied: a step if one is under way and <see cref="Interval"/> has passed since the
    /// last; false if it failed (the node stops).</summary>
    public bool StepIfDue() => Stopwatch.GetElapsedTime(_last) < Interval || Step();

    /// <summary>One step, if compaction is under way; false if it failed (the node stops).</summary>
    public bool Step()
    {
        _last = Stopwatch.GetTimestamp();
        if (!sm.CompactionPending) return true;
        try
        {
            sm.CompactStep();
            return true;
        }
        catch (Exception ex)
        {
            fatal(ex as SkiffException ?? new SkiffException(ErrorKind.StorageError, "compacting the state machine failed: " + ex.Message, ex));
            return false;
        }
    }
}
