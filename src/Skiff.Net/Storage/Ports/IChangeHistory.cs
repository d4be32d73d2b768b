using Skiff.Core;

namespace Skiff.Net.Storage.Ports;

/// <summary>A state machine that keeps a durable history of its recent changes (carried by its snapshots and
/// rebuilt by replaying the log), so watchers can resume from indexes the runtime no longer holds in memory.</summary>
internal interface IChangeHistory
{
    /// <summary>The changes applied at indexes <paramref name="from"/> to <paramref name="to"/> (inclusive) under
    /// <paramref name="prefix"/>, in order; false, with the <paramref name="floor"/> at or below which changes
    /// are no longer kept, if the history does not reach back to <paramref name="from"/>.</summary>
    bool TryReadChanges(long from, long to, string prefix, List<Change> into, out long floor);
}
