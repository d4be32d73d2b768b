namespace Skiff.Net.Storage;

/// <summary>A group of records written together by one call (entries, a base or a reset), completed once
/// durable.</summary>
internal sealed class LogBatch
{
    public required LogRecordType Kind;
    public required long First;      // first index (entries) or the base index
    public required long BaseTerm;
    public required long[] Terms;
    public required long[] Addresses; // filled by the writer thread as it places the records
    public required byte[] Data;      // the records, back to back
    public required int[] Lengths;    // each record's length in Data
    public readonly TaskCompletionSource Done = new(TaskCreationOptions.RunContinuationsAsynchronously);
}

/// <summary>
/// The write-ahead log's write side and its group commit. Callers encode a whole batch of records and enqueue it
/// under one lock (so a commit never splits a batch); one dedicated thread takes everything enqueued, writes it to
/// the last segment with one positional write and makes it durable with one <c>fdatasync</c>, synchronously, then
/// hands the batches to the log's durable index and completes every caller it covered. Whatever is enqueued while
/// a sync runs goes into the next one: no timer, no waiting for company. It keeps the pending view appends are
/// validated against (base and last index including what is not yet durable), and after a failed write or sync
/// refuses every later one (the page cache may have dropped the data that failed to reach the disk).
/// </summary>
internal sealed class WalWriter
{
    private readonly WalSegments _segments;
    private readonly FreeSpaceCheck? _space;
    private readonly Action<List<LogBatch>> _madeDurable;

    private readonly object _gate = new();
    private long _pendingBase;
    private long _pendingLast;
    private long _pendingCommit;
    private List<LogBatch> _queue = new();
    private Exception? _failed;
    private bool _stopped;
    private readonly Task _thread;

    /// <summary>Number of syncs the writer thread made; for the benchmark.</summary>
    public long Commits { get; private set; }

    /// <param name="segments">The open segments (recovered); the writer appends to the last.</param>
    /// <param name="space">The free-space guard appends go through, if any.</param>
    /// <param name="durableBase">The recovered log's base index.</param>
    /// <param name="durableLast">The recovered log's last index.</param>
    /// <param name="madeDurable">Applies batches to the durable view, on the writer thread, before their callers
    /// are completed.</param>
    public WalWriter(WalSegments segments, FreeSpaceCheck? space, long durableBase, long durableLast, Action<List<LogBatch>> madeDurable)
    {
        _segments = segments;
        _space = space;
        _madeDurable = madeDurable;
        _pendingBase = durableBase;
        _pendingLast = durableLast;
        _thread = Runtime.DedicatedThread.Start("skiff-wal", Run);
    }

    /// <summary>Enqueues contiguous entries (the caller checked contiguity and sizes), followed by a
    /// <see cref="LogRecordType.Commit"/> record when <paramref name="commitHint"/> (clamped to the last entry)
    /// moved; the task completes when they are durable.</summary>
    /// <exception cref="ArgumentException">The first index is compacted or past last + 1.</exception>
    public Task Append(IReadOnlyList<LogEntry> entries, long commitHint = 0)
    {
        int total = 0;
        foreach (var e in entries) total += LogRecord.Overhead + e.Payload.Length;
        var batch = new LogBatch
        {
            Kind = LogRecordType.Entry,
            First = entries[0].Index,
            BaseTerm = 0,
            Terms = new long[entries.Count],
            Addresses = new long[entries.Count],
            Data = new byte[total],
            Lengths = new int[entries.Count],
        };
        int at = 0;
        for (int i = 0; i < entries.Count; i++)
        {
            var e = entries[i];
            batch.Terms[i] = e.Term;
            batch.Lengths[i] = LogRecord.EncodeTo(batch.Data.AsSpan(at), LogRecordType.Entry, e.Index, e.Term, e.Payload);
            at += batch.Lengths[i];
        }
        lock (_gate)
        {
            ThrowIfFailed();
            _space?.Ensure();
            long first = entries[0].Index;
            if (first <= _pendingBase || first > _pendingLast + 1)
                throw new ArgumentException($"append at index {first} outside ({_pendingBase}, {_pendingLast + 1}]", nameof(entries));
            _pendingLast = entries[^1].Index;
            Enqueue(batch);
            // After the entries, in the same group: recovery sees the mark only if every record before it survived.
            var commit = Math.Min(commitHint, _pendingLast);
            if (commit > _pendingCommit)
            {
                _pendingCommit = commit;
                Enqueue(Single(LogRecordType.Commit, commit, 0));
            }
        }
        return batch.Done.Task;
    }

    /// <summary>Enqueues a <see cref="LogRecordType.Commit"/> record alone (commit learned without an append),
    /// clamped to the last entry enqueued; it is written without a sync of its own (the next sync covers it, and a
    /// torn one is cut at recovery like any torn tail). Nothing to wait for; ignored once the log has failed.</summary>
    public void NoteCommit(long commitHint)
    {
        lock (_gate)
        {
            if (_failed is not null || _stopped) return;
            var commit = Math.Min(commitHint, _pendingLast);
            if (commit <= _pendingCommit) return;
            _pendingCommit = commit;
            Enqueue(Single(LogRecordType.Commit, commit, 0));
        }
    }

