using System.Buffers.Binary;
using System.Numerics;

namespace Skiff.Net.Storage;

/// <summary>CRC-32C (Castagnoli), hardware-accelerated through <see cref="BitOperations.Crc32C(uint, ulong)"/>
/// where the CPU has it (SSE4.2 / ARMv8 CRC), with the runtime's own software fallback elsewhere.</summary>
internal static class Crc32C
{
    /// <summary>Continues a CRC over more bytes. Start with <c>0</c>; the result of one call feeds the next.</summary>
    /// <param name="crc">The CRC so far (0 for a fresh one).</param>
    /// <param name="data">The bytes to add.</param>
    /// <returns>The CRC of everything so far.</returns>
    public static uint Append(uint crc, ReadOnlySpan<byte> data)
    {
        uint c = ~crc;
        while (data.Length >= 8)
        {
            c = BitOperations.Crc32C(c, BinaryPrimitives.ReadUInt64LittleEndian(data));
            data = data.Slice(8);
        }
        foreach (var b in data) c = BitOperations.Crc32C(c, b);
        return ~c;
    }

    /// <summary>The CRC-32C of the given bytes.</summary>
    /// <param name="data">The bytes.</param>
    /// <returns>Their CRC-32C.</returns>
    public static uint Compute(ReadOnlySpan<byte> data) => Append(0, data);
}
