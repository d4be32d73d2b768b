using System.Buffers.Binary;
using System.Text;

namespace Skiff.Net.Storage;

/// <summary>
/// Streams a snapshot as one byte sequence: <c>"SKSNAP01"</c>, a header (index, term, token, file manifest) with
/// its length, the files' bytes in manifest order, and a CRC-32C of everything before it. Read it in chunks of any
/// size with <see cref="Read"/> or <see cref="ReadChunk"/>.
/// </summary>
internal sealed class SnapshotReader : IDisposable
{
    internal static readonly byte[] Magic = "SKSNAP01"u8.ToArray();
    private readonly byte[] _header;
    private readonly List<(FileStream file, long length)> _files = new();
    private int _headerPos;
    private int _fileIndex;
    private long _filePos;
    private uint _crc;
    private readonly byte[] _trailer = new byte[4];
    private int _trailerPos = -1;

    /// <summary>The snapshot being streamed.</summary>
    public SnapshotInfo Snapshot { get; }

    /// <summary>Total length of the stream in bytes.</summary>
    public long Length { get; }

    internal SnapshotReader(string dir, SnapshotInfo snapshot)
    {
        Snapshot = snapshot;
        if (snapshot.Files.Count == 0)
            throw new ArgumentException("this snapshot has no file manifest", nameof(snapshot));
        var ms = new MemoryStream();
        var w = new BinaryWriter(ms, Encoding.UTF8);
        w.Write(snapshot.Index);
        w.Write(snapshot.Term);
        w.Write(snapshot.Token.ToByteArray());
        w.Write(snapshot.Files.Count);
        try
        {
            foreach (var (path, length) in snapshot.Files)
            {
                w.Write(path.Replace(Path.DirectorySeparatorChar, '/'));
                w.Write(length);
                var fs = new FileStream(Path.Combine(dir, path), FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 1);
                _files.Add((fs, length));
            }
        }
        catch (Exception e)
        {
            Dispose();
            if (e is IOException or UnauthorizedAccessException)
                throw new SkiffException(ErrorKind.StorageError, $"snapshot {snapshot.Token} of {dir} is no longer complete: {e.Message}", e);
            throw;
        }
        w.Flush();
        var body = ms.ToArray();
        _header = new byte[Magic.Length + 4 + body.Length];
        Magic.CopyTo(_header, 0);
        BinaryPrimitives.WriteInt32LittleEndian(_header.AsSpan(Magic.Length), body.Length);
        body.CopyTo(_header, Magic.Length + 4);
        Length = _header.Length + snapshot.TotalBytes + 4;
    }

    /// <summary>Fills <paramref name="buffer"/> with the next bytes of the stream.</summary>
    /// <param name="buffer">Where to put them.</param>
    /// <returns>How many bytes were written; 0 at the end.</returns>
    public int Read(Span<byte> buffer)
    {
        int written = 0;
        while (written < buffer.Length)
        {
            var dst = buffer.Slice(written);
            if (_headerPos < _header.Length)
            {
                int n = Math.Min(dst.Length, _header.Length - _headerPos);
                _header.AsSpan(_headerPos, n).CopyTo(dst);
                _crc = Crc32C.Append(_crc, dst.Slice(0, n));
                _headerPos += n;
                written += n;
            }
            else if (_fileIndex < _files.Count)
            {
                var (file, length) = _files[_fileIndex];
                if (_filePos >= length)
                {
                    _fileIndex++;
                    _filePos = 0;
                    continue;
                }
                int want = (int)Math.Min(dst.Length, length - _filePos);
                int n = RandomAccess.Read(file.SafeFileHandle, dst.Slice(0, want), _filePos);
                if (n <= 0)
                    throw new SkiffException(ErrorKind.StorageError, $"snapshot file {file.Name} is shorter than its manifest says");
                _crc = Crc32C.Append(_crc, dst.Slice(0, n));
                _filePos += n;
                written += n;
            }
            else
            {
                if (_trailerPos < 0)
                {
                    BinaryPrimitives.WriteUInt32LittleEndian(_trailer, _crc);
                    _trailerPos = 0;
                }
                if (_trailerPos >= 4) break;
                int n = Math.Min(dst.Length, 4 - _trailerPos);
                _trailer.AsSpan(_trailerPos, n).CopyTo(dst);
                _trailerPos += n;
                written += n;
            }
        }
        return written;
    }

