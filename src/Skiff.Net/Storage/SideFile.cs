using System.Buffers.Binary;

namespace Skiff.Net.Storage;

/// <summary>
/// The one format of the data directory's small side files (the cluster id, each snapshot's configuration): a
/// 4-byte magic naming what the file holds, a format version (i32), the payload, and a CRC-32C of everything before
/// it, all little-endian, replaced atomically (written to a temporary file, fsynced, renamed, the directory
/// fsynced). A damaged file is <see cref="ErrorKind.StorageCorrupted"/>, never read as something else.
/// </summary>
internal static class SideFile
{
    private const int HeaderBytes = 8, TrailerBytes = 4;

    /// <summary>Writes <paramref name="payload"/> to <paramref name="path"/> durably, replacing what was there.</summary>
    /// <exception cref="SkiffException">StorageError when it cannot be written.</exception>
    public static void Write(string path, uint magic, int version, ReadOnlySpan<byte> payload)
    {
        var bytes = new byte[HeaderBytes + payload.Length + TrailerBytes];
        BinaryPrimitives.WriteUInt32LittleEndian(bytes, magic);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(4), version);
        payload.CopyTo(bytes.AsSpan(HeaderBytes));
        var body = bytes.AsSpan(0, bytes.Length - TrailerBytes);
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(body.Length), Crc32C.Compute(body));
        StorageIo.WriteAtomically(path, bytes);
    }

    /// <summary>Whether <paramref name="bytes"/> begin with <paramref name="magic"/>: a side file of that kind
    /// (damaged or not), rather than a file of another format.</summary>
    public static bool HasMagic(ReadOnlySpan<byte> bytes, uint magic) =>
        bytes.Length >= 4 && BinaryPrimitives.ReadUInt32LittleEndian(bytes) == magic;

    /// <summary>The payload of a side file's <paramref name="bytes"/> read from <paramref name="path"/>.</summary>
    /// <exception cref="SkiffException">StorageCorrupted, saying the file must hold <paramref name="what"/>, when
    /// the magic, the version or the checksum is wrong or the file is cut short.</exception>
    public static ReadOnlySpan<byte> Decode(string path, ReadOnlySpan<byte> bytes, uint magic, int version, string what)
    {
        if (bytes.Length < HeaderBytes + TrailerBytes
            || !HasMagic(bytes, magic)
            || BinaryPrimitives.ReadInt32LittleEndian(bytes[4..]) != version
            || BinaryPrimitives.ReadUInt32LittleEndian(bytes[^TrailerBytes..]) != Crc32C.Compute(bytes[..^TrailerBytes]))
            throw new SkiffException(ErrorKind.StorageCorrupted, $"{path} is damaged: it must hold {what}");
        return bytes[HeaderBytes..^TrailerBytes];
    }

    /// <summary>The payload of the side file at <paramref name="path"/>, or null when there is no such file.</summary>
    /// <exception cref="SkiffException">StorageCorrupted when it is damaged (see <see cref="Decode"/>);
    /// StorageError when it cannot be read.</exception>
    public static byte[]? Read(string path, uint magic, int version, string what)
    {
        if (!File.Exists(path)) return null;
        var bytes = StorageIo.Guard(path, () => File.ReadAllBytes(path));
        return Decode(path, bytes, magic, version, what).ToArray();
    }
}
