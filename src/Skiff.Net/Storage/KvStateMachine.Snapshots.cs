namespace Skiff.Net.Storage;

// Snapshots of the state machine: taking one (a checkpoint made durable), streaming it to a follower, and installing
// one received from the leader. A part of KvStateMachine rather than a collaborator because these are its own public
// members, run under its lock and replace its store wholesale on install; the file work itself is in CheckpointFiles
// and Snapshots.cs.
internal partial class KvStateMachine
{
    /// <summary>Takes a snapshot: a FASTER fold-over checkpoint of everything applied so far, durable on return.
    /// The caller then compacts the log behind <see cref="SnapshotInfo.Index"/>. Call between applies.</summary>
    /// <returns>The snapshot, with its file manifest for streaming.</returns>
    public SnapshotInfo TakeSnapshot()
    {
        lock (_gate)
        {
            ThrowIfDisposed();
            _space.Ensure(force: true);
            try
            {
                _sessions.WriteChanged();
                // A compaction that finished since the previous snapshot moved the begin address: this checkpoint
                // records it, and FASTER then deletes the segments below it. One still under way goes on after.
                var token = _store.TakeCheckpoint();
                var files = CheckpointFiles.Manifest(_dir, token, FirstSegment);
                CheckpointFiles.MakeDurable(_dir, files);
                CheckpointFiles.DeleteOlderIndexCheckpoints(_dir, token);
                LatestSnapshot = new SnapshotInfo(AppliedIndex, AppliedTerm, token, files);
                _compactor!.AfterCheckpoint();
                return LatestSnapshot;
            }
            catch (Exception e) when (e is not SkiffException)
            {
                if (e is IOException or UnauthorizedAccessException) throw StorageIo.Wrap(_dir, e);
                throw new SkiffException(ErrorKind.StorageError, $"checkpoint of {_dir} failed: {e.Message}", e);
            }
        }
    }

    /// <summary>Opens a reader that streams <paramref name="snapshot"/> as one byte stream (header, files,
    /// checksum), to be sent in chunks and fed to <see cref="BeginInstall"/> on another node. All files are opened
    /// now, so a later checkpoint deleting them does not break the stream.</summary>
    /// <param name="snapshot">A snapshot returned by <see cref="TakeSnapshot"/>.</param>
    /// <returns>The reader; dispose it when done.</returns>
    public SnapshotReader OpenSnapshotReader(SnapshotInfo snapshot)
    {
        lock (_gate)
        {
            ThrowIfDisposed();
            return new SnapshotReader(_dir, snapshot);
        }
    }

    /// <summary>Starts installing a snapshot received from the leader: bytes go to a staging directory; on
    /// <see cref="SnapshotInstaller.Complete"/> they are verified, synced and swapped in atomically, and this state
    /// machine reloads from them.</summary>
    /// <returns>The installer.</returns>
    public SnapshotInstaller BeginInstall()
    {
        lock (_gate)
        {
            ThrowIfDisposed();
            return new SnapshotInstaller(this, _dir);
        }
    }

    /// <summary>Called by the installer once the staging directory is complete and durable: closes the store,
    /// swaps the directories, reopens.</summary>
    internal void SwapIn(Action swap)
    {
        lock (_gate)
        {
            ThrowIfDisposed();
            DisposeStore();
            swap();
            AppliedIndex = 0;
            AppliedTerm = 0;
            Load();
        }
    }
}
