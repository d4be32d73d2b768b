using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using Skiff.Core;
using Skiff.Net.Storage;
using Skiff.Net.Storage.Ports;

namespace Skiff.Net.Runtime;

/// <summary>
/// A node's data directory bound to the runtime's storage ports: opens and locks it (loading or creating the node's
/// id), checks that the log can hold the largest command the node's limits allow, reads what the reducer starts
/// from, and releases everything on dispose.
/// </summary>
internal sealed class NodeStorageBinding : IDisposable
{
    private NodeStorage? _storage; // holds the data directory lock

    /// <summary>The node's id, kept in the data directory.</summary>
    public Guid NodeId { get; }

    /// <summary>The Raft log.</summary>
    public ILogStore Log { get; }

    /// <summary>Term and vote.</summary>
    public IHardStateStore HardState { get; }

    /// <summary>The key-value state machine.</summary>
    public IStateMachine StateMachine { get; }

    /// <summary>The snapshots (the state machine's checkpoints) and the staging of received ones.</summary>
    public ISnapshotStore Snapshots { get; }

    /// <summary>The cluster this directory belongs to (kept in its <c>cluster-id</c> file).</summary>
    public ClusterIdentity Cluster { get; }

    /// <summary>Whether the directory is still open (not yet disposed).</summary>
    public bool IsOpen => _storage is not null;

    /// <summary>The free space of the disk under the data directory, for admission of new writes.</summary>
    public DiskSpaceGate DiskSpace { get; }

    /// <summary>Opens the data directory named in <paramref name="options"/>.</summary>
    /// <exception cref="SkiffException">DataDirectoryCreateFailed, DataDirectoryLocked, StorageError, StorageCorrupted,
    /// or InvalidArgument when <see cref="SkiffServerOptions.MaxValueBytes"/> allows commands the log cannot hold or
    /// values the state machine's pages cannot.</exception>
    public NodeStorageBinding(SkiffServerOptions options)
    {
        var dataDir = Path.GetFullPath(options.DataDirectory);
        var storageOptions = new NodeStorageOptions
        {
            Kv = new KvOptions
            {
                WatchHistory = Math.Max(0, options.WatchHistory),
                // A record never crosses a page: a new store's pages hold the largest value allowed.
                PageSizeBits = Math.Max(new KvOptions().PageSizeBits, KvOptions.PageSizeBitsFor(options.MaxValueBytes)),
                MemorySizeBits = 63 - (int)long.LeadingZeroCount(Math.Max(1, options.StateMachineMemoryBytes)),
                UnsafeNoSessionDedup = options.UnsafeNoSessionDedup,
            },
        };
        var storage = NodeStorage.Open(dataDir, storageOptions);
        DiskSpace = new DiskSpaceGate(dataDir,
            Math.Max(storageOptions.Kv.EffectiveMinFreeDiskBytes, storageOptions.Log.EffectiveMinFreeDiskBytes));
        _storage = storage;
        NodeId = storage.HardState.NodeId;
        try { Cluster = new ClusterIdentity(dataDir); }
        catch
        {
            storage.Dispose();
            _storage = null;
            throw;
        }
        Log = new WalLogStore(storage.Log);
        HardState = new HardStateFileStore(storage.HardState);
        StateMachine = new KvStateMachineAdapter(storage.Kv);
        Snapshots = new CheckpointSnapshotStore(storage.Kv, Path.Combine(dataDir, "snapmeta"));
        var storeMaxValue = KvOptions.MaxValueBytesFor(storage.Kv.PageSizeBits);
        if (storeMaxValue < options.MaxValueBytes)
        {
            storage.Dispose();
            _storage = null;
            throw new SkiffException(ErrorKind.InvalidArgument,
                $"MaxValueBytes {options.MaxValueBytes} is too large for the state machine in {dataDir}: it was made for values up to " +
                $"{storeMaxValue} bytes (a record never crosses one of its pages)");
        }
        if (RequestLimits.LargestCommandBytes(options.MaxValueBytes) > Log.MaxCommandBytes)
        {
            storage.Dispose();
            _storage = null;
            throw new SkiffException(ErrorKind.InvalidArgument,
                $"MaxValueBytes {options.MaxValueBytes} is too large: a compare-and-swap of two such values must fit one log entry " +
                $"({Log.MaxCommandBytes} bytes)");
        }
        if (options.WarmUpSnapshots) SnapshotWarmUp.StartOnce();
    }

