using FASTER.core;

namespace Skiff.Net.Storage;

// What compaction (KvCompactor) sees of the store: the hybrid log's addresses, a scan of its records, and moving its
// begin past the ones copied forward.
internal sealed partial class FasterKvStore
{
    /// <summary>The lowest address still part of the store: segments wholly below it are garbage once a checkpoint
    /// records it (FASTER deletes them then).</summary>
    public long BeginAddress => _kv.Log.BeginAddress;

    /// <summary>The address the next record goes to: the hybrid log spans <see cref="BeginAddress"/> to this, on
    /// disk or in memory.</summary>
    public long TailAddress => _kv.Log.TailAddress;

    /// <summary>For each record in <paramref name="records"/> (a key and the address a scan met it at), its value in
    /// <paramref name="values"/> if that record is still the key's newest version (not a tombstone), otherwise null.
    /// The values come from the lookups, so a scan need not copy the values of superseded records.
    /// <para>Lookups that have to go to disk are all issued first and then waited for once: a compaction pass over
    /// a store larger than its memory budget meets mostly records on disk, and waiting for each in turn (a hand-off
    /// to the device's read threads and back per record) made a pass over 300,000 keys take longer than the writes
    /// it had to keep up with, and the writes behind it waited (issue 17's collapse at 256 clients).</para></summary>
    /// <param name="records">The records, as <see cref="ScanLiveRecords"/> gives them.</param>
    /// <param name="values">Where the values go, at the records' positions; at least as long as
    /// <paramref name="records"/>.</param>
    public void ValuesIfNewestAt(ReadOnlySpan<(string Key, long Address)> records, byte[]?[] values)
    {
        DrainAll();
        Dictionary<string, List<int>>? pending = null;
        for (var i = 0; i < records.Length; i++)
        {
            var (key, address) = records[i];
            var status = IssueRead(key, out var output);
            if (status.IsPending)
            {
                // The same key twice in a batch (two versions met) waits once; both get its one answer.
                pending ??= new Dictionary<string, List<int>>(StringComparer.Ordinal);
                if (!pending.TryGetValue(key, out var waiting)) pending[key] = waiting = [];
                waiting.Add(i);
                values[i] = null;
                continue;
            }
            values[i] = IfNewestAt(status, output, address);
        }
        if (pending is null) return;
        DiskWaits++;
        Session.CompletePendingWithOutputs(out var outputs, wait: true);
        using (outputs)
            while (outputs.Next())
            {
                var done = outputs.Current;
                if (!pending.Remove(KeyOf(ref done.Key), out var waiting)) continue; // a second read of a key answered
                foreach (var i in waiting) values[i] = IfNewestAt(done.Status, done.Output, records[i].Address);
            }
        if (pending.Count > 0)
            throw new SkiffException(ErrorKind.StorageError, $"pending reads of {pending.Count} keys in {_dir} produced no result");
    }

    /// <summary>The value a lookup found if the record it found is the one at <paramref name="address"/>.</summary>
    private byte[]? IfNewestAt(Status status, StoreRead output, long address)
    {
        ThrowIfFaulted(status);
        return status.Found && output.Address == address ? output.Value ?? [] : null;
    }

    /// <summary>The keys and addresses of the records from <paramref name="from"/> up to <paramref name="until"/>
    /// that are not tombstones, in address order (superseded versions included). Use it on the thread that owns the
    /// session, between the session's operations: a scan step and a session operation never overlap.</summary>
    public RecordScan ScanLiveRecords(long from, long until)
    {
        DrainAll();
        return new(_kv.Log.Scan(from, until));
    }

    /// <summary>Moves the begin address up to <paramref name="until"/> (a record boundary): the records below it are
    /// no longer part of the store. The files stay until the next checkpoint records the new begin.</summary>
    public void ShiftBeginAddress(long until)
    {
        DrainAll();
        _kv.Log.ShiftBeginAddress(until, snapToPageStart: false, truncateLog: false);
    }

    /// <summary>A scan of the hybrid log (see <see cref="ScanLiveRecords"/>).</summary>
    public sealed class RecordScan(IFasterScanIterator<SpanByte, SpanByte> iterator) : IDisposable
    {
        /// <summary>The records, read as the enumeration advances.</summary>
        public IEnumerable<(string Key, long Address)> Records
        {
            get
            {
                while (iterator.GetNext(out var info))
                {
                    if (info.Invalid || info.Tombstone) continue;
                    yield return (KeyOf(ref iterator.GetKey()), iterator.CurrentAddress);
                }
            }
        }

        /// <summary>The address after the last record read: everything below it has been seen.</summary>
        public long NextAddress => iterator.NextAddress;

        /// <inheritdoc />
        public void Dispose() => iterator.Dispose();
    }
}
