namespace Skiff.Net.Storage;

// Snapshots of the state machine: taking one (a checkpoint made durable), streaming it to a follower, and installing
// one received from the leader. A part of KvStateMachine rather than a collaborator because these are its own public
// members, run under its lock and replace its store wholesale on install; the file work itself is in CheckpointFiles
// and Snapshots.cs.
internal partial class KvStateMachine
{
    /// <summary>Takes a snapshot: a FASTER fold-over checkpoint of everything applied so far, durable on return
    /// (<see cref="BeginSnapshot"/> and <see cref="FinishSnapshot"/> in one call, waiting in between). The caller
    /// then compacts the log behind <see cref="SnapshotInfo.Index"/>. Call between applies.</summary>
    /// <returns>The snapshot, with its file manifest for streaming.</returns>
    public SnapshotInfo TakeSnapshot()
    {
        using var ready = new ManualResetEventSlim();
        BeginSnapshot(ready.Set);
        ready.Wait();
        return FinishSnapshot();
    }

    /// <summary>Records written while the last snapshot was taken that are not in the store yet (they go in a few
    /// with each write; reads see them meanwhile). For tests.</summary>
    internal int OverlayDraining { get { lock (_gate) return _store.DrainingCount; } }

    /// <summary>Whether a snapshot begun has not been finished yet.</summary>
    public bool SnapshotInProgress { get { lock (_gate) return _snapshot is not null; } }

