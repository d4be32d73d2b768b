using System.Threading.Channels;
using Skiff.Core;
using Skiff.Net.Storage.Ports;

namespace Skiff.Net.Runtime;

/// <summary>
/// Carries out durable writes in the order the reducer asked for them, with group commit and pipelining: it takes
/// everything queued, writes it, and starts making it durable with one flush; while that flush runs it goes on
/// with the next group (FASTER's commit loop syncs it right after the previous one), instead of waiting. Groups
/// complete strictly in order, each only once it is durable (and every group before it is): then its writes
/// complete and the loop learns which entries are durable (Event.Persisted). A log reset first waits for every group
/// in flight; a compaction does not (the log keeps what is not yet durable).
/// </summary>
internal sealed class StorageWriter : IAsyncDisposable
{
    private abstract record Op
    {
        // Continuations run on the writer thread when they ask to (ExecuteSynchronously): the sends that waited
        // for this write are only queued to the transport, and doing that here saves a thread hop per reply.
        public TaskCompletionSource Done { get; } = new();
    }

    private sealed record HardStateOp(HardState State) : Op;

    private sealed record EntriesOp(IReadOnlyList<Entry> Entries, long Bytes, long CommitHint) : Op;

    private sealed record CompactOp(long Index) : Op;

    private sealed record CommitOp(long Hint) : Op;

    private sealed record ResetOp(SnapshotMeta Meta, Task Installed) : Op;

    private readonly Channel<Op> _queue = Channel.CreateUnbounded<Op>(new UnboundedChannelOptions { SingleReader = true, AllowSynchronousContinuations = true });
    private readonly ILogStore _log;
    private readonly IHardStateStore _hard;
    private readonly Action<Event> _post;
    private readonly Task _run;

    private readonly Action<Exception> _fatal;

    /// <summary>Where slow compactions, snapshots and failed observers are reported (the fail-stop itself is logged
    /// by the node).</summary>
    internal Microsoft.Extensions.Logging.ILogger Logger { get; init; } = Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;

    /// <summary>Raised on the writer thread after a durable write slower than <see cref="RuntimeMetrics.SlowFlush"/>.</summary>
    public event Action<TimeSpan>? SlowFlush;

    public StorageWriter(ILogStore log, IHardStateStore hard, Action<Event> post, Action<Exception> fatal)
    {
        _fatal = fatal;
        _log = log;
        _hard = hard;
        _post = post;
        _onDurable = _ =>
        {
            HandOffs.Count(HandOffs.Stage.FlushCompletion);
            CompleteDurable();
        };
        _run = DedicatedThread.Start("skiff-writer", Run);
    }

    /// <summary>Number of flushes done (for measurements).</summary>
    public long Flushes;

    private Task Enqueue(Op op)
    {
        if (!_queue.Writer.TryWrite(op)) op.Done.TrySetException(new SkiffException(ErrorKind.StreamClosed, "storage is closed"));
        return op.Done.Task;
    }

    public Task SaveHardState(HardState state) => Enqueue(new HardStateOp(state));


    /// <summary>Entries queued and not yet handed to the log: the node refuses proposals, and drops peer appends,
    /// while it is full (see <see cref="QueueBudget"/>).</summary>
    public QueueBudget Backlog { get; } = new(int.MaxValue, DefaultMaxBacklogBytes);

    /// <summary>The default byte cap of <see cref="Backlog"/>.</summary>
    public const long DefaultMaxBacklogBytes = 64L << 20;

    /// <summary>Queues entries to append; <paramref name="commitHint"/> is the node's commit index when it asked
    /// (see <see cref="ILogStore.Append(IReadOnlyList{Entry}, long)"/>).</summary>
    public Task Append(Microsoft.FSharp.Collections.FSharpList<Entry> entries, long commitHint)
    {
        var op = new EntriesOp(entries.ToList(), QueueBudget.SizeOf(entries), commitHint);
        Backlog.Add(op.Bytes);
        return Enqueue(op);
    }

    public Task Compact(long index) => Enqueue(new CompactOp(index));

    /// <summary>Records the commit index after everything queued so far (see <see cref="ILogStore.NoteCommit"/>).</summary>
    public void NoteCommit(long commitHint) => Enqueue(new CommitOp(commitHint));

    /// <summary>Once the snapshot is installed, replaces the whole log with an empty one after it.</summary>
    public Task Reset(SnapshotMeta meta, Task installed) => Enqueue(new ResetOp(meta, installed));

    /// <summary>A group of writes whose durability was started; completed in order by <see cref="CompleteDurable"/>.</summary>
    private sealed class Group
    {
        public required Op[] Ops;
        public required Task Durable;
        public required Entry? Last;
        public required bool Appended;
        public required long Started;
    }

    private readonly Queue<Group> _inflight = new(); // guarded by itself
    private readonly Action<Task> _onDurable;

