namespace Skiff.Net.Storage;

/// <summary>Reads live entries from the write-ahead log's segments at the addresses the log's index holds. Records
/// of consecutive entries usually lie back to back, so it reads a window of the segment at a time (one read for
/// many small entries) and re-reads only where a record is not in the window.</summary>
internal static class WalReader
{
    private const int Window = 64 << 10;

    /// <summary>The entries from <paramref name="from"/> whose records are at <paramref name="addresses"/>, stopping
    /// once <paramref name="maxBytes"/> of payload are gathered (at least one entry).</summary>
    /// <exception cref="SkiffException"><see cref="ErrorKind.StorageCorrupted"/> if a record is not the entry it
    /// should be or fails its checksum.</exception>
    public static List<LogEntry> Read(WalSegments segments, long from, long[] addresses, long maxBytes, CancellationToken cancellationToken)
    {
        var result = new List<LogEntry>(addresses.Length);
        // A window about the size of the records wanted when they share a segment (a replication read is often
        // one small entry), at most 64 KiB.
        long first = addresses[0], last = addresses[^1];
        long span = first >> 32 == last >> 32 ? last - first : Window;
        var buffer = new byte[(int)Math.Clamp(span + 4096, 4096, Window)];
        long windowSeq = -1, windowAt = 0;
        int have = 0;
        long bytes = 0;
        for (int k = 0; k < addresses.Length; k++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            long seq = addresses[k] >> 32, off = addresses[k] & 0xFFFF_FFFFL;
            var segment = segments.Find(seq)
                ?? throw new SkiffException(ErrorKind.StorageError, $"segment {WalSegments.NameOf(seq)} of {segments.Dir} is gone");
            if (!InWindow(LogRecord.Overhead)) Fill(segment, buffer.Length);
            int len = have >= off - windowAt + LogRecord.Overhead ? LogRecord.LengthAt(buffer.AsSpan((int)(off - windowAt), have - (int)(off - windowAt))) : -1;
            if (len <= 0) throw Corrupt(segment, off, "no record header");
            if (!InWindow(len))
            {
                if (len > buffer.Length) buffer = new byte[len];
                Fill(segment, buffer.Length);
                if (!InWindow(len)) throw Corrupt(segment, off, "the record runs past the end of the segment");
            }
            var rec = buffer.AsSpan((int)(off - windowAt), len);
            if (!LogRecord.Check(rec)) throw Corrupt(segment, off, "checksum mismatch");
            var (type, index, term) = LogRecord.HeaderOf(rec);
            if (type != LogRecordType.Entry || index != from + k)
                throw Corrupt(segment, off, $"expected entry {from + k}, found type {(byte)type} index {index}");
            var payload = LogRecord.PayloadOf(rec).ToArray();
            result.Add(new LogEntry(index, term, payload));
            bytes += payload.Length;
            if (bytes >= maxBytes) break;

            bool InWindow(int n) => seq == windowSeq && off >= windowAt && off + n <= windowAt + have;

            void Fill(WalSegment s, int size)
            {
                windowSeq = seq;
                windowAt = off;
                have = s.File.Read(off, buffer.AsSpan(0, size));
            }
        }
        return result;
    }

    private static SkiffException Corrupt(WalSegment segment, long offset, string what) =>
        new(ErrorKind.StorageCorrupted, $"{segment.Path} (offset {offset}): {what}");
}