    /// <summary>Starts a snapshot of everything applied so far. The checkpoint is taken and made durable on a thread
    /// of its own while applying goes on (writes meanwhile are kept aside, see <see cref="FasterKvStore.BeginCheckpoint{T}"/>);
    /// <paramref name="ready"/> is called, on that thread, once <see cref="FinishSnapshot"/> can complete it.
    /// <paramref name="first"/>, if given, runs on that thread before the checkpoint (a side file the snapshot needs,
    /// made durable there rather than on the applying thread).</summary>
    public void BeginSnapshot(Action ready, Action? first = null)
    {
        lock (_gate)
        {
            ThrowIfDisposed();
            if (_snapshot is not null) throw new InvalidOperationException("a snapshot is already being taken");
            _space.Ensure(force: true);
            Guard(() =>
            {
                _sessions.WriteChanged();
                // The in-memory indexes as the checkpoint will hold the store (writes from now on go to the overlay
                // until it is taken): written beside it on its thread, so opening from it needs no rebuild.
                var keys = _index.Freeze();
                var history = _history.Recorded();
                var sessions = _sessions.Table.Sessions;
                var applied = AppliedIndex;
                // A compaction that finished since the previous snapshot moved the begin address: this checkpoint
                // records it, and FASTER then deletes the segments below it. A pass under way pauses until it is done.
                var firstSegment = FirstSegment;
                var cleanup = _indexCleanup;
                var task = _store.BeginCheckpoint(() =>
                {
                    // The previous snapshot's clean-up must be done before this checkpoint writes its own index.
                    cleanup.Wait();
                    first?.Invoke();
                }, token =>
                {
                    var sorted = keys.Sorted(); // also the key index's next base (FinishSnapshot), so made either way
                    if (_options.KeyIndexFile)
                        KeyIndexFile.Write(_dir, token, new KeyIndexFile.Contents(applied, sorted, history, [.. sessions.Select(s => s.Key)]));
                    var files = CheckpointFiles.Manifest(_dir, token, firstSegment);
                    CheckpointFiles.MakeDurable(_dir, files);
                    return files;
                });
                _snapshot = (AppliedIndex, AppliedTerm, keys, task);
                task.ContinueWith(_ => ready(), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            });
        }
    }

    /// <summary>Completes the snapshot begun once its checkpoint is durable (waiting for it if need be): the
    /// writes kept aside meanwhile go into the store, and the snapshot becomes <see cref="LatestSnapshot"/>.</summary>
    /// <param name="cleanup">What else only older snapshots needed (a caller's side files), removed with their
    /// files on the store's background thread rather than while applying waits.</param>
    /// <returns>The snapshot, with its file manifest for streaming.</returns>
    public SnapshotInfo FinishSnapshot(Action<SnapshotInfo>? cleanup = null)
    {
        Task checkpoint;
        lock (_gate)
        {
            ThrowIfDisposed();
            checkpoint = (_snapshot ?? throw new InvalidOperationException("no snapshot is being taken")).Checkpoint;
        }
        // A checkpoint not yet done (a snapshot install overtaking it) is waited for outside the lock, so reads go on
        // meanwhile (see WaitWhileOverlayFull); its failure is reported below. Only the applying thread begins and
        // finishes snapshots, so the one found is still the one being taken.
        try { checkpoint.Wait(); }
        catch (AggregateException) { }
        lock (_gate)
        {
            ThrowIfDisposed();
            var (index, term, keys, task) = _snapshot ?? throw new InvalidOperationException("no snapshot is being taken");
            return Guard(() =>
            {
                try
                {
                    task.Wait();
                }
                finally
                {
                    _snapshot = null;
                    _store.EndCheckpoint();
                    if (task.IsCompletedSuccessfully) _index.Adopt(keys);
                    else _index.Thaw();
                }
                var (token, files) = task.Result;
                LatestSnapshot = new SnapshotInfo(index, term, token, files);
                // Now that this checkpoint is durable, what only older ones needed goes, on the store's background
                // thread after it, not while applying waits (the next checkpoint waits for it, BeginSnapshot): their checkpoints (an index
                // checkpoint is 4 MiB by default) and index files, and the hybrid log segments below this one's
                // begin address, whose deletion FASTER asked for before the checkpoint was durable.
                var store = _store;
                var latest = LatestSnapshot;
                _indexCleanup = store.RunInBackground(() =>
                    {
                        CheckpointFiles.DeleteOlderCheckpoints(_dir, token);
                        KeyIndexFile.DeleteOthers(_dir, token);
                        store.ReleaseTruncation();
                        cleanup?.Invoke(latest);
                    });
                _compactor!.AfterCheckpoint();
                return LatestSnapshot;
            });
        }
    }

    /// <summary>Writes kept aside while a checkpoint is taken are on the heap, outside the memory budget: once they
    /// exceed the budget, applying waits for the checkpoint (its files made durable) rather than keep more. Its
    /// failure is <see cref="FinishSnapshot"/>'s to report. Called under the lock, before anything is applied; the
    /// lock is let go while waiting, so reads go on meanwhile (they see the store and the overlay, a state this
    /// thread has finished with) rather than hold thread-pool threads that the checkpoint's own progress may need
    /// (FASTER's checkpoint is asynchronous code: its continuations run on the pool).</summary>
    private void WaitWhileOverlayFull()
    {
        if (_snapshot is not { } taking || _store.OverlayBytes <= _store.MemoryBytes) return;
        Monitor.Exit(_gate);
        try { taking.Checkpoint.Wait(); }
        catch (AggregateException) { }
        finally { Monitor.Enter(_gate); }
        ThrowIfDisposed();
    }

    private void Guard(Action action, string failing = "checkpoint of") => Guard(() =>
    {
        action();
        return 0;
    }, failing);

    /// <summary>Runs store work, mapping a failure (also one from the checkpoint's own thread) to
    /// <see cref="ErrorKind.StorageError"/>: "<paramref name="failing"/> {dir} failed".</summary>
    private T Guard<T>(Func<T> action, string failing = "checkpoint of")
    {
        try
        {
            return action();
        }
        catch (Exception e) when (e is not SkiffException)
        {
            if (e is AggregateException { InnerException: SkiffException inner }) throw inner;
            var cause = e is AggregateException { InnerException: { } first } ? first : e;
            if (cause is IOException or UnauthorizedAccessException) throw StorageIo.Wrap(_dir, cause);
            throw new SkiffException(ErrorKind.StorageError, $"{failing} {_dir} failed: {cause.Message}", cause);
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
