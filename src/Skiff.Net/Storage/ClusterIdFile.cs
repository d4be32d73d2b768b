namespace Skiff.Net.Storage;

/// <summary>
/// The id of the cluster a data directory belongs to, in a file of its own (<c>cluster-id</c>): made when a cluster
/// is founded, learned by a member when it joins, and never changed afterwards. It is what lets a member refuse
/// peers and clients of another cluster, such as a member that lost its directory and founded a new one at the
/// same address. A <see cref="SideFile"/>: magic "SKCI", format version 1, the 16-byte Guid, CRC-32C.
/// </summary>
internal static class ClusterIdFile
{
    /// <summary>The file's name inside the data directory.</summary>
    public const string FileName = "cluster-id";

    private const uint Magic = 0x49434B53; // "SKCI" little-endian
    private const int Version = 1;
    private const string What = "this member's cluster id";

    /// <summary>The cluster id kept in <paramref name="directory"/>, or null when none was ever written there.</summary>
    /// <exception cref="SkiffException">StorageCorrupted when the file is damaged; StorageError when it cannot be read.</exception>
    public static Guid? Read(string directory)
    {
        var path = Path.Combine(directory, FileName);
        if (SideFile.Read(path, Magic, Version, What) is not { } id) return null;
        if (id.Length != 16) throw new SkiffException(ErrorKind.StorageCorrupted, $"{path} is damaged: it must hold {What}");
        return new Guid(id);
    }

    /// <summary>Writes <paramref name="clusterId"/> durably (atomic replace, then the directory fsynced).</summary>
    /// <exception cref="SkiffException">StorageError when it cannot be written.</exception>
    public static void Write(string directory, Guid clusterId) =>
        SideFile.Write(Path.Combine(directory, FileName), Magic, Version, clusterId.ToByteArray());
}
