namespace Skiff.Net.Storage;

/// <summary>
/// Opens the write-ahead log's segments and rebuilds the Raft log's <see cref="LogIndex"/> from them. Segments are
/// scanned in order; a record that fails its checksum (or a bad header) in the LAST segment is a torn write of an
/// append that was never acknowledged, and the segment is cut there (durably, before anything is appended after
/// it); anywhere else it is corruption (<see cref="ErrorKind.StorageCorrupted"/>, naming the file). Segments before
/// a gap in the sequence are leftovers of a compaction interrupted by a crash and are deleted.
/// <para>The live entries are then found walking the records backwards, which needs no known starting point (the
/// oldest segment kept may begin anywhere in the history): an entry record is live if no later entry record has an
/// index at or below it, no later base record covers it and no later reset; the last base or reset record gives
/// the base. The last commit mark after the last reset gives the commit hint, lowered below any entry written after
/// it at or below its index (a committed entry is never replaced, so that would be a bug; the hint stays safe).</para>
/// </summary>
internal static class WalRecovery
{
    private readonly record struct Rec(LogRecordType Type, long Index, long Term, long Address);

    /// <summary>What recovery found besides the live entries.</summary>
    /// <param name="TornBytes">Bytes cut from the end of the last segment (a torn, never acknowledged write).</param>
    /// <param name="BaseAddress">The address of the last base or reset record, or -1 if there is none.</param>
    /// <param name="CommitHint">The commit index the last commit mark records, within the live log (0 if none).</param>
    public sealed record Outcome(long TornBytes, long BaseAddress, long CommitHint);

    /// <summary>Opens the segments in <paramref name="segments"/>' directory into it and fills
    /// <paramref name="index"/> (new and empty).</summary>
    public static Outcome Run(WalSegments segments, LogIndex index, int maxRecordBytes)
    {
        var fs = segments.Fs;
        var dir = segments.Dir;
        var seqs = fs.List(dir, WalSegments.Suffix).Select(WalSegments.SeqOf).OfType<long>().Order().ToList();
        int start = 0;
        for (int i = seqs.Count - 1; i > 0; i--)
            if (seqs[i - 1] != seqs[i] - 1) { start = i; break; }
        if (start > 0)
        {
            foreach (var s in seqs.Take(start)) fs.Delete(Path.Combine(dir, WalSegments.NameOf(s)));
            fs.SyncDirectory(dir);
            seqs.RemoveRange(0, start);
        }
        var records = new List<Rec>();
        long tornBytes = 0;
        var buffer = new byte[Math.Max(1 << 20, maxRecordBytes + 64)];
        for (int i = 0; i < seqs.Count; i++)
        {
            bool last = i == seqs.Count - 1;
            var path = Path.Combine(dir, WalSegments.NameOf(seqs[i]));
            var file = fs.Open(path, create: false);
            try
            {
                long length = file.Length;
                int h = file.Read(0, buffer.AsSpan(0, WalSegments.HeaderSize));
                if (!WalSegments.IsHeader(buffer.AsSpan(0, h)))
                {
                    if (!last) throw Corrupt(path, 0, "bad segment header");
                    // A segment whose creation a crash interrupted: nothing in it was acknowledged.
                    file.Dispose();
                    fs.Delete(path);
                    fs.SyncDirectory(dir);
                    tornBytes += length;
                    continue;
                }
                long end = Scan(file, seqs[i], length, buffer, records);
                // Zeros after the last record are a preallocated segment's unused space, not damage.
                if (end < length && !AllZero(file, end, length, buffer))
                {
                    if (!last) throw Corrupt(path, end, "a record fails its checksum before the end of a full segment");
                    // Zero the torn bytes (keeping a preallocated size), durably, before anything is appended after
                    // them: stale bytes past a new record must never line up as records.
                    Array.Clear(buffer);
                    for (long at = end; at < length; at += buffer.Length)
                        file.Write(at, new ReadOnlyMemory<byte>[] { buffer.AsMemory(0, (int)Math.Min(buffer.Length, length - at)) });
                    file.Sync();
                    tornBytes += length - end;
                }
                segments.Add(new WalSegment(seqs[i], path, file, end));
            }
            catch
            {
                file.Dispose();
                throw;
            }
        }
        var (baseAddress, commitHint) = Build(records, index, dir);
        return new Outcome(tornBytes, baseAddress, commitHint);
    }

