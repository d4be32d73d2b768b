using Skiff.Core;

namespace Skiff.Net.Storage.Ports;

/// <summary>The state-machine and change-history ports on the storage's <see cref="KvStateMachine"/> (FASTER KV).
/// </summary>
internal sealed class KvStateMachineAdapter : IStateMachine, IChangeHistory
{
    private readonly KvStateMachine _kv;

    /// <summary>Wraps an open state machine (which stays its opener's to dispose).</summary>
    public KvStateMachineAdapter(KvStateMachine kv) => _kv = kv;

    /// <inheritdoc/>
    public long AppliedIndex => _kv.AppliedIndex;

    /// <inheritdoc/>
    public bool CompactionPending => _kv.CompactionPending;

    /// <inheritdoc/>
    public bool CompactionBehind => _kv.CompactionBehind;

    /// <inheritdoc/>
    public bool SnapshotWanted => _kv.SnapshotWanted;

    /// <inheritdoc/>
    public void CompactStep(TimeSpan budget) => _kv.CompactStep(budget);

    /// <inheritdoc/>
    public void Skip(long index, long term) => _kv.AdvanceApplied(index, term);

    /// <inheritdoc/>
    public LogResult Apply(long index, long term, LogCommand command, out Change? change)
    {
        var result = _kv.Apply(index, term, command, out change);
        return result ?? LogResult.NewApplied(CommandResult.Done); // null: already applied (replay after recovery)
    }

    /// <inheritdoc/>
    public bool TryReadChanges(long from, long to, string prefix, List<Change> into, out long floor) =>
        _kv.TryReadHistory(from, to, prefix, into, out floor);

    /// <inheritdoc/>
    public byte[]? Get(string key) => _kv.Get(key);

    /// <inheritdoc/>
    public AuthState Auth => _kv.Auth;

    /// <inheritdoc/>
    public string? SessionOwner(long session) => _kv.ClientSessions.Sessions.TryGetValue(session, out var s) ? s.Owner : null;

    /// <inheritdoc/>
    public IReadOnlyList<string> ListKeys(string prefix, string? startAfter, int limit) => _kv.ListKeys(prefix, startAfter, limit);

    /// <inheritdoc/>
    public IReadOnlyList<string> GetPrefixes(string? startAfter, int limit) => _kv.GetPrefixes(startAfter, limit);

    /// <inheritdoc/>
    public void Dispose() { }
}
