namespace Skiff.Net.Runtime;

/// <summary>
/// When the event loop hands the node's commit index to the log to record (the write-ahead log's commit marks), so
/// a restarted member applies what it knew committed without waiting for a leader. With every append the commit
/// index after the step that asked for it goes along (same group, same sync); a commit index learned without an
/// append (a heartbeat, the leader's commit notice) is queued on its own at a tick, at most every
/// <see cref="Interval"/>, and the log writes it without a sync of its own. Loop thread only, except
/// <see cref="Marked"/>.
/// </summary>
internal sealed class CommitMarks
{
    /// <summary>How often, at most, a commit index is recorded on its own.</summary>
    public static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(100);

    private long _marked;
    private long _markedAt;

    /// <summary>The commit index last handed to the writer (read from any thread, for tests).</summary>
    public long Marked => Volatile.Read(ref _marked);

    /// <summary>Notes that <paramref name="commit"/> goes with an append; returns it.</summary>
    public long WithAppend(long commit)
    {
        Volatile.Write(ref _marked, commit);
        return commit;
    }

    /// <summary>When the node stops (its loop ended): queues <paramref name="commit"/> alone if it moved since it was
    /// last handed over, however recently that was.</summary>
    public void OnStop(long commit, StorageWriter writer)
    {
        if (commit <= _marked) return;
        Volatile.Write(ref _marked, commit);
        writer.NoteCommit(commit);
    }

    /// <summary>On a tick: queues <paramref name="commit"/> alone if it moved since it was last handed over and
    /// nothing was queued on its own within <see cref="Interval"/>.</summary>
    public void OnTick(long commit, StorageWriter writer)
    {
        if (commit <= _marked) return;
        var now = System.Diagnostics.Stopwatch.GetTimestamp();
        if (System.Diagnostics.Stopwatch.GetElapsedTime(_markedAt, now) < Interval) return;
        Volatile.Write(ref _marked, commit);
        _markedAt = now;
        writer.NoteCommit(commit);
    }
}
