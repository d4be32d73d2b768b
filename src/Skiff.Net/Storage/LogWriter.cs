using FASTER.core;

namespace Skiff.Net.Storage;

/// <summary>A group of records written together by one call (entries, a base, a reset or a skip), completed once
/// durable.</summary>
internal sealed class LogBatch
{
    public required LogRecordType Kind;
    public required long First;      // first index (entries), base index, or the skipped record's address
    public required long BaseTerm;
    public required long[] Terms;
    public required long[] Addresses;
    public readonly TaskCompletionSource Done = new(TaskCreationOptions.RunContinuationsAsynchronously);
}

/// <summary>
/// The Raft log's write side and its group commit. Callers enqueue a whole batch of records under one lock (so a
/// commit boundary never splits a batch) and wait; one commit loop takes everything enqueued so far, commits it with
/// one FASTER commit, hands the batches to the log's durable index and completes every covered caller. It keeps
/// the pending view appends are validated against (base and last index including what is not yet durable), and
/// after a failed write or commit refuses every later one.
/// </summary>
internal sealed class LogWriter
{
    private readonly FasterLog _log;
    private readonly string _logPath;
    private readonly FreeSpaceCheck _space;
    private readonly Action<List<LogBatch>> _madeDurable;

    private readonly object _gate = new();
    private long _pendingBase;
    private long _pendingLast;
    private readonly Queue<LogBatch> _queue = new();
    private Exception? _failed;
    private bool _stopped;

    private readonly SemaphoreSlim _signal = new(0);
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _committer;

    /// <summary>Number of commits the commit loop issued; for the benchmark.</summary>
    public long Commits { get; private set; }

    /// <param name="log">The FASTER log.</param>
    /// <param name="logPath">The segment files' path without the segment number, for errors.</param>
    /// <param name="space">The free-space guard appends go through.</param>
    /// <param name="durableBase">The recovered log's base index.</param>
    /// <param name="durableLast">The recovered log's last index.</param>
    /// <param name="madeDurable">Applies batches to the durable view, from the commit loop, before their callers
    /// are completed.</param>
    public LogWriter(FasterLog log, string logPath, FreeSpaceCheck space, long durableBase, long durableLast,
        Action<List<LogBatch>> madeDurable)
    {
        _log = log;
        _logPath = logPath;
        _space = space;
        _madeDurable = madeDurable;
        _pendingBase = durableBase;
        _pendingLast = durableLast;
        _committer = Task.Run(CommitLoop);
    }

    /// <summary>Enqueues contiguous entries (the caller checked contiguity and sizes); the task completes when they
    /// are durable.</summary>
    /// <exception cref="ArgumentException">The first index is compacted or past last + 1.</exception>
    public Task Append(IReadOnlyList<LogEntry> entries)
    {
        var batch = new LogBatch
        {
            Kind = LogRecordType.Entry,
            First = entries[0].Index,
            BaseTerm = 0,
            Terms = new long[entries.Count],
            Addresses = new long[entries.Count],
        };
        lock (_gate)
        {
            ThrowIfFailed();
            _space.Ensure();
            long first = entries[0].Index;
            if (first <= _pendingBase || first > _pendingLast + 1)
                throw new ArgumentException(
                    $"append at index {first} outside ({_pendingBase}, {_pendingLast + 1}]", nameof(entries));
            for (int i = 0; i < entries.Count; i++)
            {
                var e = entries[i];
                batch.Terms[i] = e.Term;
                batch.Addresses[i] = Enqueue(LogRecord.Encode(LogRecordType.Entry, e.Index, e.Term, e.Payload));
            }
            _pendingLast = entries[^1].Index;
            _queue.Enqueue(batch);
        }
        _signal.Release();
        return batch.Done.Task;
    }

