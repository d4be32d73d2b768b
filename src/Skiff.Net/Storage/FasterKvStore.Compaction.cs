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

    /// <summary>The value of <paramref name="key"/> if its newest record is the one at <paramref name="address"/>
    /// (not a tombstone); otherwise null. Waits for a lookup that has to go to disk. The value comes from that lookup,
    /// so a scan that asks this of every record it meets need not copy the values of superseded ones.</summary>
    public byte[]? ValueIfNewestAt(string key, long address)
    {
        DrainAll();
        var (found, value, newest) = Lookup(key);
        return found && newest == address ? value : null;
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
