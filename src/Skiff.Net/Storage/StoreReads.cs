using FASTER.core;

namespace Skiff.Net.Storage;

/// <summary>What a read of the store gives: the value, and the address of the record it came from.</summary>
/// <param name="Value">The value's bytes.</param>
/// <param name="Address">The logical address of the record the value was read from.</param>
internal readonly record struct StoreRead(byte[] Value, long Address);

/// <summary>
/// The store's read callbacks: the value as a byte array (as FASTER's <c>SpanByteFunctions_ByteArrayOutput</c> gives
/// it) together with the address of the record it was read from.
/// <para>Why the address comes from here: compaction asks whether the record it scanned is still its key's newest,
/// by comparing addresses. FASTER's <see cref="RecordMetadata"/> of a read that went to disk carries the address the
/// read started at (the head of the key's hash chain), not that of the record found: when another key's newer record
/// shares the chain, the two differ. Compaction then took a live record for a superseded one and dropped it. A store
/// larger than its memory lost 780 of 2,000 keys in one pass (issue 16; the test in DiskBoundTests). The address
/// FASTER passes to the read callback is that of the record read, on disk as in memory.</para>
/// </summary>
internal sealed class StoreFunctions : SpanByteFunctions<SpanByte, StoreRead, Empty>
{
    /// <inheritdoc />
    public override bool SingleReader(ref SpanByte key, ref SpanByte input, ref SpanByte value, ref StoreRead dst, ref ReadInfo readInfo)
    {
        dst = new StoreRead(value.ToByteArray(), readInfo.Address);
        return true;
    }

    /// <inheritdoc />
    public override bool ConcurrentReader(ref SpanByte key, ref SpanByte input, ref SpanByte value, ref StoreRead dst, ref ReadInfo readInfo)
    {
        dst = new StoreRead(value.ToByteArray(), readInfo.Address);
        return true;
    }
}
