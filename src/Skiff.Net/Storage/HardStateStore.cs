using System.Buffers.Binary;
using Microsoft.FSharp.Core;
using Skiff.Core;

namespace Skiff.Net.Storage;

/// <summary>
/// The node's identity (a Guid created once) and its Raft hard state, in one small file with two checksummed
/// slots written alternately in place and fsynced. A crash at any instant tears at most the slot being written;
/// the other holds the previous state, so opening always finds a valid state (the newest whose write finished).
/// </summary>
internal sealed class HardStateStore : IDisposable
{
    private const uint Magic = 0x534B4853; // "SKHS"
    private const int SlotSize = 4096;
    private const int RecordSize = 64; // magic, seq, nodeId, term, hasVote, votedFor, crc
    private readonly string _path;
    private readonly IWalFile _file;
    private readonly object _gate = new();
    private long _seq;
    private int _slot; // the slot holding the current state: a save writes the other one

    /// <summary>This node's identity, created the first time the directory was opened.</summary>
    public Guid NodeId { get; }

    /// <summary>The last durably saved hard state.</summary>
    public HardState State { get; private set; }

    private HardStateStore(string path, IWalFile file, Guid nodeId, long seq, int slot, HardState state)
    {
        _slot = slot;
        _path = path;
        _file = file;
        NodeId = nodeId;
        _seq = seq;
        State = state;
    }

    /// <summary>Opens the hard-state file, creating it (with a fresh node id) atomically if it does not exist.</summary>
    /// <param name="path">The file, e.g. <c>&lt;data dir&gt;/hardstate</c>.</param>
    /// <param name="fileSystem">The file system (tests record it to replay power losses); null for the real one.</param>
    /// <returns>The store.</returns>
    /// <exception cref="SkiffException"><see cref="ErrorKind.StorageCorrupted"/> if neither slot is valid.</exception>
    public static HardStateStore Open(string path, IWalFileSystem? fileSystem = null)
    {
        var fs = fileSystem ?? RealWalFileSystem.Instance;
        var dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        var name = Path.GetFileName(path);
        if (!fs.List(dir, name).Contains(name))
        {
            // Made whole beside it and renamed over, so a crash leaves no file or a valid one, never a torn one.
            var initial = new byte[2 * SlotSize];
            Encode(initial.AsSpan(0, RecordSize), 1, Guid.NewGuid(), new HardState(0, FSharpOption<Guid>.None));
            var temp = path + ".tmp";
            using (var t = fs.Open(temp, create: true))
            {
                t.Truncate(0);
                t.Write(0, [initial]);
                t.Sync();
            }
            fs.Rename(temp, path);
            fs.SyncDirectory(dir);
        }
        var file = fs.Open(path, create: false);
        try
        {
            var buf = new byte[2 * SlotSize];
            int n = StorageIo.Guard(path, () => file.Read(0, buf));
            (long seq, Guid id, HardState st)? best = null;
            int slot = 0;
            for (int s = 0; s < 2; s++)
            {
                if (n < s * SlotSize + RecordSize) continue;
                if (Decode(buf.AsSpan(s * SlotSize, RecordSize)) is { } r && (best is null || r.seq > best.Value.seq))
                    (best, slot) = (r, s);
            }
            if (best is null)
                throw new SkiffException(ErrorKind.StorageCorrupted, $"hard state file {path} has no valid slot");
            return new HardStateStore(path, file, best.Value.id, best.Value.seq, slot, best.Value.st);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>Durably records a new hard state; returns once it is on disk.</summary>
    /// <param name="state">The state to save.</param>
    public void Save(HardState state)
    {
        lock (_gate)
        {
            long seq = _seq + 1;
            var rec = new byte[RecordSize];
            Encode(rec, seq, NodeId, state);
            // Never over the current state: a torn write then leaves it whole. (Not by the sequence's parity: a file
            // made before held its first state, sequence 1, in slot 0, and the first save, 2, went over it.)
            int slot = 1 - _slot;
            _file.Write(slot * SlotSize, [rec]);
            _file.Sync();
            _seq = seq;
            _slot = slot;
            State = state;
        }
    }

    private static void Encode(Span<byte> s, long seq, Guid nodeId, HardState st)
    {
        s.Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(s, Magic);
        BinaryPrimitives.WriteInt64LittleEndian(s.Slice(4), seq);
        nodeId.TryWriteBytes(s.Slice(12, 16));
        BinaryPrimitives.WriteInt64LittleEndian(s.Slice(28), st.Term);
        var voted = FSharpOption<Guid>.get_IsSome(st.VotedFor);
        s[36] = voted ? (byte)1 : (byte)0;
        (voted ? st.VotedFor!.Value : Guid.Empty).TryWriteBytes(s.Slice(37, 16));
        BinaryPrimitives.WriteUInt32LittleEndian(s.Slice(RecordSize - 4), Crc32C.Compute(s.Slice(0, RecordSize - 4)));
    }

    private static (long seq, Guid id, HardState st)? Decode(ReadOnlySpan<byte> s)
    {
        if (BinaryPrimitives.ReadUInt32LittleEndian(s) != Magic) return null;
        if (BinaryPrimitives.ReadUInt32LittleEndian(s.Slice(RecordSize - 4)) != Crc32C.Compute(s.Slice(0, RecordSize - 4))) return null;
        var seq = BinaryPrimitives.ReadInt64LittleEndian(s.Slice(4));
        var id = new Guid(s.Slice(12, 16));
        var term = BinaryPrimitives.ReadInt64LittleEndian(s.Slice(28));
        var vote = s[36] == 1 ? FSharpOption<Guid>.Some(new Guid(s.Slice(37, 16))) : FSharpOption<Guid>.None;
        return (seq, id, new HardState(term, vote));
    }

    /// <inheritdoc />
    public void Dispose() => _file.Dispose();
}
