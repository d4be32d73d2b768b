using Skiff.Core;
using Skiff.Net.Storage.Ports;

namespace Skiff.Net.Runtime;

// Snapshots on the applier's thread: starting one (its checkpoint is then taken beside applying where the store can,
// see ISnapshotStore.Begin), finishing it once durable and telling the reducer, and installing a leader's snapshot.
internal sealed partial class Applier
{
    // Set while a snapshot begun has not been finished (SnapshotReadyOp says it can be).
    private bool _snapshotting;

    private void DoSnapshot(SnapshotMeta asked)
    {
        if (_sm.AppliedIndex == 0 || _snapshotting) return;
        var meta = _snapshots.Begin(asked.Term, asked.Configuration, () => _queue.Writer.TryWrite(new SnapshotReadyOp()));
        if (meta is not null) _post(Event.NewSnapshotTaken(meta));
        else _snapshotting = true;
    }

    private void FinishSnapshot()
    {
        if (!_snapshotting) return;
        _snapshotting = false;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var meta = _snapshots.Finish();
        if (sw.ElapsedMilliseconds > 100) Microsoft.Extensions.Logging.LoggerExtensions.LogWarning(Logger, "Skiff: finishing the snapshot at {Index} took {Milliseconds} ms (applying waited)", meta.Index, sw.ElapsedMilliseconds);
        _post(Event.NewSnapshotTaken(meta)); // even when an install overtook it: the reducer ignores an older one
    }

    private void DoInstall(InstallOp op)
    {
        try
        {
            FinishSnapshot(); // the install replaces the store a snapshot may still be taken of
            var before = _sm.AppliedIndex;
            _snapshots.Install(op.Staged, op.Meta);
            lock (_writesGate)
            {
                _appliedMark = _sm.AppliedIndex;
                while (_writes.TryPeek(out var w, out var index) && index <= op.Meta.Index)
                {
                    _writes.Dequeue();
                    _due.Add((w, index));
                }
            }
            foreach (var (w, index) in _due) w.Pending.Fail(Overwritten(index));
            _due.Clear();
            ServeReads();
            CatchUpWatchers(before, op.Meta.Index);
            op.Done.TrySetResult();
        }
        catch (Exception ex)
        {
            op.Done.TrySetException(ex);
            _fatal(new SkiffException(ErrorKind.StorageError, "installing a snapshot failed: " + ex.Message, ex));
        }
    }
}
