using System.Buffers.Binary;
using FASTER.core;
using Microsoft.Win32.SafeHandles;

namespace Skiff.Net.Storage;

/// <summary>
/// FasterLog commit metadata in one preallocated file with two checksummed slots, written in place with
/// <c>pwrite</c> + <c>fdatasync</c>. Compared with FASTER's default (a new file per commit, the old one deleted,
/// the directory never synced) a commit costs one data sync instead of several, and a crash or power loss at any
/// instant leaves at least the previous commit readable: the slot being written may be torn, the other is intact.
/// </summary>
/// <remarks>With <see cref="WriteOnlyWhenForced"/> (used with FASTER's fast-commit mode, where commit records live
/// in the log itself) most commits skip the metadata write entirely; FASTER's recovery scans forward from the last
/// metadata commit for later commit records.</remarks>
internal sealed class SlotCommitManager : ILogCommitManager, IDisposable
{
    private const uint Magic = 0x534B434D; // "SKCM"
    private const int SlotSize = 4096;
    private const int HeaderSize = 16; // magic u32, length i32, commitNum i64
    private readonly string _path;
    private readonly SafeFileHandle _handle;
    private readonly byte[] _buffer = new byte[SlotSize];
    private long _commitsSinceWrite;

    /// <summary>When true, metadata is written only when FASTER forces it (begin address moved, cookie, first
    /// commit) or every <see cref="ForcedWriteInterval"/> commits; meant for fast-commit mode.</summary>
    public bool WriteOnlyWhenForced { get; }

    /// <summary>In <see cref="WriteOnlyWhenForced"/> mode, write metadata at least this often (bounds the forward
    /// scan at recovery).</summary>
    public int ForcedWriteInterval { get; init; } = 4096;

    /// <summary>log2 of the log's segment size, when the log's segment files live beside the commit file: the
    /// first commit reaching into a segment syncs the directory first, so the new segment file's entry is durable
    /// before any commit claims data in it. 0: do not track segments.</summary>
    public int SegmentSizeBits { get; init; }

    private long _syncedSegment = -1;

    /// <summary>Number of metadata writes (each one fdatasync) so far; for the benchmark.</summary>
    public long MetadataWrites { get; private set; }

    /// <summary>Opens or creates the commit file.</summary>
    /// <param name="path">The commit file, e.g. <c>log/commit.meta</c>.</param>
    /// <param name="writeOnlyWhenForced">See <see cref="WriteOnlyWhenForced"/>.</param>
    public SlotCommitManager(string path, bool writeOnlyWhenForced)
    {
        _path = path;
        WriteOnlyWhenForced = writeOnlyWhenForced;
        bool created = !File.Exists(path);
        _handle = StorageIo.Guard(path, () => File.OpenHandle(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None));
        if (created || RandomAccess.GetLength(_handle) < 2 * SlotSize)
        {
            StorageIo.Guard(path, () => RandomAccess.Write(_handle, new byte[2 * SlotSize], 0));
            StorageIo.Fdatasync(_handle, path);
            StorageIo.FsyncDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        }
    }

    /// <inheritdoc />
    public void Commit(long beginAddress, long untilAddress, byte[] commitMetadata, long commitNum, bool forceWriteMetadata)
    {
        if (SegmentSizeBits > 0 && untilAddress > 0 && (untilAddress - 1) >> SegmentSizeBits > _syncedSegment)
        {
            // FASTER created the segment file when it first wrote to it; make its directory entry durable.
            StorageIo.FsyncDirectory(Path.GetDirectoryName(Path.GetFullPath(_path))!);
            _syncedSegment = (untilAddress - 1) >> SegmentSizeBits;
        }
        if (WriteOnlyWhenForced && !forceWriteMetadata && MetadataWrites > 0 && ++_commitsSinceWrite < ForcedWriteInterval)
            return;
        _commitsSinceWrite = 0;
        if (commitMetadata.Length > SlotSize - HeaderSize - 4)
            throw new SkiffException(ErrorKind.StorageError, $"commit metadata of {commitMetadata.Length} bytes does not fit a slot of {_path}");
        var span = _buffer.AsSpan();
        span.Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(span, Magic);
        BinaryPrimitives.WriteInt32LittleEndian(span.Slice(4), commitMetadata.Length);
        BinaryPrimitives.WriteInt64LittleEndian(span.Slice(8), commitNum);
        commitMetadata.CopyTo(span.Slice(HeaderSize));
        int end = HeaderSize + commitMetadata.Length;
        BinaryPrimitives.WriteUInt32LittleEndian(span.Slice(end), Crc32C.Compute(span.Slice(0, end)));
        // Round the write up to 512 bytes: one sector-sized write per commit.
        int length = Math.Min(SlotSize, (end + 4 + 511) & ~511);
        long offset = (commitNum & 1) * SlotSize;
        StorageIo.Guard(_path, () => RandomAccess.Write(_handle, new ReadOnlySpan<byte>(_buffer, 0, length), offset));
        StorageIo.Fdatasync(_handle, _path);
        MetadataWrites++;
    }

    private (long commitNum, byte[] metadata)? ReadSlot(int slot)
    {
        var buf = new byte[SlotSize];
        int n = StorageIo.Guard(_path, () => RandomAccess.Read(_handle, buf, slot * (long)SlotSize));
        if (n < HeaderSize + 4) return null;
        var span = buf.AsSpan(0, n);
        if (BinaryPrimitives.ReadUInt32LittleEndian(span) != Magic) return null;
        int len = BinaryPrimitives.ReadInt32LittleEndian(span.Slice(4));
        if (len < 0 || HeaderSize + len + 4 > n) return null;
        uint crc = BinaryPrimitives.ReadUInt32LittleEndian(span.Slice(HeaderSize + len));
        if (crc != Crc32C.Compute(span.Slice(0, HeaderSize + len))) return null;
        return (BinaryPrimitives.ReadInt64LittleEndian(span.Slice(8)), span.Slice(HeaderSize, len).ToArray());
    }

    /// <inheritdoc />
    public byte[]? GetCommitMetadata(long commitNum)
    {
        for (int s = 0; s < 2; s++)
            if (ReadSlot(s) is { } r && r.commitNum == commitNum) return r.metadata;
        return null;
    }

    /// <inheritdoc />
    public IEnumerable<long> ListCommits()
    {
        var found = new List<long>();
        for (int s = 0; s < 2; s++)
            if (ReadSlot(s) is { } r) found.Add(r.commitNum);
        found.Sort();
        found.Reverse();
        return found;
    }

    /// <inheritdoc />
    public void RemoveCommit(long commitNum)
    {
        // Slots are overwritten in place; nothing to delete.
    }

    /// <inheritdoc />
    public void RemoveAllCommits()
    {
        StorageIo.Guard(_path, () => RandomAccess.Write(_handle, new byte[2 * SlotSize], 0));
        StorageIo.Fdatasync(_handle, _path);
    }

    /// <inheritdoc />
    public void OnRecovery(long commitNum)
    {
    }

    /// <inheritdoc />
    public void Dispose() => _handle.Dispose();
}
