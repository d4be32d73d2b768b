using Google.Protobuf;
using Skiff.Net.Storage;

namespace Skiff.Net.Runtime;

/// <summary>
/// The cluster this node belongs to, kept in its data directory. A founding node makes the id; a joining node learns
/// it from the member it joins through before asking to be added; a node whose directory predates cluster ids learns
/// it from the first peer message that carries one (or makes it when it leads and no one has). Once known it never
/// changes: peer messages and client calls from another cluster are refused.
/// </summary>
internal sealed class ClusterIdentity
{
    private readonly string _directory;
    private readonly object _gate = new();
    private Guid? _id;
    private ByteString _wire;

    /// <summary>The identity kept in <paramref name="directory"/> (none yet if it holds no <c>cluster-id</c> file).</summary>
    /// <exception cref="SkiffException">StorageCorrupted or StorageError when the file cannot be read.</exception>
    public ClusterIdentity(string directory)
    {
        _directory = directory;
        _id = ClusterIdFile.Read(directory);
        _wire = ToWire(_id);
    }

    /// <summary>The cluster id, or null while this node does not know it.</summary>
    public Guid? Id => Volatile.Read(ref _wire).IsEmpty ? null : _id;

    /// <summary>The id as peer messages carry it (16 bytes; empty while unknown).</summary>
    public ByteString Wire => Volatile.Read(ref _wire);

    /// <summary>Makes and keeps a new cluster id (a node founding a cluster); an id already known is kept.</summary>
    public Guid Found() => Adopt(Guid.NewGuid());

    /// <summary>Keeps <paramref name="id"/> as this node's cluster id if it has none; returns the id in force.</summary>
    /// <exception cref="SkiffException">StorageError when the id cannot be written.</exception>
    public Guid Adopt(Guid id)
    {
        lock (_gate)
        {
            if (_id is { } known) return known;
            ClusterIdFile.Write(_directory, id); // durable before any message or client sees it
            _id = id;
            Volatile.Write(ref _wire, ToWire(id));
            return id;
        }
    }

    /// <summary>Whether a peer message carrying <paramref name="wire"/> may be delivered: it names no cluster (a
    /// joiner that has not learned it yet), or this node's. A node that knows no cluster yet adopts the first it is
    /// told of: only a member of a cluster sends it messages.</summary>
    public bool Admits(ByteString wire)
    {
        if (wire.IsEmpty) return true;
        var mine = Volatile.Read(ref _wire);
        if (mine.IsEmpty)
        {
            if (wire.Length != 16) return false;
            Adopt(new Guid(wire.Span));
            mine = Volatile.Read(ref _wire);
        }
        return wire.Equals(mine);
    }

    /// <summary>Whether a client call expecting cluster <paramref name="expected"/> (a header value, null when the
    /// client sent none) may be served here.</summary>
    public bool AdmitsClient(string? expected) =>
        expected is null || Id is not { } mine || (Guid.TryParse(expected, out var id) && id == mine);

    private static ByteString ToWire(Guid? id) => id is { } g ? ByteString.CopyFrom(g.ToByteArray()) : ByteString.Empty;
}
