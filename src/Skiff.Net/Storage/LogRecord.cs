using System.Buffers.Binary;

namespace Skiff.Net.Storage;

/// <summary>The kinds of record in the Raft log. The log only appends, so a later record supersedes an earlier
/// one: see <see cref="RaftLog"/>.</summary>
internal enum LogRecordType : byte
{
    /// <summary>An entry at an index; drops whatever was at that index and above (suffix replacement).</summary>
    Entry = 1,
    /// <summary>Drops entries up to the index and records the term there (compaction, or a snapshot install that
    /// keeps the suffix).</summary>
    Base = 2,
    /// <summary>Names the address of a torn record dropped at recovery, so it is not later taken for corruption in
    /// the middle of the log (FasterLog logs of older versions only; the write-ahead log cuts a torn tail).</summary>
    Skip = 3,
    /// <summary>Drops everything (a snapshot install without a matching suffix).</summary>
    Reset = 4,
    /// <summary>Records that every entry up to the index was committed when it was written, so a restarted node
    /// applies them without waiting for a leader (<see cref="WalRecovery"/> takes the last one after the last reset).
    /// No payload; the term is 0.</summary>
    Commit = 5,
}

/// <summary>One record of the Raft log, and its codec:
/// <c>[type u8][index i64][term i64][length i32][payload][crc32c u32]</c>, little-endian.</summary>
internal readonly record struct LogRecord(LogRecordType Type, long Index, long Term, byte[] Payload)
{
    private const int Header = 21;
    /// <summary>Bytes a record takes besides its payload.</summary>
    public const int Overhead = Header + 4;

    /// <summary>The bytes of a record.</summary>
    public static byte[] Encode(LogRecordType type, long index, long term, ReadOnlySpan<byte> payload)
    {
        var buf = new byte[Overhead + payload.Length];
        EncodeTo(buf, type, index, term, payload);
        return buf;
    }

    /// <summary>Writes a record into <paramref name="dest"/> (at least <see cref="Overhead"/> + payload bytes) and
    /// returns its length.</summary>
    public static int EncodeTo(Span<byte> dest, LogRecordType type, long index, long term, ReadOnlySpan<byte> payload)
    {
        dest[0] = (byte)type;
        BinaryPrimitives.WriteInt64LittleEndian(dest.Slice(1), index);
        BinaryPrimitives.WriteInt64LittleEndian(dest.Slice(9), term);
        BinaryPrimitives.WriteInt32LittleEndian(dest.Slice(17), payload.Length);
        payload.CopyTo(dest.Slice(Header));
        int end = Header + payload.Length;
        BinaryPrimitives.WriteUInt32LittleEndian(dest.Slice(end), Crc32C.Compute(dest.Slice(0, end)));
        return end + 4;
    }

    /// <summary>The length of the record that starts <paramref name="data"/>, read from its header: 0 if fewer
    /// than a header's bytes are there, -1 if the header cannot start a record (unknown type, negative length).
    /// The checksum is not checked: see <see cref="Check"/>.</summary>
    public static int LengthAt(ReadOnlySpan<byte> data)
    {
        if (data.Length < Header) return 0;
        if (data[0] is < (byte)LogRecordType.Entry or > (byte)LogRecordType.Commit) return -1;
        int plen = BinaryPrimitives.ReadInt32LittleEndian(data.Slice(17));
        return plen < 0 || plen > int.MaxValue - Overhead ? -1 : Overhead + plen;
    }

    /// <summary>Whether <paramref name="record"/> (exactly one record's bytes, as <see cref="LengthAt"/> measured)
    /// matches its checksum.</summary>
    public static bool Check(ReadOnlySpan<byte> record) =>
        BinaryPrimitives.ReadUInt32LittleEndian(record.Slice(record.Length - 4)) == Crc32C.Compute(record.Slice(0, record.Length - 4));

    /// <summary>The type, index and term of a checked record.</summary>
    public static (LogRecordType Type, long Index, long Term) HeaderOf(ReadOnlySpan<byte> record) =>
        ((LogRecordType)record[0], BinaryPrimitives.ReadInt64LittleEndian(record.Slice(1)), BinaryPrimitives.ReadInt64LittleEndian(record.Slice(9)));

    /// <summary>The payload of a checked record.</summary>
    public static ReadOnlySpan<byte> PayloadOf(ReadOnlySpan<byte> record) => record.Slice(Header, record.Length - Overhead);

    /// <summary>The record in the first <paramref name="length"/> bytes of <paramref name="data"/>, or null if they
    /// are not one whole record with a matching checksum. The type is not checked.</summary>
    public static LogRecord? Decode(byte[] data, int length)
    {
        if (data is null || length < Overhead || length > data.Length) return null;
        var s = data.AsSpan(0, length);
        int plen = BinaryPrimitives.ReadInt32LittleEndian(s.Slice(17));
        if (plen < 0 || Overhead + plen != length) return null;
        int end = Header + plen;
        if (BinaryPrimitives.ReadUInt32LittleEndian(s.Slice(end)) != Crc32C.Compute(s.Slice(0, end))) return null;
        return new LogRecord((LogRecordType)s[0], BinaryPrimitives.ReadInt64LittleEndian(s.Slice(1)),
            BinaryPrimitives.ReadInt64LittleEndian(s.Slice(9)), s.Slice(Header, plen).ToArray());
    }

    /// <summary>The error for a record at <paramref name="address"/> that breaks the log's rules, naming the
    /// segment file (<c>raft.log.N</c>) it lies in.</summary>
    public static SkiffException Corrupt(string logPath, int segmentSizeBits, long address, string what)
    {
        long segment = address >> segmentSizeBits;
        return new SkiffException(ErrorKind.StorageCorrupted, $"{logPath}.{segment} (log address {address}): {what}");
    }
}
