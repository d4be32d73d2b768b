using System.Threading.Channels;
using Skiff.Core;

namespace Skiff.Net.Runtime;

/// <summary>
/// Carries out durable writes in the order the reducer asked for them, with group commit: it takes everything
/// queued, writes it, then makes it durable with one flush, and only then completes the writes and tells the
/// loop which entries are durable (Event.Persisted).
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

    private sealed record EntriesOp(IReadOnlyList<Entry> Entries) : Op;

    private sealed record CompactOp(long Index) : Op;

    private sealed record ResetOp(SnapshotMeta Meta, Task Installed) : Op;

    private readonly Channel<Op> _queue = Channel.CreateUnbounded<Op>(new UnboundedChannelOptions { SingleReader = true, AllowSynchronousContinuations = true });
    private readonly ILogStore _log;
    private readonly IHardStateStore _hard;
    private readonly Action<Event> _post;
    private readonly Task _run;

    private readonly Action<Exception> _fatal;

    /// <summary>Raised on the writer thread after a durable write slower than <see cref="RuntimeMetrics.SlowFlush"/>.</summary>
    public event Action<TimeSpan>? SlowFlush;

    public StorageWriter(ILogStore log, IHardStateStore hard, Action<Event> post, Action<Exception> fatal)
    {
        _fatal = fatal;
        _log = log;
        _hard = hard;
        _post = post;
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


    public Task Append(Microsoft.FSharp.Collections.FSharpList<Entry> entries) => Enqueue(new EntriesOp(entries.ToList()));

    public Task Compact(long index) => Enqueue(new CompactOp(index));

    /// <summary>Once the snapshot is installed, replaces the whole log with an empty one after it.</summary>
    public Task Reset(SnapshotMeta meta, Task installed) => Enqueue(new ResetOp(meta, installed));

    private void Run()
    {
        var reader = _queue.Reader;
        var batch = new List<Op>();
        while (DedicatedThread.WaitToRead(reader))
        {
            batch.Clear();
            while (batch.Count < 4096 && reader.TryRead(out var op)) batch.Add(op);
            HardState? hard = null;
            Entry? last = null;
            var appended = false;
            try
            {
                foreach (var op in batch)
                {
                    switch (op)
                    {
                        case HardStateOp h: hard = h.State; break;
                        case EntriesOp e:
                            if (e.Entries.Count == 0) break;
                            _log.Append(e.Entries);
                            last = e.Entries[^1];
                            appended = true;
                            break;
                        case CompactOp c:
                            if (_log.TermAt(c.Index) is { } term)
                            {
                                var sw = System.Diagnostics.Stopwatch.StartNew();
                                _log.CompactUntil(c.Index, term);
                                if (sw.ElapsedMilliseconds > 100) Console.Error.WriteLine($"skiff: log compaction to {c.Index} took {sw.ElapsedMilliseconds} ms (writes waited)");
                            }
                            break;
                        case ResetOp i:
                            if (appended) _log.Flush();
                            i.Installed.GetAwaiter().GetResult();
                            _log.Reset(i.Meta.Index, i.Meta.Term);
                            last = null;
                            appended = false;
                            break;
                    }
                }
                if (hard is not null) _hard.Save(hard);
                if (appended)
                {
                    var started = System.Diagnostics.Stopwatch.GetTimestamp();
                    _log.Flush();
                    Flushes++;
                    var took = System.Diagnostics.Stopwatch.GetElapsedTime(started);
                    RuntimeMetrics.FsyncLatency.Record(took.TotalMilliseconds);
                    if (took >= RuntimeMetrics.SlowFlush) SlowFlush?.Invoke(took);
                }
                foreach (var op in batch) op.Done.TrySetResult();
                if (last is not null) _post(Event.NewPersisted(last.Index, last.Term));
            }
            catch (Exception ex)
            {
                Console.Error.WriteLine($"skiff: storage write failed: {ex}");
                var error = new SkiffException(ErrorKind.StorageError, "a durable write failed: " + ex.Message, ex);
                foreach (var op in batch) op.Done.TrySetException(error);
                _fatal(error);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        _queue.Writer.TryComplete();
        try { await _run.ConfigureAwait(false); } catch (Exception) { }
    }
}