    /// <summary>Reads records from the header to the first that does not parse; returns where that is (the
    /// segment's length if all do). <paramref name="buffer"/> holds a window of the file, at least one record.</summary>
    private static long Scan(IWalFile file, long seq, long length, byte[] buffer, List<Rec> into)
    {
        long off = WalSegments.HeaderSize, windowAt = 0;
        int have = 0;
        while (off < length)
        {
            if (!Ensure(LogRecord.Overhead)) return off;
            int len = LogRecord.LengthAt(buffer.AsSpan((int)(off - windowAt), have - (int)(off - windowAt)));
            if (len <= 0 || len > buffer.Length || off + len > length || !Ensure(len)) return off;
            var rec = buffer.AsSpan((int)(off - windowAt), len);
            if (!LogRecord.Check(rec)) return off;
            var (type, idx, term) = LogRecord.HeaderOf(rec);
            into.Add(new Rec(type, idx, term, WalSegments.Address(seq, off)));
            off += len;
        }
        return off;

        // Whether the n bytes at off are in the window, reading a new window from off if they are not.
        bool Ensure(int n)
        {
            if (off >= windowAt && off + n <= windowAt + have) return true;
            windowAt = off;
            have = file.Read(off, buffer.AsSpan(0, (int)Math.Min(buffer.Length, length - off)));
            return have >= n;
        }
    }

    private static bool AllZero(IWalFile file, long from, long until, byte[] buffer)
    {
        for (long at = from; at < until;)
        {
            int n = file.Read(at, buffer.AsSpan(0, (int)Math.Min(buffer.Length, until - at)));
            if (n == 0) return true;
            if (buffer.AsSpan(0, n).ContainsAnyExcept((byte)0)) return false;
            at += n;
        }
        return true;
    }

    /// <summary>Finds the live entries and the base, walking backwards (see the class summary).</summary>
    private static (long BaseAddress, long CommitHint) Build(List<Rec> records, LogIndex index, string dir)
    {
        long baseIndex = -1, baseTerm = -1, baseAddress = -1, commitHint = -1;
        long minLater = long.MaxValue;
        var live = new List<Rec>();
        for (int i = records.Count - 1; i >= 0; i--)
        {
            var r = records[i];
            if (r.Type is LogRecordType.Base or LogRecordType.Reset)
            {
                if (baseAddress < 0) (baseIndex, baseTerm, baseAddress) = (r.Index, r.Term, r.Address);
                if (r.Type == LogRecordType.Reset) break;
            }
            else if (r.Type == LogRecordType.Entry && r.Index < minLater)
            {
                minLater = r.Index;
                if (r.Index > baseIndex) live.Add(r);
            }
            else if (r.Type == LogRecordType.Commit && commitHint < 0)
                commitHint = Math.Min(r.Index, minLater == long.MaxValue ? r.Index : minLater - 1);
        }
        live.Reverse();
        if (baseAddress < 0)
        {
            // No base record: the log was never compacted, so it starts at 1.
            baseIndex = live.Count > 0 ? live[0].Index - 1 : 0;
            baseTerm = baseIndex == 0 ? 0 : -1;
        }
        for (int k = 0; k < live.Count; k++)
            if (live[k].Index != baseIndex + 1 + k)
                throw new SkiffException(ErrorKind.StorageCorrupted,
                    $"{dir}: the log misses entry {baseIndex + 1 + k} (base {baseIndex}, next record holds {live[k].Index})");
        index.SetBase(reset: true, baseIndex, baseTerm);
        index.Append(baseIndex + 1, live.Select(r => r.Term), live.Select(r => r.Address));
        long lastIndex = baseIndex + live.Count;
        return (baseAddress, Math.Clamp(commitHint, 0, Math.Max(0, lastIndex)));
    }

    private static SkiffException Corrupt(string path, long offset, string what) =>
        new(ErrorKind.StorageCorrupted, $"{path} (offset {offset}): {what}");
}
