using System.Buffers.Binary;

namespace Skiff.Net.Storage;

/// <summary>
/// The id of the cluster a data directory belongs to, in a file of its own (<c>cluster-id</c>): made when a cluster
/// is founded, learned by a member when it joins, and never changed afterwards. It is what lets a member refuse
/// peers and clients of another cluster, such as a member that lost its directory and founded a new one at the
/// same address. Format: magic "SKCI", format version, the 16-byte Guid, CRC-32C of the preceding bytes.
/// </summary>
internal static class ClusterIdFile
{
    /// <summary>The file's name inside the data directory.</summary>
    public const string FileName = "cluster-id";

    private const uint Magic = 0x49434B53; // "SKCI" little-endian
    private const int Version = 1;
    private const int Size = 4 + 4 + 16 + 4;

    /// <summary>The cluster id kept in <paramref name="directory"/>, or null when none was ever written there.</summary>
    /// <exception cref="SkiffException">StorageCorrupted when the file is damaged; StorageError when it cannot be read.</exception>
    public static Guid? Read(string directory)
    {
        var path = Path.Combine(directory, FileName);
        if (!File.Exists(path)) return null;
        var bytes = StorageIo.Guard(path, () => File.ReadAllBytes(path));
        if (bytes.Length != Size
            || BinaryPrimitives.ReadUInt32LittleEndian(bytes) != Magic
            || BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(4)) != Version
            || BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(Size - 4)) != Crc32C.Compute(bytes.AsSpan(0, Size - 4)))
            throw new SkiffException(ErrorKind.StorageCorrupted, $"{path} is damaged: it must hold this member's cluster id");
        return new Guid(bytes.AsSpan(8, 16));
    }

    /// <summary>Writes <paramref name="clusterId"/> durably (atomic replace, then the directory fsynced).</summary>
    /// <exception cref="SkiffException">StorageError when it cannot be written.</exception>
    public static void Write(string directory, Guid clusterId)
    {
        Span<byte> bytes = stackalloc byte[Size];
        BinaryPrimitives.WriteUInt32LittleEndian(bytes, Magic);
        BinaryPrimitives.WriteInt32LittleEndian(bytes[4..], Version);
        clusterId.TryWriteBytes(bytes.Slice(8, 16));
        BinaryPrimitives.WriteUInt32LittleEndian(bytes[(Size - 4)..], Crc32C.Compute(bytes[..(Size - 4)]));
        StorageIo.WriteAtomically(Path.Combine(directory, FileName), bytes);
    }
}
