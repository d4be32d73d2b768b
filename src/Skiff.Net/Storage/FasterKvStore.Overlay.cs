namespace Skiff.Net.Storage;

// The overlay of a checkpoint just ended, drained into the store a few records at a time.
internal sealed partial class FasterKvStore
{
    // The overlay of the checkpoint just ended, written into the store a few records per write rather than all at
    // once: draining it whole under the state machine's lock stopped applying for milliseconds after every snapshot
    // (issue #16: a snapshot may not stop applying for more than 10 ms). Reads see it after the overlay and before
    // the store; a newer write of a key takes the key out of it. Anything that walks the store or asks for a record's
    // address, and the next checkpoint, drains the rest first.
    private Dictionary<string, byte[]?>? _draining;
    private string[] _drainOrder = [];
    private int _drainNext;

    /// <summary>Records of an ended checkpoint's overlay written into the store with each write.</summary>
    internal const int DrainPerWrite = 16;

    /// <summary>Records of an ended checkpoint's overlay not yet written into the store (for tests).</summary>
    internal int DrainingCount => _draining?.Count ?? 0;

    /// <summary>Writes up to <see cref="DrainPerWrite"/> records of the ended overlay into the store, and takes
    /// <paramref name="superseded"/> out of it (the caller is about to write it anew).</summary>
    private void DrainSome(string? superseded)
    {
        var draining = _draining!;
        if (superseded is not null) draining.Remove(superseded);
        for (var n = 0; n < DrainPerWrite && _drainNext < _drainOrder.Length; _drainNext++)
        {
            var key = _drainOrder[_drainNext];
            if (!draining.Remove(key, out var value)) continue;
            if (value is null) DeleteFromStore(key);
            else WriteToStore(key, value);
            n++;
        }
        if (_drainNext >= _drainOrder.Length || draining.Count == 0)
        {
            _draining = null;
            _drainOrder = [];
            _drainNext = 0;
        }
    }

    /// <summary>Writes what is left of the ended overlay into the store: before anything that walks the store, asks
    /// for a record's address or moves its begin, and before the next checkpoint.</summary>
    public void DrainAll()
    {
        while (_draining is not null) DrainSome(null);
    }

    /// <summary>Drains the ended overlay for about <paramref name="budget"/>; true once nothing is left (the
    /// compactor's steps call it before walking the store, so the walk does not drain it all at once).</summary>
    public bool DrainFor(TimeSpan budget)
    {
        var start = System.Diagnostics.Stopwatch.GetTimestamp();
        while (_draining is not null)
        {
            DrainSome(null);
            if (System.Diagnostics.Stopwatch.GetElapsedTime(start) >= budget) break;
        }
        return _draining is null;
    }
}