    /// <summary>The next chunk of at most <paramref name="maxBytes"/> bytes, or an empty array at the end.</summary>
    /// <param name="maxBytes">Chunk size.</param>
    /// <returns>The chunk.</returns>
    public byte[] ReadChunk(int maxBytes)
    {
        var buf = new byte[maxBytes];
        int n = Read(buf);
        return n == maxBytes ? buf : buf.AsSpan(0, n).ToArray();
    }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var (f, _) in _files) f.Dispose();
        _files.Clear();
    }
}

/// <summary>
/// Receives a snapshot stream (from <see cref="SnapshotReader"/>) chunk by chunk into a staging directory beside
/// the store; <see cref="Complete"/> checks the checksum, fsyncs every file and directory, marks the staging
/// directory complete, then swaps it in with renames (each followed by a directory fsync) and reloads the state
/// machine. A crash at any point leaves either the old store or the new one: on open, a complete staging directory
/// is swapped in and an incomplete one is discarded.
/// </summary>
internal sealed class SnapshotInstaller : IDisposable
{
    private const string CompleteMarker = "SNAPSHOT-COMPLETE";
    private readonly KvStateMachine _owner;
    private readonly string _dir;
    private readonly string _staging;
    private readonly MemoryStream _headerBuffer = new();
    private int _headerLength = -1;
    private List<(string path, long length)>? _manifest;
    private FileStream? _current;
    private int _fileIndex;
    private long _filePos;
    private uint _crc;
    private readonly byte[] _trailer = new byte[4];
    private int _trailerPos;
    private bool _done;

    /// <summary>The snapshot's last included index, once the header has arrived (else -1).</summary>
    public long Index { get; private set; } = -1;

    /// <summary>The snapshot's term, once the header has arrived (else -1).</summary>
    public long Term { get; private set; } = -1;

    internal SnapshotInstaller(KvStateMachine owner, string dir)
    {
        _owner = owner;
        _dir = dir;
        _staging = dir + ".staging";
        StorageIo.Guard(_staging, () =>
        {
            if (Directory.Exists(_staging)) Directory.Delete(_staging, true);
            Directory.CreateDirectory(_staging);
        });
    }