    private static LogBatch Single(LogRecordType type, long index, long term)
    {
        var data = new byte[LogRecord.Overhead];
        LogRecord.EncodeTo(data, type, index, term, ReadOnlySpan<byte>.Empty);
        return new LogBatch
        {
            Kind = type,
            First = index,
            BaseTerm = term,
            Terms = Array.Empty<long>(),
            Addresses = new long[1],
            Data = data,
            Lengths = new[] { data.Length },
        };
    }

    /// <summary>Enqueues a Base or Reset record; the task completes when it is durable (and the segments it made
    /// unnecessary are deleted).</summary>
    public Task WriteBase(LogRecordType type, long index, long term)
    {
        var batch = Single(type, index, term);
        lock (_gate)
        {
            ThrowIfFailed();
            if (index < _pendingBase)
                throw new ArgumentException($"base {index} is behind the current base {_pendingBase}");
            _pendingBase = index;
            if (type == LogRecordType.Reset || index > _pendingLast) _pendingLast = index;
            // Recovery ignores commit marks before a reset; the next append writes a new one.
            if (type == LogRecordType.Reset) _pendingCommit = 0;
            Enqueue(batch);
        }
        return batch.Done.Task;
    }

    private void Enqueue(LogBatch batch)
    {
        _queue.Add(batch);
        if (_queue.Count == 1) Monitor.Pulse(_gate);
    }

    private void ThrowIfFailed()
    {
        ObjectDisposedException.ThrowIf(_stopped, typeof(RaftLog));
        if (_failed is { } f) throw new SkiffException(ErrorKind.StorageError, $"the log in {_segments.Dir} failed earlier: {f.Message}", f);
    }

    private void Run()
    {
        var taken = new List<LogBatch>();
        var writes = new List<ReadOnlyMemory<byte>>();
        while (true)
        {
            lock (_gate)
            {
                while (_queue.Count == 0 && !_stopped) Monitor.Wait(_gate);
                if (_queue.Count == 0) return; // stopped, and everything enqueued is done
                (taken, _queue) = (_queue, taken);
            }
            Exception? error;
            lock (_gate) error = _failed;
            if (error is null)
            {
                try
                {
                    if (WriteAndSync(taken, writes)) Commits++;
                    _madeDurable(taken);
                }
                catch (Exception e)
                {
                    error = e as SkiffException ?? new SkiffException(ErrorKind.StorageError, $"writing the log in {_segments.Dir}: {e.Message}", e);
                    lock (_gate) _failed ??= error;
                }
            }
            foreach (var b in taken)
                if (error is null) b.Done.TrySetResult();
                else b.Done.TrySetException(error);
            taken.Clear();
        }
    }

    /// <summary>Places the records in the last segment (starting the next one where a record does not fit, after
    /// syncing the full one), writes them and syncs (unless they are only commit marks); whether it synced.</summary>
    private bool WriteAndSync(List<LogBatch> batches, List<ReadOnlyMemory<byte>> writes)
    {
        bool sync = batches.Exists(b => b.Kind != LogRecordType.Commit);
        var segment = _segments.Any ? _segments.Last : _segments.Create();
        long start = segment.Length, off = start;
        writes.Clear();
        foreach (var b in batches)
        {
            int at = 0, runStart = 0;
            for (int k = 0; k < b.Lengths.Length; k++)
            {
                int len = b.Lengths[k];
                if (off + len > _segments.SegmentBytes && off > WalSegments.HeaderSize)
                {
                    if (at > runStart) writes.Add(b.Data.AsMemory(runStart, at - runStart));
                    Flush(segment, start, off, writes, sync: true);
                    segment = _segments.Create();
                    start = off = segment.Length;
                    runStart = at;
                }
                b.Addresses[k] = WalSegments.Address(segment.Seq, off);
                off += len;
                at += len;
            }
            if (at > runStart) writes.Add(b.Data.AsMemory(runStart, at - runStart));
        }
        Flush(segment, start, off, writes, sync);
        return sync;
    }

    private static void Flush(WalSegment segment, long start, long end, List<ReadOnlyMemory<byte>> writes, bool sync)
    {
        if (writes.Count > 0) segment.File.Write(start, writes);
        if (sync) segment.File.Sync();
        segment.Length = end;
        writes.Clear();
    }

    /// <summary>Refuses further writes, lets the writer thread finish what is enqueued and stops it. False if it was
    /// already stopped.</summary>
    public async Task<bool> StopAsync()
    {
        lock (_gate)
        {
            if (_stopped) return false;
            _stopped = true;
            Monitor.Pulse(_gate);
        }
        try { await _thread.ConfigureAwait(false); } catch { /* failures were reported to callers */ }
        return true;
    }
}
