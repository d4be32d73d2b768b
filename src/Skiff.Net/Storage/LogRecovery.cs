using FASTER.core;

namespace Skiff.Net.Storage;

/// <summary>
/// Rebuilds the Raft log's <see cref="LogIndex"/> when it opens, by scanning every record from FASTER's begin
/// address in address order and applying the log's rules (a later record supersedes), so it keeps the last-written
/// version of every index. Along the way it tells apart damage a crash can leave, which is dropped or voided, from
/// corruption, which is <see cref="ErrorKind.StorageCorrupted"/>. See the storage README, "The log" and "Known limits".
/// </summary>
internal static class LogRecovery
{
    /// <summary>What recovery found besides the live entries.</summary>
    /// <param name="TornRecords">Addresses of records at the tail that failed their checksum (never acknowledged):
    /// dropped; the log marks them with Skip records.</param>
    /// <param name="HoleVoided">The range voided past a hole, if any (see <see cref="VoidRanges"/>).</param>
    /// <param name="DamagedCommitRecords">FASTER commit records that failed their checksum and were skipped.</param>
    public sealed record Outcome(List<long> TornRecords, (long From, long Until)? HoleVoided, int DamagedCommitRecords);

    /// <summary>Scans the log into <paramref name="index"/> (new and empty).</summary>
    /// <param name="files">The open FASTER log.</param>
    /// <param name="dir">The log's directory (where <c>log.voids</c> lives).</param>
    /// <param name="logPath">The segment files' path without the segment number, for errors.</param>
    /// <param name="options">The log's settings (page and segment sizes).</param>
    /// <param name="index">Receives the live entries.</param>
    public static Outcome Run(FasterLogFiles files, string dir, string logPath, RaftLogOptions options, LogIndex index)
    {
        var log = files.Log;
        var bad = new List<long>();
        var skipped = new HashSet<long>();
        var voids = VoidRanges.Load(dir);
        var damagedCommitRecords = 0;
        (long, long)? holeVoided = null;
        long lastValidAddress = -1;
        bool started = false;
        bool inferred = false; // base taken from the first entry, not from a Base record
        long previousPage = -1; // page of the record seen before this one (-1: none yet)
        long holeAt = -1;
        try
        {
            using var iter = log.Scan(log.BeginAddress, log.TailAddress, scanUncommitted: false);
            while (true)
            {
                byte[] data;
                int length;
                long address;
                try
                {
                    if (!iter.GetNext(out data, out length, out address, out _))
                    {
                        if (iter.Ended || iter.NextAddress >= log.TailAddress) break;
                        iter.WaitAsync().AsTask().GetAwaiter().GetResult();
                        continue;
                    }
                }
                catch (FasterException e) when (FasterLogFiles.IsDamagedCommitRecord(e))
                {
                    // One of FASTER's own commit records fails its checksum. Seen after a SIGKILL: FASTER counted a
                    // commit complete (and wrote its metadata slot) with the last 20 bytes of that commit's record
                    // not yet in the file, and recovered from the slot without reading the record. The entries
                    // before it were flushed, and the record is only FASTER's bookkeeping: its recovery reads the
                    // slot and the records after it. Our own records carry their own checksums and rules, so skip
                    // it; the iterator has already moved past it. Its parse threw while FASTER's epoch was held,
                    // which GetNext leaves held: release it, or flushes waiting on the epoch would never run.
                    files.ReleaseEpoch();
                    damagedCommitRecords++;
                    continue;
                }
                long page = address >> options.PageSizeBits;
                // A record that breaks the log's rules as the first one seen on a new page may lie past a hole
                // (see VoidRanges): a crash mid-commit left the end of the previous page unwritten.
                bool afterPageChange = previousPage >= 0 && page != previousPage;
                previousPage = page;
                if (voids.Contains(address)) continue;
                var rec = LogRecord.Decode(data, length);
                if (rec is null)
                {
                    if (afterPageChange) { holeAt = address; break; }
                    bad.Add(address);
                    continue;
                }
                var (type, entryIndex, term, _) = rec.Value;
                switch (type)
                {
                    case LogRecordType.Entry:
                        if (!started)
                        {
                            // The log may start after a truncation: take the first entry's position as given; a Base
                            // record further on supplies the term before it.
                            index.StartBefore(entryIndex);
                            started = true;
                            inferred = true;
                        }
                        if (entryIndex <= index.BaseIndex || entryIndex > index.LastIndex + 1)
                        {
                            if (afterPageChange) { holeAt = address; break; }
                            throw Corrupt(address, $"entry {entryIndex} cannot follow a log of ({index.BaseIndex}, {index.LastIndex}]");
                        }
                        index.Append(entryIndex, term, address);
                        break;
                    case LogRecordType.Base:
                    case LogRecordType.Reset:
                        if (started && entryIndex < index.BaseIndex)
                        {
                            // An older base record that survived truncation behind entries written before it: it
                            // drops nothing more. Behind a base read from a record, it cannot happen.
                            if (inferred && type == LogRecordType.Base) break;
                            if (afterPageChange) { holeAt = address; break; }
                            throw Corrupt(address, $"base {entryIndex} behind base {index.BaseIndex}");
                        }
                        started = true;
                        inferred = false;
                        index.SetBase(type == LogRecordType.Reset, entryIndex, term);
                        break;
                    case LogRecordType.Skip:
                        skipped.Add(entryIndex);
                        break;
                    default:
                        if (afterPageChange) { holeAt = address; break; }
                        throw Corrupt(address, $"unknown record type {(byte)type}");
                }
                if (holeAt >= 0) break;
                lastValidAddress = address;
            }
        }
        catch (SkiffException) { throw; }
        catch (Exception e)
        {
            throw new SkiffException(ErrorKind.StorageCorrupted, $"cannot scan {logPath}: {e.Message}", e);
        }
        if (holeAt >= 0)
        {
            // Everything from the hole to FASTER's recovered tail was written by a commit that never completed:
            // void it before anything is appended after it.
            voids.Add(holeAt, log.TailAddress);
            holeVoided = (holeAt, log.TailAddress);
        }
        var torn = new List<long>();
        foreach (var a in bad)
        {
            if (skipped.Contains(a)) continue;
            if (a < lastValidAddress) throw Corrupt(a, "checksum mismatch before the end of the log");
            torn.Add(a);
        }
        return new Outcome(torn, holeVoided, damagedCommitRecords);

        SkiffException Corrupt(long address, string what) => LogRecord.Corrupt(logPath, options.SegmentSizeBits, address, what);
    }
}
