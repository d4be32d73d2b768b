using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Microsoft.FSharp.Collections;
using Skiff.Core;
using Skiff.Net.Storage.Ports;

namespace Skiff.Net.Runtime;

/// <summary>
/// Carries out the reducer's LoadEntries effects: reads log entries on a thread of its own (reads block on storage,
/// so never on the pool) and posts them back as EntriesLoaded events. A read for a lagging follower that fails is
/// dropped (the reducer asks again on a later round); a read needed to apply is retried, then fail-stops the node.
/// </summary>
internal sealed class LogLoader
{
    /// <summary>Attempts at a log read for applying before the node fail-stops.</summary>
    private const int ApplyReadAttempts = 5;

    /// <summary>The default byte cap of one read for applying (see <see cref="MaxApplyLoadBytes"/>).</summary>
    public const long DefaultMaxApplyLoadBytes = 16L << 20;

    /// <summary>The most bytes (as the reducer counts an entry) one read for a lagging follower returns, always at
    /// least one entry: the reducer asks by count (up to MaxEntriesPerAppend) and sends at most MaxBytesPerAppend of
    /// the answer, so reading more would only be thrown away (64 entries of 1 MiB were 64 MiB read and held for a
    /// 1 MiB append, every append); the node sets it to the reducer's MaxBytesPerAppend.</summary>
    public long MaxReplicateLoadBytes { get; set; } = 1L << 20;

    /// <summary>The most bytes one read for applying returns (always at least one entry): the reducer asks for
    /// everything committed that left its window, which after a restart or a long catch-up may be the whole log;
    /// it applies what comes and asks again for the rest.</summary>
    public long MaxApplyLoadBytes { get; set; } = DefaultMaxApplyLoadBytes;

    private readonly Channel<(LoadPurpose Purpose, long From, long To)> _loads =
        Channel.CreateUnbounded<(LoadPurpose, long, long)>(new UnboundedChannelOptions { SingleReader = true, AllowSynchronousContinuations = true });

    private readonly Guid _id;
    private readonly ILogStore _log;
    private readonly Action<Event> _post;
    private readonly Action<Exception> _fatal;
    private readonly ILogger _logger;
    private readonly Func<bool> _stopping;
    private Task _thread = Task.CompletedTask;

    /// <summary>Creates the loader of node <paramref name="id"/>: entries read from <paramref name="log"/> go to
    /// <paramref name="post"/>; a read for applying that keeps failing goes to <paramref name="fatal"/>, unless
    /// <paramref name="stopping"/> says the node is shutting down (a read failing then is no fault of storage).</summary>
    public LogLoader(Guid id, ILogStore log, Action<Event> post, Action<Exception> fatal, Func<bool> stopping, ILogger logger)
    {
        _stopping = stopping;
        _id = id;
        _log = log;
        _post = post;
        _fatal = fatal;
        _logger = logger;
    }

    /// <summary>Test hook: consulted before each read; an exception it returns is thrown as the read's failure.</summary>
    public Func<LoadPurpose, Exception?>? Fault { get; set; }

    /// <summary>Starts the loader's thread.</summary>
    public void Start() => _thread = DedicatedThread.Start("skiff-loader", Run);

    /// <summary>Queues a read of entries <paramref name="from"/>..<paramref name="to"/> (from the event loop).</summary>
    public void Load(LoadPurpose purpose, long from, long to) => _loads.Writer.TryWrite((purpose, from, to));

    /// <summary>Stops taking reads and waits for the thread to finish the one under way.</summary>
    public async Task StopAsync()
    {
        _loads.Writer.TryComplete();
        try { await _thread.ConfigureAwait(false); } catch (Exception) { } // the node is stopping either way
    }

    private void Run()
    {
        var reader = _loads.Reader;
        while (DedicatedThread.WaitToRead(reader))
        {
            while (reader.TryRead(out var load))
            {
                if (load.Purpose.IsApply)
                {
                    LoadForApply(load.Purpose, load.From, load.To);
                    continue;
                }
                try
                {
                    if (Fault?.Invoke(load.Purpose) is { } fault) throw fault;
                    var entries = ReadCapped(load.From, load.To, MaxReplicateLoadBytes);
                    _post(Event.NewEntriesLoaded(load.Purpose, ListModule.OfSeq(entries)));
                }
                catch (Exception ex)
                {
                    // For a lagging follower: the reducer asks again on a later round; an empty answer would mean
                    // "compacted" and send a snapshot.
                    _logger.LogWarning(ex, "Skiff node {NodeId}: reading log entries {From}..{To} failed: {Error}", _id, load.From, load.To, ex.Message);
                }
            }
        }
    }

    /// <summary>Reads entries the reducer needs in order to apply. The reducer applies nothing more until they come,
    /// so a read that keeps failing would leave this node voting and acknowledging but never applying: after
    /// <see cref="ApplyReadAttempts"/> attempts it fail-stops, as for a failed write. A failure explained by the
    /// range having been compacted or replaced by a snapshot meanwhile (a race with the writer) is not one: the
    /// answer is then "nothing to read" (an empty list), as a read of a compacted range gives.</summary>
    private void LoadForApply(LoadPurpose purpose, long from, long to)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                if (Fault?.Invoke(purpose) is { } fault) throw fault;
                var entries = ReadCapped(from, to, MaxApplyLoadBytes);
                _post(Event.NewEntriesLoaded(purpose, ListModule.OfSeq(entries)));
                return;
            }
            catch (Exception ex)
            {
                if (_stopping()) return;
                if (from <= _log.SnapshotIndex)
                {
                    _post(Event.NewEntriesLoaded(purpose, FSharpList<Entry>.Empty));
                    return;
                }
                if (attempt >= ApplyReadAttempts)
                {
                    _fatal(new SkiffException(ErrorKind.StorageError,
                        $"reading log entries {from}..{to} to apply them failed {attempt} times: {ex.Message}", ex));
                    return;
                }
                _logger.LogWarning(ex, "Skiff node {NodeId}: reading log entries {From}..{To} to apply them failed (attempt {Attempt}): {Error}",
                    _id, from, to, attempt, ex.Message);
                Thread.Sleep(20 << attempt); // backoff before the next attempt: 40, 80, 160, 320 ms
            }
        }
    }

    /// <summary>Entries <paramref name="from"/>.. up to <paramref name="to"/>, stopping once they reach
    /// <paramref name="maxBytes"/> (at least one entry; empty if <paramref name="from"/> is compacted). The sizes are
    /// known only once read, so the range is read in chunks sized from the entries read so far: one entry first,
    /// then as many as the rest of the budget holds at their average size (so the overshoot is about one entry).</summary>
    private List<Entry> ReadCapped(long from, long to, long maxBytes)
    {
        var result = new List<Entry>();
        long bytes = 0, next = from, chunk = 1;
        while (next <= to && bytes < maxBytes)
        {
            var part = _log.Read(next, Math.Min(to, next + chunk - 1));
            if (part.Count == 0) break;
            foreach (var e in part)
            {
                result.Add(e);
                bytes += LogViewModule.entrySize(e);
                next = e.Index + 1;
            }
            var average = Math.Max(1, bytes / result.Count);
            chunk = Math.Clamp((maxBytes - bytes) / average, 1, 1024);
        }
        return result;
    }
}