    /// <summary>Enqueues a Base or Reset record; wait for the returned batch's <see cref="LogBatch.Done"/>. Its
    /// record's address is <c>Addresses[0]</c>.</summary>
    public LogBatch WriteBase(LogRecordType type, long index, long term)
    {
        var batch = new LogBatch { Kind = type, First = index, BaseTerm = term, Terms = Array.Empty<long>(), Addresses = new long[1] };
        lock (_gate)
        {
            ThrowIfFailed();
            if (index < _pendingBase)
                throw new ArgumentException($"base {index} is behind the current base {_pendingBase}");
            batch.Addresses[0] = Enqueue(LogRecord.Encode(type, index, term, ReadOnlySpan<byte>.Empty));
            _pendingBase = index;
            if (type == LogRecordType.Reset || index > _pendingLast) _pendingLast = index;
            _queue.Enqueue(batch);
        }
        _signal.Release();
        return batch;
    }

    /// <summary>Marks torn records dropped at recovery with Skip records, so that once later records follow them
    /// they are not mistaken for corruption in the middle of the log; returns once the marks are durable.</summary>
    public void WriteSkips(IReadOnlyList<long> tornAddresses)
    {
        if (tornAddresses.Count == 0) return;
        var skips = tornAddresses.Select(a => new LogBatch
        {
            Kind = LogRecordType.Skip,
            First = a,
            BaseTerm = 0,
            Terms = Array.Empty<long>(),
            Addresses = Array.Empty<long>(),
        }).ToList();
        lock (_gate)
        {
            foreach (var b in skips)
            {
                Enqueue(LogRecord.Encode(LogRecordType.Skip, b.First, 0, ReadOnlySpan<byte>.Empty));
                _queue.Enqueue(b);
            }
        }
        _signal.Release();
        skips[^1].Done.Task.GetAwaiter().GetResult();
    }

    private long Enqueue(byte[] record)
    {
        try
        {
            return _log.Enqueue(record);
        }
        catch (Exception e)
        {
            var err = new SkiffException(ErrorKind.StorageError, $"appending to {_logPath}: {e.Message}", e);
            _failed ??= err;
            throw err;
        }
    }

    private void ThrowIfFailed()
    {
        ObjectDisposedException.ThrowIf(_stopped, typeof(RaftLog));
        if (_failed is { } f) throw new SkiffException(ErrorKind.StorageError, $"the log {_logPath} failed earlier: {f.Message}", f);
    }

    private async Task CommitLoop()
    {
        var batches = new List<LogBatch>();
        while (true)
        {
            try
            {
                await _signal.WaitAsync(_stop.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                // Drain what is left, then stop.
            }
            long target;
            lock (_gate)
            {
                while (_queue.Count > 0) batches.Add(_queue.Dequeue());
                if (batches.Count == 0)
                {
                    if (_stop.IsCancellationRequested) return;
                    continue;
                }
                target = _log.TailAddress;
                if (_failed is null)
                {
                    try { _log.Commit(spinWait: false); }
                    catch (Exception e) { _failed = new SkiffException(ErrorKind.StorageError, $"committing {_logPath}: {e.Message}", e); }
                }
            }
            // Signals of the batches just taken stay counted; they cost one empty pass each. Consuming them here
            // could swallow the signal of a batch enqueued after the drain and strand it.
            Exception? error = _failed;
            if (error is null)
            {
                try
                {
                    await _log.WaitForCommitAsync(target).ConfigureAwait(false);
                    Commits++;
                }
                catch (Exception e)
                {
                    error = new SkiffException(ErrorKind.StorageError, $"committing {_logPath}: {e.Message}", e);
                    lock (_gate) _failed ??= error;
                }
            }
            if (error is not null)
            {
                foreach (var b in batches) b.Done.TrySetException(error);
            }
            else
            {
                _madeDurable(batches);
                foreach (var b in batches) b.Done.TrySetResult();
            }
            batches.Clear();
        }
    }

    /// <summary>Refuses further writes, lets the commit loop finish what is enqueued and stops it. False if it was
    /// already stopped.</summary>
    public async Task<bool> StopAsync()
    {
        lock (_gate)
        {
            if (_stopped) return false;
            _stopped = true;
        }
        _stop.Cancel();
        try { await _committer.ConfigureAwait(false); } catch { /* failures were reported to callers */ }
        _stop.Dispose();
        return true;
    }
}
