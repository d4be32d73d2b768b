using System.Buffers.Binary;
using System.Text;

namespace Skiff.Net.Storage;

/// <summary>
/// The indexes the state machine keeps in memory (the ordered keys, the change history's indexes and sizes, the
/// client sessions' ids), written beside each checkpoint so that opening the store reads them instead of scanning
/// the whole hybrid log (<see cref="KeyIndexRebuilder"/>, seconds at a million keys). One file per checkpoint,
/// <c>checkpoints/skiff-index/{token}</c>, so a snapshot's manifest carries it to the followers that install it.
/// <para>Format, little-endian: magic "SKIX", version (u32), the applied index it describes (i64), the counts of
/// keys, history records and sessions (i32 each); each key as its UTF-8 length (7-bit varint) and bytes, in ordinal
/// order; each history record as index (i64) and size (i32); each session id (i64); then the CRC-32C of all of it.
/// A file that is missing, damaged, or describes another applied index than the checkpoint's is not used: the caller
/// rebuilds from the log instead.</para>
/// </summary>
internal static class KeyIndexFile
{
    private const uint Magic = 0x58494B53; // "SKIX"
    private const uint Version = 1;
    private const string Folder = "skiff-index";
    // Strict both ways: a key that is not valid UTF-16 (a lone surrogate, possible through the embedded API) would not
    // come back as itself, so such an index is not written (opening rebuilds it), and bad bytes are damage.
    // (UTF8Encoding's throwOnInvalidBytes does not make its encoder throw: a lone surrogate became U+FFFD.)
    private static readonly Encoding Strict = Encoding.GetEncoding("utf-8", EncoderFallback.ExceptionFallback, DecoderFallback.ExceptionFallback);

    /// <summary>What a file holds.</summary>
    /// <param name="AppliedIndex">The applied index of the checkpoint it belongs to.</param>
    /// <param name="Keys">The live keys, in ordinal order.</param>
    /// <param name="History">The change history's records (index, size), ascending.</param>
    /// <param name="Sessions">The ids of the stored client sessions.</param>
    public sealed record Contents(long AppliedIndex, string[] Keys, (long Index, int Size)[] History, long[] Sessions);

    /// <summary>The file of checkpoint <paramref name="token"/> in the store directory <paramref name="dir"/>.</summary>
    public static string PathOf(string dir, Guid token) => Path.Combine(dir, "checkpoints", Folder, token.ToString());

