using Skiff.Core;
using Skiff.Net.Runtime;

namespace Skiff.Net.Storage.Ports;

/// <summary>The log port on the storage's <see cref="RaftLog"/>, Skiff's own write-ahead log, each entry in
/// <see cref="LogEntryCodec"/>'s form. The log does its own group commit: appends are queued in order and
/// <see cref="Flush"/> waits for the newest one to be durable.</summary>
internal sealed class WalLogStore : ILogStore
{
    private readonly RaftLog _log;
    private Task _last = Task.CompletedTask;

    /// <summary>Wraps an open log (which stays its opener's to dispose).</summary>
    public WalLogStore(RaftLog log) => _log = log;

    /// <inheritdoc/>
    public long SnapshotIndex => _log.FirstIndex - 1;

    /// <inheritdoc/>
    public long SnapshotTerm => _log.TermAt(_log.FirstIndex - 1) ?? 0;

    /// <inheritdoc/>
    public long LastIndex => _log.LastIndex;

    /// <inheritdoc/>
    public void Append(IReadOnlyList<Entry> entries) => Append(entries, 0);

    /// <inheritdoc/>
    public void Append(IReadOnlyList<Entry> entries, long commitHint)
    {
        var encoded = new LogEntry[entries.Count];
        for (var i = 0; i < encoded.Length; i++) encoded[i] = LogEntryCodec.Encode(entries[i]);
        _last = _log.AppendAsync(encoded, commitHint);
    }

    /// <inheritdoc/>
    public long RecoveredCommitHint => _log.RecoveredCommitHint;

    /// <inheritdoc/>
    public void NoteCommit(long commitHint) => _log.NoteCommit(commitHint);

    /// <inheritdoc/>
    public void Flush() => DedicatedThread.Wait(_last);

    /// <inheritdoc/>
    public Task FlushAsync() => _last;

    /// <inheritdoc/>
    public long? TermAt(long index) => _log.TermAt(index);

    /// <inheritdoc/>
    public int MaxCommandBytes => _log.MaxPayloadBytes - LogEntryCodec.CommandOverhead;

    /// <inheritdoc/>
    public IReadOnlyList<Entry> Read(long from, long to)
    {
        if (from < _log.FirstIndex || to < from) return Array.Empty<Entry>();
        var entries = _log.ReadAsync(from, to).GetAwaiter().GetResult();
        if (entries.Count == 0 || entries[0].Index != from) return Array.Empty<Entry>();
        return entries.Select(LogEntryCodec.Decode).ToList();
    }

    /// <inheritdoc/>
    public void CompactUntil(long index, long term) => _log.CompactUntil(index).GetAwaiter().GetResult();

    /// <inheritdoc/>
    /// <remarks>The log keeps every entry not yet durable (<see cref="RaftLog.CompactUntil"/> moves its base no
    /// further than its last durable entry), so this needs no wait for the flushes in flight.</remarks>
    public Task CompactUntilAsync(long index, long term) => _log.CompactUntil(index);

    /// <inheritdoc/>
    public void Reset(long snapshotIndex, long snapshotTerm) =>
        _log.ResetToSnapshot(snapshotIndex, snapshotTerm, keepSuffix: false).GetAwaiter().GetResult();

    /// <inheritdoc/>
    public void Dispose() { }
}
