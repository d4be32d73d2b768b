using Skiff.Core;

namespace Skiff.Net.Storage.Ports;

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
