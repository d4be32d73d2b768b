using System.Buffers.Binary;

namespace Skiff.Net.Storage;

/// <summary>
/// Address ranges of the Raft log whose records are void: what lay between a hole and FASTER's recovered tail
/// after a crash in the middle of a commit. FASTER writes the pages of one flush concurrently, so a crash can leave
/// a later page written and the end of an earlier one not; its recovery steps over the zeroed bytes and accepts
/// the records (and commit record) after them. No commit after such a hole completed, so nothing there was
/// acknowledged; the range is recorded here (atomically, before anything is appended after it) so later
/// recoveries skip it instead of mistaking it, or what follows it, for corruption.
/// <para>File: <c>SKVOID01</c>, count (i32), then (from i64, until i64) pairs, then CRC32C of all before it.</para>
/// </summary>
internal sealed class VoidRanges
{
    private static readonly byte[] Magic = "SKVOID01"u8.ToArray();
    private readonly string _path;
    private readonly List<(long From, long Until)> _ranges = new();

    private VoidRanges(string path) => _path = path;

    /// <summary>The recorded ranges, [From, Until) in log addresses.</summary>
    public IReadOnlyList<(long From, long Until)> Ranges => _ranges;

    /// <summary>Reads the file in <paramref name="dir"/> (none yet: no ranges).</summary>
    /// <exception cref="SkiffException"><see cref="ErrorKind.StorageCorrupted"/> if the file fails its checksum
    /// (it is replaced atomically, so that is not a torn write).</exception>
    public static VoidRanges Load(string dir)
    {
        var voids = new VoidRanges(Path.Combine(dir, "log.voids"));
        if (!File.Exists(voids._path)) return voids;
        var bytes = StorageIo.Guard(voids._path, () => File.ReadAllBytes(voids._path));
        var s = bytes.AsSpan();
        bool ok = s.Length >= Magic.Length + 8 && s[..Magic.Length].SequenceEqual(Magic);
        int count = ok ? BinaryPrimitives.ReadInt32LittleEndian(s[Magic.Length..]) : -1;
        int end = Magic.Length + 4 + 16 * Math.Max(count, 0);
        ok = ok && count >= 0 && s.Length == end + 4
             && BinaryPrimitives.ReadUInt32LittleEndian(s[end..]) == Crc32C.Compute(s[..end]);
        if (!ok) throw new SkiffException(ErrorKind.StorageCorrupted, $"{voids._path}: checksum mismatch");
        for (int i = 0; i < count; i++)
        {
            var at = s[(Magic.Length + 4 + 16 * i)..];
            voids._ranges.Add((BinaryPrimitives.ReadInt64LittleEndian(at), BinaryPrimitives.ReadInt64LittleEndian(at[8..])));
        }
        return voids;
    }

    /// <summary>Whether <paramref name="address"/> lies in a void range.</summary>
    public bool Contains(long address)
    {
        foreach (var (from, until) in _ranges)
            if (address >= from && address < until) return true;
        return false;
    }

    /// <summary>Records [<paramref name="from"/>, <paramref name="until"/>) durably (atomic replace of the file).</summary>
    public void Add(long from, long until)
    {
        _ranges.Add((from, until));
        var buf = new byte[Magic.Length + 4 + 16 * _ranges.Count + 4];
        var s = buf.AsSpan();
        Magic.CopyTo(s);
        BinaryPrimitives.WriteInt32LittleEndian(s[Magic.Length..], _ranges.Count);
        for (int i = 0; i < _ranges.Count; i++)
        {
            var at = s[(Magic.Length + 4 + 16 * i)..];
            BinaryPrimitives.WriteInt64LittleEndian(at, _ranges[i].From);
            BinaryPrimitives.WriteInt64LittleEndian(at[8..], _ranges[i].Until);
        }
        int end = buf.Length - 4;
        BinaryPrimitives.WriteUInt32LittleEndian(s[end..], Crc32C.Compute(s[..end]));
        StorageIo.Guard(_path, () => StorageIo.WriteAtomically(_path, buf));
    }
}
