using System.Diagnostics.Metrics;

namespace Skiff.Net.Runtime;

/// <summary>The runtime's instruments on the <c>Skiff</c> meter (the facade adds per-node gauges to the same meter
/// name). These are process-wide: with several nodes in one process they add up.</summary>
internal static class RuntimeMetrics
{
    private static readonly Meter Meter = new("Skiff");

    /// <summary>Writes the leader appended to its log (counted when the reducer accepts them).</summary>
    public static readonly Counter<long> Proposals =
        Meter.CreateCounter<long>("skiff.proposals", description: "Writes appended to a leader's log.");

    /// <summary>From a write's submission to its answer, for writes that succeeded.</summary>
    public static readonly Histogram<double> CommitLatency =
        Meter.CreateHistogram<double>("skiff.commit_latency", unit: "ms", description: "Write latency, submission to answer.");

    /// <summary>One durable log write (a group commit: one fsync for many entries).</summary>
    public static readonly Histogram<double> FsyncLatency =
        Meter.CreateHistogram<double>("skiff.fsync_latency", unit: "ms", description: "Duration of one durable log write.");

    /// <summary>How long taking one snapshot kept the applier from applying.</summary>
    public static readonly Histogram<double> SnapshotPause =
        Meter.CreateHistogram<double>("skiff.snapshot_pause", unit: "ms", description: "Time applying waited for one snapshot.");

    /// <summary>Of one snapshot's pause, the garbage collector's pauses inside it (they stop every thread, snapshot or
    /// not). Recorded just before <see cref="SnapshotPause"/>, on the same thread, so a listener can pair them. A
    /// histogram of its own rather than a tag: a tag's every distinct value is a time series to an exporter.</summary>
    public static readonly Histogram<double> SnapshotPauseGc =
        Meter.CreateHistogram<double>("skiff.snapshot_pause_gc", unit: "ms", description: "Of one snapshot's pause, the garbage collector's pauses inside it.");

    /// <summary>Of one snapshot's pause, the snapshot's own work: the pause less the garbage collector's pauses inside it
    /// (<see cref="SnapshotPauseGc"/>) and less the time the applying thread was runnable but waiting for a core
    /// (<see cref="RunQueueWait"/>; Linux only, elsewhere nothing is taken out for it). Both shares are what any
    /// stretch of that thread's work sees, snapshot or not, the second on a machine with more runnable threads than
    /// cores. Recorded before <see cref="SnapshotPauseGc"/>, on the same thread.</summary>
    public static readonly Histogram<double> SnapshotPauseWork =
        Meter.CreateHistogram<double>("skiff.snapshot_pause_work", unit: "ms", description: "Of one snapshot's pause, its own work: less GC pauses and waits for a core.");

    /// <summary>Nodes that stopped themselves after a fatal error (a durable write, an apply, a log read or a
    /// snapshot install failed).</summary>
    public static readonly Counter<long> FailStops =
        Meter.CreateCounter<long>("skiff.fail_stops", description: "Nodes that stopped themselves after a fatal storage error.");

    /// <summary>Peer messages refused because they came from a member of another cluster.</summary>
    public static readonly Counter<long> ForeignPeerMessages =
        Meter.CreateCounter<long>("skiff.foreign_peer_messages", description: "Peer messages refused as coming from another cluster.");

    /// <summary>A durable write slower than this is reported as slow (and logged by the facade).</summary>
    public static readonly TimeSpan SlowFlush = TimeSpan.FromMilliseconds(100);
}