    /// <summary>What the reducer starts from: the hard state, the latest snapshot, the log after it, and (for a node
    /// that founds a cluster) the one-member configuration it founds. <paramref name="needsToJoin"/> tells
    /// whether a node started with peers to join must still ask them: it is new, or not yet in its configuration.
    /// A node with peers never founds; one without founds only when its directory holds no cluster and
    /// <paramref name="newCluster"/> allows it (see <see cref="SkiffServerOptions.NewCluster"/>).</summary>
    /// <exception cref="SkiffException">ClusterInitFailed when the node would have to found a cluster and may not.</exception>
    public Stored ReadStart(Guid id, string address, bool joining, bool? newCluster, out bool needsToJoin)
    {
        var snapshot = Snapshots.Latest;
        var from = Math.Max(Log.SnapshotIndex, snapshot?.Index ?? 0) + 1;
        var entries = Log.LastIndex >= from ? Log.Read(from, Log.LastIndex) : Array.Empty<Entry>();
        var fresh = Log.LastIndex == 0 && snapshot is null;
        if (fresh && !joining) Found(newCluster);
        var bootstrap = joining
            ? Configuration.Empty
            : new Configuration(MapModule.OfSeq(new[] { Tuple.Create(id, new Member(id, address, true)) }));
        needsToJoin = joining && (fresh || !KnownConfiguration(snapshot, entries).Members.ContainsKey(id));
        // The log is read from just after the snapshot (a tail kept behind it is not used), so the entry before the
        // first one read is the snapshot's.
        return new Stored(HardState.Load() ?? new Skiff.Core.HardState(0, FSharpOption<Guid>.None),
            snapshot is null ? FSharpOption<SnapshotMeta>.None : FSharpOption<SnapshotMeta>.Some(snapshot),
            ListModule.OfSeq(entries), snapshot?.Index ?? 0, snapshot?.Term ?? 0, StateMachine.AppliedIndex, Log.RecoveredCommitHint, bootstrap);
    }

    /// <summary>Founds a cluster in this empty directory, if allowed: never when told not to (a service manager's
    /// command line must not found a second cluster after a member lost its directory), nor, unless told to, when
    /// the directory already names a cluster (a joiner that learned its cluster and stopped before receiving any
    /// of its log: it must join again, not found a cluster under that id). An explicit founder restarting before
    /// its founding configuration reached the disk founds again under the id it made.</summary>
    private void Found(bool? newCluster)
    {
        if (newCluster == false)
            throw new SkiffException(ErrorKind.ClusterInitFailed,
                "the data directory holds no cluster and no member to join was given: join a cluster (skiff serve --join, " +
                "Builder.JoinCluster) or found a new one explicitly (skiff serve --new-cluster, Builder.NewCluster), once");
        if (newCluster is null && Cluster.Id is { } known)
            throw new SkiffException(ErrorKind.ClusterInitFailed,
                $"the data directory belongs to cluster {known} but holds none of its log: start it with members to join");
        Cluster.Found();
    }

    /// <summary>The latest configuration the node's storage holds: the last one in the log, else the snapshot's.</summary>
    private static Configuration KnownConfiguration(SnapshotMeta? snapshot, IReadOnlyList<Entry> entries)
    {
        for (var i = entries.Count - 1; i >= 0; i--)
            if (entries[i].Payload is Payload.Config c) return c.Configuration;
        return snapshot?.Configuration ?? Configuration.Empty;
    }

    /// <summary>Flushes and closes the stores and releases the data directory.</summary>
    public void Dispose()
    {
        if (_storage is null) return;
        Snapshots.Dispose();
        Log.Dispose();
        HardState.Dispose();
        StateMachine.Dispose();
        _storage.Dispose();
        _storage = null;
    }
}
