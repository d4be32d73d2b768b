using System.Diagnostics.Metrics;

namespace Skiff.Diagnostics;

/// <summary>A node's instruments on the <c>Skiff</c> meter, which OpenTelemetry (or dotnet-counters) picks up with
/// <c>AddMeter("Skiff")</c>. These per-node instruments are tagged with the node's id; the runtime adds process-wide
/// ones on the same meter name: <c>skiff.proposals</c>, <c>skiff.commit_latency</c> and <c>skiff.fsync_latency</c>
/// (milliseconds).</summary>
public sealed class SkiffMetrics : IDisposable
{
    /// <summary>The meter's name.</summary>
    public const string MeterName = "Skiff";

    private readonly Meter _meter;
    private readonly Counter<long> _changesApplied;
    private readonly KeyValuePair<string, object?> _nodeTag;

    internal SkiffMetrics(SkiffNode node)
    {
        _meter = new Meter(MeterName);
        _nodeTag = new KeyValuePair<string, object?>("skiff.node", node.Id.ToString());
        var tag = _nodeTag;
        _meter.CreateObservableGauge("skiff.term", () => new Measurement<long>(node.Term, tag), description: "The node's current Raft term.");
        _meter.CreateObservableGauge("skiff.role", () => new Measurement<int>((int)node.ElectionState, tag),
            description: "0 follower, 1 candidate, 2 leader.");
        _meter.CreateObservableGauge("skiff.commit_index", () => new Measurement<long>(node.CommitIndex, tag),
            description: "The highest log index known committed.");
        _meter.CreateObservableGauge("skiff.applied_index", () => new Measurement<long>(node.AppliedIndex, tag),
            description: "The highest log index applied to the store.");
        _meter.CreateObservableCounter("skiff.log_flushes", () => new Measurement<long>(node.Flushes, tag),
            description: "Durable log writes (one fsync each; many entries share one under load).");
        _meter.CreateObservableGauge("skiff.peer_lag",
            () => node.PeerLag().Select(p => new Measurement<long>(p.Value, tag, new KeyValuePair<string, object?>("skiff.peer", p.Key.ToString()))),
            description: "On the leader: entries each follower lags behind the leader's last index.");
        _changesApplied = _meter.CreateCounter<long>("skiff.changes_applied", description: "Key-value changes applied.");
    }

    internal void ChangeApplied() => _changesApplied.Add(1, _nodeTag);

    /// <inheritdoc />
    public void Dispose() => _meter.Dispose();
}