    /// <summary>Writes the file of checkpoint <paramref name="token"/> (not synced: the checkpoint's files are synced
    /// together, <see cref="CheckpointFiles.MakeDurable"/>); false, writing nothing, if a key is not valid UTF-16.</summary>
    public static bool Write(string dir, Guid token, Contents contents)
    {
        // Streamed to the file through a 64 KiB buffer, the CRC taken on the way: the file is ~17 bytes a key,
        // which a whole-file buffer would add to the heap at every snapshot.
        var path = PathOf(dir, token);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        using var file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1);
        var crc = new CrcStream(file);
        try
        {
            using (var buffered = new BufferedStream(crc, 1 << 16)) Encode(buffered, contents);
        }
        catch (EncoderFallbackException)
        {
            file.Dispose();
            File.Delete(path);
            return false;
        }
        Span<byte> trailer = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(trailer, crc.Crc);
        file.Write(trailer);
        return true;
    }

    private static void Encode(Stream buffer, Contents contents)
    {
        using (var w = new BinaryWriter(buffer, Encoding.UTF8, leaveOpen: true))
        {
            w.Write(Magic);
            w.Write(Version);
            w.Write(contents.AppliedIndex);
            w.Write(contents.Keys.Length);
            w.Write(contents.History.Length);
            w.Write(contents.Sessions.Length);
            var bytes = new byte[4 * KvStateMachine.MaxKeyBytes + 16];
            foreach (var key in contents.Keys)
            {
                if (Strict.GetMaxByteCount(key.Length) > bytes.Length) bytes = new byte[Strict.GetMaxByteCount(key.Length)];
                var n = Strict.GetBytes(key, bytes);
                w.Write7BitEncodedInt(n);
                w.Write(bytes, 0, n);
            }
            foreach (var (index, size) in contents.History)
            {
                w.Write(index);
                w.Write(size);
            }
            foreach (var id in contents.Sessions) w.Write(id);
        }
    }

    /// <summary>Reads the file of checkpoint <paramref name="token"/>; null if it is missing, damaged, or not of
    /// <paramref name="appliedIndex"/> (then <paramref name="why"/> says which).</summary>
    public static Contents? TryRead(string dir, Guid token, long appliedIndex, out string why)
    {
        var path = PathOf(dir, token);
        if (!File.Exists(path))
        {
            why = "no index file";
            return null;
        }
        try
        {
            var data = File.ReadAllBytes(path);
            if (data.Length < 32 || Crc32C.Compute(data.AsSpan(0, data.Length - 4)) != BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(data.Length - 4)))
            {
                why = "the index file is damaged (checksum)";
                return null;
            }
            var r = new SpanReader(data.AsSpan(0, data.Length - 4));
            if (r.U32() != Magic || r.U32() != Version)
            {
                why = "the index file is of another format";
                return null;
            }
            var applied = r.I64();
            if (applied != appliedIndex)
            {
                why = $"the index file describes index {applied}, the checkpoint {appliedIndex}";
                return null;
            }
            int keyCount = r.I32(), historyCount = r.I32(), sessionCount = r.I32();
            if (keyCount < 0 || historyCount < 0 || sessionCount < 0 || (long)keyCount + 12L * historyCount + 8L * sessionCount > data.Length)
            {
                why = "the index file's counts do not fit it";
                return null;
            }
            var keys = new string[keyCount];
            var history = new (long, int)[historyCount];
            var sessions = new long[sessionCount];
            for (var i = 0; i < keys.Length; i++)
            {
                var key = Strict.GetString(r.Bytes(r.VarInt()));
                if (i > 0 && string.CompareOrdinal(keys[i - 1], key) >= 0)
                {
                    why = "the index file's keys are out of order";
                    return null;
                }
                keys[i] = key;
            }
            for (var i = 0; i < history.Length; i++) history[i] = (r.I64(), r.I32());
            for (var i = 0; i < sessions.Length; i++) sessions[i] = r.I64();
            if (!r.AtEnd)
            {
                why = "the index file has bytes after its contents";
                return null;
            }
            why = "";
            return new Contents(applied, keys, history, sessions);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or OverflowException or FormatException)
        {
            why = $"the index file cannot be read: {e.Message}";
            return null;
        }
    }

    /// <summary>Fills <paramref name="index"/> from the file of checkpoint <paramref name="token"/> and says what else
    /// it holds; null, with <paramref name="source"/> saying why, if the file cannot be used (the caller rebuilds).</summary>
    public static KeyIndexRebuilder.Found? TryLoad(string dir, Guid token, long appliedIndex, KeyIndex index, ref string source)
    {
        if (TryRead(dir, token, appliedIndex, out var why) is not { } file)
        {
            source = why;
            return null;
        }
        index.LoadSorted(file.Keys);
        return new KeyIndexRebuilder.Found(file.History, [.. file.Sessions]);
    }

    /// <summary>Deletes the files of checkpoints other than <paramref name="token"/> (once that one is durable).</summary>
    public static void DeleteOthers(string dir, Guid token)
    {
        var folder = Path.Combine(dir, "checkpoints", Folder);
        if (!Directory.Exists(folder)) return;
        var keep = token.ToString();
        foreach (var file in Directory.EnumerateFiles(folder))
            if (Path.GetFileName(file) != keep) File.Delete(file);
        StorageIo.FsyncDirectory(folder);
    }

    /// <summary>Passes writes on to the file and keeps the CRC-32C of everything written.</summary>
    private sealed class CrcStream(Stream inner) : Stream
    {
        public uint Crc { get; private set; }

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            Crc = Crc32C.Append(Crc, buffer);
            inner.Write(buffer);
        }

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override void Flush() => inner.Flush();

        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }

    /// <summary>Reads the file's fields in order; running past the end throws <see cref="EndOfStreamException"/>.</summary>
    private ref struct SpanReader(ReadOnlySpan<byte> data)
    {
        private readonly ReadOnlySpan<byte> _data = data;
        private int _at;

        public readonly bool AtEnd => _at == _data.Length;

        public ReadOnlySpan<byte> Bytes(int n)
        {
            if (n < 0 || n > _data.Length - _at) throw new EndOfStreamException();
            var bytes = _data.Slice(_at, n);
            _at += n;
            return bytes;
        }

        public uint U32() => BinaryPrimitives.ReadUInt32LittleEndian(Bytes(4));

        public int I32() => BinaryPrimitives.ReadInt32LittleEndian(Bytes(4));

        public long I64() => BinaryPrimitives.ReadInt64LittleEndian(Bytes(8));

        /// <summary>A 7-bit varint as <see cref="BinaryWriter.Write7BitEncodedInt"/> writes it.</summary>
        public int VarInt()
        {
            var value = 0;
            for (var shift = 0; shift < 35; shift += 7)
            {
                var b = Bytes(1)[0];
                value |= (b & 0x7f) << shift;
                if (b < 0x80) return value;
            }
            throw new FormatException("a length in the index file is too long");
        }
    }
}
