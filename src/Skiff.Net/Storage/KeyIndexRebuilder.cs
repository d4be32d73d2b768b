namespace Skiff.Net.Storage;

/// <summary>
/// Rebuilds the ordered <see cref="KeyIndex"/> when the store opens (FASTER keeps none), and, in the same pass,
/// finds the reserved records the state machine rebuilds its own indexes from: the change history's records and the
/// client sessions'.
/// </summary>
internal static class KeyIndexRebuilder
{
    /// <summary>What the rebuild found besides the keys.</summary>
    /// <param name="HistoryIndexes">Indexes and sizes of the live change-history records, ascending.</param>
    /// <param name="SessionIds">Ids of the live session records.</param>
    public sealed record Found((long Index, int Size)[] HistoryIndexes, HashSet<long> SessionIds);

    /// <summary>Fills <paramref name="index"/> with exactly the live (non-reserved) keys of <paramref name="store"/>.
    /// <see cref="KeyIndexRebuild.LogScan"/> scans the hybrid log once in address order: every newer version of a
    /// key lies at a higher address than the older ones (updates in place keep the address), so applying records in
    /// order (a live record adds its key, a tombstone removes it) leaves exactly the live keys, and likewise the
    /// live history and session records, whose trimmed or expired predecessors left tombstones.</summary>
    public static Found Rebuild(FasterKvStore store, KeyIndex index, KeyIndexRebuild how)
    {
        index.Clear();
        var history = new HashSet<(long, int)>();
        var sessions = new HashSet<long>();
        if (how == KeyIndexRebuild.DistinctIterator)
        {
            foreach (var key in store.LiveKeys())
            {
                if (!KvStateMachine.IsReserved(key)) index.Add(key);
                else if (ChangeHistory.IndexOf(key) is { } i) history.Add(i);
                else if (SessionTableStore.IdOf(key) is { } s) sessions.Add(s);
            }
        }
        else
        {
            var live = new HashSet<string>(StringComparer.Ordinal);
            foreach (var (key, tombstone) in store.ScanInAddressOrder())
            {
                if (KvStateMachine.IsReserved(key))
                {
                    if (ChangeHistory.IndexOf(key) is { } i) Track(history, i, tombstone);
                    else if (SessionTableStore.IdOf(key) is { } id) Track(sessions, id, tombstone);
                    continue;
                }
                if (tombstone) live.Remove(key);
                else live.Add(key);
            }
            index.Rebuild(live);
        }
        var indexes = history.ToArray();
        Array.Sort(indexes);
        return new Found(indexes, sessions);

        static void Track<T>(HashSet<T> live, T id, bool tombstone)
        {
            if (tombstone) live.Remove(id);
            else live.Add(id);
        }
    }
}