    /// <summary>Adds the next bytes of the stream.</summary>
    /// <param name="chunk">Bytes, in stream order; any chunking.</param>
    /// <exception cref="SkiffException"><see cref="ErrorKind.DeserializeFailed"/> for a malformed stream.</exception>
    public void WriteChunk(ReadOnlySpan<byte> chunk)
    {
        if (_done) throw new InvalidOperationException("the installer is finished");
        try
        {
            while (chunk.Length > 0)
            {
                if (_manifest is null)
                {
                    int need = _headerLength < 0 ? SnapshotReader.Magic.Length + 4 - (int)_headerBuffer.Length
                        : SnapshotReader.Magic.Length + 4 + _headerLength - (int)_headerBuffer.Length;
                    int n = Math.Min(need, chunk.Length);
                    _headerBuffer.Write(chunk.Slice(0, n));
                    _crc = Crc32C.Append(_crc, chunk.Slice(0, n));
                    chunk = chunk.Slice(n);
                    if (n == need) ParseHeaderStep();
                }
                else if (_fileIndex < _manifest.Count)
                {
                    var (path, length) = _manifest[_fileIndex];
                    if (_current is null)
                    {
                        var full = Path.Combine(_staging, path);
                        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
                        _current = new FileStream(full, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16);
                    }
                    int n = (int)Math.Min(chunk.Length, length - _filePos);
                    _current.Write(chunk.Slice(0, n));
                    _crc = Crc32C.Append(_crc, chunk.Slice(0, n));
                    _filePos += n;
                    chunk = chunk.Slice(n);
                    if (_filePos == length) NextFile();
                }
                else
                {
                    if (_trailerPos >= 4) throw Bad("bytes after the end of the snapshot");
                    int n = Math.Min(4 - _trailerPos, chunk.Length);
                    chunk.Slice(0, n).CopyTo(_trailer.AsSpan(_trailerPos));
                    _trailerPos += n;
                    chunk = chunk.Slice(n);
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw StorageIo.Wrap(_staging, e);
        }
    }

    private void NextFile()
    {
        if (_current is not null)
        {
            // Through StorageIo, like every other sync of the data directory, so the power-loss tests see it.
            _current.Flush();
            StorageIo.Fdatasync(_current.SafeFileHandle, _current.Name);
            _current.Dispose();
            _current = null;
        }
        _fileIndex++;
        _filePos = 0;
        // Zero-length files are complete as soon as they start.
        while (_manifest is not null && _fileIndex < _manifest.Count && _manifest[_fileIndex].length == 0)
        {
            var full = Path.Combine(_staging, _manifest[_fileIndex].path);
            Directory.CreateDirectory(Path.GetDirectoryName(full)!);
            File.WriteAllBytes(full, Array.Empty<byte>());
            _fileIndex++;
        }
    }

    private void ParseHeaderStep()
    {
        var buf = _headerBuffer.GetBuffer().AsSpan(0, (int)_headerBuffer.Length);
        if (_headerLength < 0)
        {
            if (!buf.Slice(0, SnapshotReader.Magic.Length).SequenceEqual(SnapshotReader.Magic)) throw Bad("not a Skiff snapshot stream");
            _headerLength = BinaryPrimitives.ReadInt32LittleEndian(buf.Slice(SnapshotReader.Magic.Length));
            if (_headerLength < 0 || _headerLength > 64 << 20) throw Bad("implausible header length");
            if (_headerLength == 0) throw Bad("empty header");
            return;
        }
        using var r = new BinaryReader(new MemoryStream(buf.Slice(SnapshotReader.Magic.Length + 4).ToArray()), Encoding.UTF8);
        try
        {
            Index = r.ReadInt64();
            Term = r.ReadInt64();
            r.ReadBytes(16);
            int count = r.ReadInt32();
            var manifest = new List<(string, long)>();
            for (int i = 0; i < count; i++)
            {
                var path = r.ReadString();
                var length = r.ReadInt64();
                if (path.Length == 0 || path.StartsWith('/') || path.Split('/').Any(p => p is ".." or "." or "") || length < 0)
                    throw Bad($"unsafe or invalid path in manifest: {path}");
                if (length > MaxFileBytes) throw Bad($"implausible file length {length} for {path}");
                manifest.Add((path.Replace('/', Path.DirectorySeparatorChar), length));
            }
            // The whole snapshot must fit on the disk with room to spare before a byte of it is written: a stream
            // that announces more (a hostile or broken sender) is refused, not left to fill the disk.
            var total = manifest.Sum(m => m.Item2);
            new FreeSpaceCheck(_staging, total + ReserveBytes, min => $"a received snapshot of {total} bytes needs {min}").Ensure(force: true);
            _manifest = manifest;
            _fileIndex = -1;
            NextFile();
        }
        catch (EndOfStreamException)
        {
            throw Bad("truncated header");
        }
    }

    private const long MaxFileBytes = 1L << 40; // 1 TiB: no real snapshot file is larger; keeps the sum from overflowing
    private const long ReserveBytes = 64L << 20; // left free for the log and the hard state

    /// <summary>Checks that the stream arrived whole and intact (every file, the trailer, the checksum) without
    /// installing it: a received snapshot is handed to Raft only once this passes, so a truncated or corrupt stream
    /// is refused where it arrives instead of failing the install.</summary>
    /// <exception cref="SkiffException"><see cref="ErrorKind.DeserializeFailed"/> when it did not.</exception>
    public void Verify()
    {
        if (_manifest is null || _fileIndex < _manifest.Count || _trailerPos < 4) throw Bad("stream ended early");
        if (BinaryPrimitives.ReadUInt32LittleEndian(_trailer) != _crc) throw Bad("checksum mismatch");
    }

    private SkiffException Bad(string what) => new(ErrorKind.DeserializeFailed, $"snapshot stream into {_staging}: {what}");

    /// <summary>Verifies the stream was complete and intact, makes the staging directory durable, swaps it in
    /// atomically and reloads the state machine. Afterwards the caller resets the log to
    /// (<see cref="Index"/>, <see cref="Term"/>).</summary>
    public void Complete()
    {
        if (_done) throw new InvalidOperationException("the installer is finished");
        Verify();
        _done = true;
        StorageIo.Guard(_staging, () =>
        {
            foreach (var d in Directory.EnumerateDirectories(_staging, "*", SearchOption.AllDirectories))
                StorageIo.FsyncDirectory(d);
            // Its own entries too, before the marker: the marker's rename must not be durable without them.
            StorageIo.FsyncDirectory(_staging);
            StorageIo.WriteAtomically(Path.Combine(_staging, CompleteMarker), BitConverter.GetBytes(Index));
        });
        _owner.SwapIn(() => Swap(_dir));
    }

    /// <summary>Marks the durable staging directory of the closed store in <paramref name="dir"/> complete and swaps it
    /// in, as <see cref="Complete"/> does (the store's format conversion writes its result there).</summary>
    internal static void CommitStaging(string dir)
    {
        StorageIo.Guard(dir + ".staging", () => StorageIo.WriteAtomically(Path.Combine(dir + ".staging", CompleteMarker), BitConverter.GetBytes(0L)));
        Swap(dir);
    }

    /// <summary>Swaps a complete staging directory in: store → .old, staging → store, each rename made durable.</summary>
    private static void Swap(string dir)
    {
        var parent = Path.GetDirectoryName(dir)!;
        var staging = dir + ".staging";
        var old = dir + ".old";
        StorageIo.Guard(dir, () =>
        {
            File.Delete(Path.Combine(staging, CompleteMarker + ".tmp"));
            // The staging directory's own entry must be durable before the store is moved away: it was created
            // without a sync of the parent, and a power loss that kept the move but not the staging directory
            // would leave neither store (the power-loss test's images found it).
            StorageIo.FsyncDirectory(parent);
            if (Directory.Exists(old)) Directory.Delete(old, true);
            if (Directory.Exists(dir)) Directory.Move(dir, old);
            StorageIo.FsyncDirectory(parent);
            Directory.Move(staging, dir);
            StorageIo.FsyncDirectory(parent);
            File.Delete(Path.Combine(dir, CompleteMarker));
            // Absent when a power loss cut an earlier swap between its two moves: this one found no store to move.
            if (Directory.Exists(old)) Directory.Delete(old, true);
        });
    }

    /// <summary>At open: completes a swap that a crash interrupted, or discards an incomplete staging directory.</summary>
    internal static void FinishInterruptedInstall(string dir)
    {
        var staging = dir + ".staging";
        var old = dir + ".old";
        StorageIo.Guard(dir, () =>
        {
            if (Directory.Exists(staging))
            {
                if (File.Exists(Path.Combine(staging, CompleteMarker))) Swap(dir);
                else Directory.Delete(staging, true);
            }
            // No store but the one moved aside, and no complete snapshot to replace it: the swap was cut before its
            // staging directory was durable, so the old store is still the truth. Never delete the only store.
            if (!Directory.Exists(dir) && Directory.Exists(old))
            {
                Directory.Move(old, dir);
                StorageIo.FsyncDirectory(Path.GetDirectoryName(dir)!);
            }
            if (Directory.Exists(old)) Directory.Delete(old, true);
            if (File.Exists(Path.Combine(dir, CompleteMarker))) File.Delete(Path.Combine(dir, CompleteMarker));
        });
    }

    /// <summary>Abandons an unfinished install, deleting the staging directory.</summary>
    public void Dispose()
    {
        _current?.Dispose();
        _current = null;
        if (!_done)
        {
            _done = true;
            try { Directory.Delete(_staging, true); } catch (IOException) { }
        }
    }
}