    private void Run()
    {
        var reader = _queue.Reader;
        var batch = new List<Op>();
        var group = new List<Op>();
        while (DedicatedThread.WaitToRead(reader))
        {
            batch.Clear();
            while (batch.Count < 4096 && reader.TryRead(out var op)) batch.Add(op);
            HardState? hard = null;
            Entry? last = null;
            var appended = false;
            group.Clear();
            try
            {
                foreach (var op in batch)
                {
                    switch (op)
                    {
                        case HardStateOp h: hard = h.State; group.Add(op); break;
                        case EntriesOp e:
                            group.Add(op);
                            Backlog.Remove(e.Bytes);
                            if (e.Entries.Count == 0) break;
                            _log.Append(e.Entries, e.CommitHint);
                            last = e.Entries[^1];
                            appended = true;
                            break;
                        case CommitOp m:
                            _log.NoteCommit(m.Hint);
                            m.Done.TrySetResult();
                            break;
                        case CompactOp c:
                            // The appends before it reach the log first; the compaction then runs beside the
                            // appends after it (the store keeps what is not yet durable, ILogStore.CompactUntilAsync).
                            Seal(group, ref hard, ref last, ref appended);
                            Compact(c);
                            break;
                        case ResetOp i:
                            Seal(group, ref hard, ref last, ref appended);
                            Drain();
                            DedicatedThread.Wait(i.Installed);
                            _log.Reset(i.Meta.Index, i.Meta.Term);
                            i.Done.TrySetResult();
                            break;
                    }
                }
                Seal(group, ref hard, ref last, ref appended);
            }
            catch (Exception ex)
            {
                var error = WriteFailed(ex);
                foreach (var op in batch) op.Done.TrySetException(error);
                _fatal(error);
            }
        }
        Drain();
    }

    /// <summary>What the callers of a failed durable write (append, flush or compaction) get, and the node fail-stops with.</summary>
    private static SkiffException WriteFailed(Exception ex) =>
        new(ErrorKind.StorageError, "a durable write failed: " + ex.Message, ex);

    /// <summary><see cref="WriteFailed(Exception)"/> for a task that faulted, or was cancelled (<paramref name="cancelled"/>).</summary>
    private static SkiffException WriteFailed(Task failed, string cancelled) =>
        WriteFailed(failed.Exception?.GetBaseException() ?? new IOException(cancelled));

    /// <summary>Starts a compaction of the log; its failure is a failed durable write, as an append's is.</summary>
    private void Compact(CompactOp c)
    {
        if (_log.TermAt(c.Index) is not { } term)
        {
            c.Done.TrySetResult();
            return;
        }
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        _log.CompactUntilAsync(c.Index, term).ContinueWith(t =>
        {
            if (t.IsCompletedSuccessfully)
            {
                var took = System.Diagnostics.Stopwatch.GetElapsedTime(started);
                if (took.TotalMilliseconds > 100) Microsoft.Extensions.Logging.LoggerExtensions.LogWarning(Logger, "Skiff: log compaction to {Index} took {Milliseconds} ms", c.Index, (long)took.TotalMilliseconds);
                c.Done.TrySetResult();
                return;
            }
            var error = WriteFailed(t, "the log compaction was cancelled");
            c.Done.TrySetException(error);
            _fatal(error);
        }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    /// <summary>Saves the hard state (durably, here), starts the flush of the entries appended and queues the
    /// group for in-order completion.</summary>
    private void Seal(List<Op> ops, ref HardState? hard, ref Entry? last, ref bool appended)
    {
        if (ops.Count == 0) return;
        if (hard is not null) _hard.Save(hard);
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        var durable = appended ? _log.FlushAsync() : Task.CompletedTask;
        var g = new Group { Ops = ops.ToArray(), Durable = durable, Last = last, Appended = appended, Started = started };
        lock (_inflight) _inflight.Enqueue(g);
        ops.Clear();
        hard = null;
        last = null;
        appended = false;
        if (durable.IsCompleted) CompleteDurable();
        else durable.ContinueWith(_onDurable, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    /// <summary>Completes, in order, every group at the head of the queue whose flush finished. Runs where a flush
    /// completes (a FASTER commit continuation) or on the writer thread; the lock keeps the order.</summary>
    private void CompleteDurable()
    {
        lock (_inflight)
        {
            while (_inflight.TryPeek(out var g) && g.Durable.IsCompleted)
            {
                _inflight.Dequeue();
                if (!g.Durable.IsCompletedSuccessfully)
                {
                    var error = WriteFailed(g.Durable, "the log flush was cancelled");
                    foreach (var op in g.Ops) op.Done.TrySetException(error);
                    _fatal(error);
                    continue;
                }
                if (g.Appended)
                {
                    Flushes++;
                    var took = System.Diagnostics.Stopwatch.GetElapsedTime(g.Started);
                    RuntimeMetrics.FsyncLatency.Record(took.TotalMilliseconds);
                    if (took >= RuntimeMetrics.SlowFlush) SlowFlush?.Invoke(took);
                }
                foreach (var op in g.Ops) op.Done.TrySetResult();
                if (g.Last is not null) _post(Event.NewPersisted(g.Last.Index, g.Last.Term));
            }
        }
    }

    /// <summary>Waits (on the writer thread) until every group in flight has completed.</summary>
    private void Drain()
    {
        while (true)
        {
            Task durable;
            lock (_inflight)
            {
                if (_inflight.Count == 0) return;
                durable = _inflight.Peek().Durable;
            }
            try { DedicatedThread.Wait(durable); } catch (Exception) { }
            CompleteDurable();
        }
    }

    public async ValueTask DisposeAsync()
    {
        _queue.Writer.TryComplete();
        try { await _run.ConfigureAwait(false); } catch (Exception) { }
    }
}
