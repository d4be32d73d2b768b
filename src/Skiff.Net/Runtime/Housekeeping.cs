using System.Diagnostics;
using Skiff.Net.Storage.Ports;

namespace Skiff.Net.Runtime;

/// <summary>
/// Paces the state machine's compaction (<see cref="IStateMachine.CompactStep"/>) on the applier's thread, so every
/// store operation stays on that one thread: the applier runs short steps back to back while it has nothing else to
/// do, and under load one longer step per <see cref="Interval"/> of applying, so a write waits for at most one step;
/// more often only while the compaction is behind the pace that keeps the store's files bounded.
/// </summary>
/// <param name="sm">The state machine whose compaction this paces.</param>
/// <param name="fatal">Stops the node when a step fails.</param>
/// <param name="askSnapshot">Asks the reducer for a snapshot (<see cref="Skiff.Core.Event.SnapshotWanted"/>), once each time the
/// state machine starts wanting one: its compaction freed data that only a snapshot's checkpoint deletes.</param>
internal sealed class Housekeeping(IStateMachine sm, Action<Exception> fatal, Action askSnapshot)
{
    /// <summary>Under load, how much applying goes between two steps.</summary>
    public static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(10);

    /// <summary>A step taken under load, once per <see cref="Interval"/>: at most a fifth of the applier's time.</summary>
    public static readonly TimeSpan BusyStep = TimeSpan.FromMilliseconds(2);

    /// <summary>A step taken while the applier is idle. Idle steps run back to back, so a short one costs compaction
    /// nothing, while the next write (one client's, say: the applier is idle between its writes) waits at most
    /// this long for it rather than for a busy step. With 2 ms idle steps a compaction pass added up to 2 ms to
    /// every one-client write while it lasted.</summary>
    public static readonly TimeSpan IdleStep = TimeSpan.FromMilliseconds(0.25);

    private long _last = Stopwatch.GetTimestamp();
    private bool _asked;

    /// <summary>Whether the state machine has compaction under way.</summary>
    public bool Pending => sm.CompactionPending;

    /// <summary>After a batch applied: a busy step if compaction is under way and <see cref="Interval"/> has passed
    /// since the last step, or at once if compaction is behind its pace (the writes then wait for it: disk stays
    /// bounded at the cost of throughput); false if it failed (the node stops).</summary>
    public bool StepIfDue() => (Stopwatch.GetElapsedTime(_last) < Interval && !sm.CompactionBehind) || Step(BusyStep);

    /// <summary>An idle step, if compaction is under way; false if it failed (the node stops).</summary>
    public bool Step() => Step(IdleStep);

    private bool Step(TimeSpan budget)
    {
        _last = Stopwatch.GetTimestamp();
        if (!sm.CompactionPending) return true;
        try
        {
            sm.CompactStep(budget);
            var wanted = sm.SnapshotWanted;
            if (wanted && !_asked) askSnapshot();
            _asked = wanted;
            return true;
        }
        catch (Exception ex)
        {
            fatal(ex as SkiffException ?? new SkiffException(ErrorKind.StorageError, "compacting the state machine failed: " + ex.Message, ex));
            return false;
        }
    }
}
