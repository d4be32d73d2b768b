using System.Buffers.Binary;
using Google.Protobuf;
using Microsoft.FSharp.Core;
using Skiff.Core;
using Skiff.Net.Protocol;

namespace Skiff.Net.Runtime;

/// <summary>A simple durable log: an append-only file of length-prefixed records (entries, truncations,
/// compactions) replayed into memory on open. Used until the FASTER log is wired in, and by tests.</summary>
public sealed class FileLogStore : ILogStore
{
    private const byte KindEntry = 1, KindTruncate = 2, KindCompact = 3;
    private readonly string _path;
    private readonly object _gate = new();
    private readonly List<Entry> _entries = new(); // entries after the snapshot point, contiguous
    private FileStream _file;
    private long _snapshotIndex, _snapshotTerm;

    /// <summary>Opens (or creates) the log file at <paramref name="path"/> and replays it.</summary>
    public FileLogStore(string path)
    {
        _path = path;
        if (File.Exists(path)) Replay(File.ReadAllBytes(path));
        _file = new FileStream(path, FileMode.OpenOrCreate, FileAccess.Write, FileShare.Read, 1 << 16);
        _file.Seek(_validLength, SeekOrigin.Begin);
        _file.SetLength(_validLength);
    }

    private long _validLength;

    private void Replay(byte[] bytes)
    {
        var pos = 0;
        while (pos + 5 <= bytes.Length)
        {
            var len = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(pos));
            if (len < 1 || pos + 4 + len > bytes.Length) break; // torn tail
            var kind = bytes[pos + 4];
            var body = bytes.AsSpan(pos + 5, len - 1);
            switch (kind)
            {
                case KindEntry: AppendInMemory(WireCodec.FromWire(EntryMsg.Parser.ParseFrom(body))); break;
                case KindTruncate: TruncateInMemory(BinaryPrimitives.ReadInt64LittleEndian(body)); break;
                case KindCompact:
                    CompactInMemory(BinaryPrimitives.ReadInt64LittleEndian(body), BinaryPrimitives.ReadInt64LittleEndian(body[8..]));
                    break;
            }
            pos += 4 + len;
        }
        _validLength = pos;
    }

    private void AppendInMemory(Entry e)
    {
        if (e.Index <= _snapshotIndex) return;
        TruncateInMemory(e.Index);
        if (e.Index != _snapshotIndex + _entries.Count + 1)
        {
            // A gap: only possible after a snapshot install the file does not describe; start over from it.
            _entries.Clear();
            _snapshotIndex = e.Index - 1;
        }
        _entries.Add(e);
    }

    private void TruncateInMemory(long from)
    {
        var keep = (int)Math.Max(0, Math.Min(_entries.Count, from - _snapshotIndex - 1));
        if (keep < _entries.Count) _entries.RemoveRange(keep, _entries.Count - keep);
    }

    private void CompactInMemory(long index, long term)
    {
        if (index <= _snapshotIndex) return;
        var drop = (int)Math.Min(_entries.Count, index - _snapshotIndex);
        _entries.RemoveRange(0, drop);
        if (_entries.Count > 0 && _entries[0].Index != index + 1) _entries.Clear();
        _snapshotIndex = index;
        _snapshotTerm = term;
    }

    /// <inheritdoc/>
    public long SnapshotIndex { get { lock (_gate) return _snapshotIndex; } }

    /// <inheritdoc/>
    public long SnapshotTerm { get { lock (_gate) return _snapshotTerm; } }

    /// <inheritdoc/>
    public long LastIndex { get { lock (_gate) return _snapshotIndex + _entries.Count; } }

    private void WriteRecord(byte kind, ReadOnlySpan<byte> body)
    {
        Span<byte> header = stackalloc byte[5];
        BinaryPrimitives.WriteInt32LittleEndian(header, body.Length + 1);
        header[4] = kind;
        _file.Write(header);
        _file.Write(body);
    }

    /// <inheritdoc/>
    public void Append(IReadOnlyList<Entry> entries)
    {
        if (entries.Count == 0) return;
        lock (_gate)
        {
            var first = entries[0].Index;
            if (first <= _snapshotIndex + _entries.Count)
            {
                Span<byte> b = stackalloc byte[8];
                BinaryPrimitives.WriteInt64LittleEndian(b, first);
                WriteRecord(KindTruncate, b);
            }
            foreach (var e in entries)
            {
                WriteRecord(KindEntry, WireCodec.ToWire(e).ToByteArray());
                AppendInMemory(e);
            }
        }
    }

    /// <inheritdoc/>
    public void Flush() => _file.Flush(flushToDisk: true);

    /// <inheritdoc/>
    public IReadOnlyList<Entry> Read(long from, long to)
    {
        lock (_gate)
        {
            if (from <= _snapshotIndex) return Array.Empty<Entry>();
            var last = Math.Min(to, _snapshotIndex + _entries.Count);
            if (last < from) return Array.Empty<Entry>();
            return _entries.GetRange((int)(from - _snapshotIndex - 1), (int)(last - from + 1));
        }
    }

    /// <summary>The term of the entry at <paramref name="index"/>, if known.</summary>
    public long? TermAt(long index)
    {
        lock (_gate)
        {
            if (index == _snapshotIndex) return _snapshotTerm;
            if (index <= _snapshotIndex || index > _snapshotIndex + _entries.Count) return null;
            return _entries[(int)(index - _snapshotIndex - 1)].Term;
        }
    }

    /// <inheritdoc/>
    public void CompactUntil(long index, long term)
    {
        lock (_gate)
        {
            if (index <= _snapshotIndex) return;
            CompactInMemory(index, term);
            Rewrite();
        }
    }

    /// <inheritdoc/>
    public void Reset(long snapshotIndex, long snapshotTerm)
    {
        lock (_gate)
        {
            _entries.Clear();
            _snapshotIndex = snapshotIndex;
            _snapshotTerm = snapshotTerm;
            Rewrite();
        }
    }

    // Writes the current contents to a new file and swaps it in (compaction keeps the file small).
    private void Rewrite()
    {
        _file.Flush(true);
        _file.Dispose();
        var tmp = _path + ".tmp";
        _file = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.Read, 1 << 16);
        Span<byte> b = stackalloc byte[16];
        BinaryPrimitives.WriteInt64LittleEndian(b, _snapshotIndex);
        BinaryPrimitives.WriteInt64LittleEndian(b[8..], _snapshotTerm);
        WriteRecord(KindCompact, b);
        foreach (var e in _entries) WriteRecord(KindEntry, WireCodec.ToWire(e).ToByteArray());
        _file.Flush(true);
        _file.Dispose();
        File.Move(tmp, _path, overwrite: true);
        _file = new FileStream(_path, FileMode.Open, FileAccess.Write, FileShare.Read, 1 << 16);
        _file.Seek(0, SeekOrigin.End);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        lock (_gate)
        {
            try { _file.Flush(true); } catch (ObjectDisposedException) { }
            _file.Dispose();
        }
    }
}

/// <summary>The hard state in a small file replaced atomically (write, fsync, rename).</summary>
public sealed class FileHardStateStore : IHardStateStore
{
    private readonly string _path;

    /// <summary>Uses the file at <paramref name="path"/>.</summary>
    public FileHardStateStore(string path) => _path = path;

    /// <inheritdoc/>
    public HardState? Load()
    {
        if (!File.Exists(_path)) return null;
        var b = File.ReadAllBytes(_path);
        if (b.Length < 25) return null;
        var term = BinaryPrimitives.ReadInt64LittleEndian(b);
        var voted = b[8] == 1 ? FSharpOption<Guid>.Some(new Guid(b.AsSpan(9, 16))) : FSharpOption<Guid>.None;
        return new HardState(term, voted);
    }

    /// <inheritdoc/>
    public void Save(HardState state)
    {
        var b = new byte[25];
        BinaryPrimitives.WriteInt64LittleEndian(b, state.Term);
        if (FSharpOption<Guid>.get_IsSome(state.VotedFor))
        {
            b[8] = 1;
            state.VotedFor!.Value.TryWriteBytes(b.AsSpan(9));
        }
        var tmp = _path + ".tmp";
        using (var f = new FileStream(tmp, FileMode.Create, FileAccess.Write))
        {
            f.Write(b);
            f.Flush(true);
        }
        File.Move(tmp, _path, overwrite: true);
    }

    /// <inheritdoc/>
    public void Dispose() { }
}

/// <summary>Snapshots of a <see cref="MemoryStateMachine"/> as files in a directory: `snap-INDEX.bin` with a
/// `snap-INDEX.meta` beside it. Opening restores the state machine from the newest one.</summary>
public sealed class FileSnapshotStore : ISnapshotStore
{
    private readonly string _dir;
    private readonly MemoryStateMachine _sm;
    private readonly object _gate = new();
    private (SnapshotMeta Meta, string Path)? _latest;

    /// <summary>Uses (and creates) the directory <paramref name="dir"/>; restores <paramref name="sm"/> from the
    /// newest complete snapshot.</summary>
    public FileSnapshotStore(string dir, MemoryStateMachine sm)
    {
        _dir = dir;
        _sm = sm;
        Directory.CreateDirectory(dir);
        foreach (var meta in Directory.GetFiles(dir, "snap-*.meta"))
        {
            try
            {
                var m = WireCodec.FromWire(SnapshotMetaMsg.Parser.ParseFrom(File.ReadAllBytes(meta)));
                var data = Path.ChangeExtension(meta, ".bin");
                if (File.Exists(data) && (_latest is null || m.Index > _latest.Value.Meta.Index)) _latest = (m, data);
            }
            catch (InvalidProtocolBufferException) { }
        }
        foreach (var staged in Directory.GetFiles(dir, "staged-*")) File.Delete(staged);
        if (_latest is { } l)
        {
            using var f = File.OpenRead(l.Path);
            _sm.Restore(f, l.Meta.Index);
        }
    }

    /// <inheritdoc/>
    public SnapshotMeta? Latest { get { lock (_gate) return _latest?.Meta; } }

    /// <inheritdoc/>
    public SnapshotMeta Take(long term, Configuration configuration)
    {
        var meta = new SnapshotMeta(_sm.AppliedIndex, term, configuration);
        var data = Path.Combine(_dir, $"snap-{meta.Index:D20}.bin");
        using (var f = new FileStream(data + ".tmp", FileMode.Create, FileAccess.Write))
        {
            _sm.WriteSnapshot(f);
            f.Flush(true);
        }
        File.Move(data + ".tmp", data, overwrite: true);
        Adopt(meta, data);
        return meta;
    }

    /// <inheritdoc/>
    public (SnapshotMeta Meta, Stream Data)? OpenLatest()
    {
        lock (_gate)
        {
            if (_latest is not { } l) return null;
            return (l.Meta, File.OpenRead(l.Path)); // open before a newer snapshot may delete it
        }
    }

    /// <inheritdoc/>
    public IStagedSnapshot BeginStaging() => new Staged(Path.Combine(_dir, $"staged-{Guid.NewGuid():N}"));

    private sealed class Staged : IStagedSnapshot
    {
        private readonly string _path;
        private readonly FileStream _file;
        private bool _finished;

        public Staged(string path)
        {
            _path = path;
            _file = new FileStream(path, FileMode.Create, FileAccess.Write);
        }

        public void Write(ReadOnlySpan<byte> chunk) => _file.Write(chunk);

        public string Finish()
        {
            _file.Flush(true);
            _file.Dispose();
            _finished = true;
            return _path;
        }

        public void Dispose()
        {
            _file.Dispose();
            if (!_finished) try { File.Delete(_path); } catch (IOException) { }
        }
    }

    /// <inheritdoc/>
    public void Install(string staged, SnapshotMeta meta)
    {
        var data = Path.Combine(_dir, $"snap-{meta.Index:D20}.bin");
        File.Move(staged, data, overwrite: true);
        using (var f = File.OpenRead(data)) _sm.Restore(f, meta.Index);
        Adopt(meta, data);
    }

    private void Adopt(SnapshotMeta meta, string data)
    {
        var metaPath = Path.ChangeExtension(data, ".meta");
        using (var f = new FileStream(metaPath + ".tmp", FileMode.Create, FileAccess.Write))
        {
            WireCodec.ToWire(meta).WriteTo(f);
            f.Flush(true);
        }
        File.Move(metaPath + ".tmp", metaPath, overwrite: true);
        lock (_gate)
        {
            var old = _latest;
            _latest = (meta, data);
            if (old is { } o && o.Path != data)
            {
                try { File.Delete(o.Path); File.Delete(Path.ChangeExtension(o.Path, ".meta")); } catch (IOException) { }
            }
        }
    }

    /// <inheritdoc/>
    public void Dispose() { }
}

/// <summary>The key-value state machine in memory (a sorted map plus a count of keys per directory), rebuilt
/// from the latest snapshot and the log after a restart.</summary>
public sealed class MemoryStateMachine : IStateMachine
{
    private readonly ReaderWriterLockSlim _lock = new();
    private readonly SortedDictionary<string, byte[]> _data = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _prefixes = new(StringComparer.Ordinal);
    private long _applied;

    /// <inheritdoc/>
    public long AppliedIndex => Volatile.Read(ref _applied);

    /// <inheritdoc/>
    public void Skip(long index, long term) => Volatile.Write(ref _applied, index);

    private static string? DirectoryOf(string key)
    {
        var slash = key.LastIndexOf('/');
        return slash <= 0 ? null : key[..slash];
    }

    private void Set(string key, byte[]? value)
    {
        var existed = _data.ContainsKey(key);
        if (value is null)
        {
            if (!existed) return;
            _data.Remove(key);
            if (DirectoryOf(key) is { } d && --_prefixes[d] == 0) _prefixes.Remove(d);
        }
        else
        {
            _data[key] = value;
            if (!existed && DirectoryOf(key) is { } d) _prefixes[d] = _prefixes.GetValueOrDefault(d) + 1;
        }
    }

    /// <inheritdoc/>
    public CommandResult Apply(long index, long term, Command command, out KvChange? change)
    {
        _lock.EnterWriteLock();
        try
        {
            change = null;
            CommandResult result = CommandResult.Done;
            switch (command)
            {
                case Command.Put p:
                    Set(p.key, p.value);
                    change = new KvChange(index, p.key, p.value);
                    break;
                case Command.Delete d:
                    if (_data.ContainsKey(d.key)) change = new KvChange(index, d.key, null);
                    Set(d.key, null);
                    break;
                case Command.CompareAndSwap c:
                    _data.TryGetValue(c.key, out var current);
                    var expected = FSharpOption<byte[]>.get_IsSome(c.expected) ? c.expected!.Value : null;
                    var matches = expected is null ? current is null : current is not null && current.AsSpan().SequenceEqual(expected);
                    if (matches)
                    {
                        var next = FSharpOption<byte[]>.get_IsSome(c.next) ? c.next!.Value : null;
                        if (next is not null || current is not null) change = new KvChange(index, c.key, next);
                        Set(c.key, next);
                    }
                    result = CommandResult.NewSwapped(matches);
                    break;
            }
            Volatile.Write(ref _applied, index);
            return result;
        }
        finally { _lock.ExitWriteLock(); }
    }

    /// <inheritdoc/>
    public byte[]? Get(string key)
    {
        _lock.EnterReadLock();
        try { return _data.TryGetValue(key, out var v) ? v : null; }
        finally { _lock.ExitReadLock(); }
    }

    /// <inheritdoc/>
    public IReadOnlyList<string> ListKeys(string prefix)
    {
        _lock.EnterReadLock();
        try { return _data.Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal)).ToList(); }
        finally { _lock.ExitReadLock(); }
    }

    /// <inheritdoc/>
    public IReadOnlyList<string> GetPrefixes()
    {
        _lock.EnterReadLock();
        try { return _prefixes.Keys.OrderBy(k => k, StringComparer.Ordinal).ToList(); }
        finally { _lock.ExitReadLock(); }
    }

    /// <summary>Writes the whole state to a stream.</summary>
    public void WriteSnapshot(Stream output)
    {
        _lock.EnterReadLock();
        try
        {
            using var w = new BinaryWriter(output, System.Text.Encoding.UTF8, leaveOpen: true);
            w.Write(_data.Count);
            foreach (var kv in _data)
            {
                w.Write(kv.Key);
                w.Write(kv.Value.Length);
                w.Write(kv.Value);
            }
        }
        finally { _lock.ExitReadLock(); }
    }

    /// <summary>Replaces the whole state with a snapshot taken at <paramref name="index"/>.</summary>
    public void Restore(Stream input, long index)
    {
        _lock.EnterWriteLock();
        try
        {
            _data.Clear();
            _prefixes.Clear();
            using var r = new BinaryReader(input, System.Text.Encoding.UTF8, leaveOpen: true);
            var n = r.ReadInt32();
            for (var i = 0; i < n; i++)
            {
                var k = r.ReadString();
                var v = r.ReadBytes(r.ReadInt32());
                Set(k, v);
            }
            Volatile.Write(ref _applied, index);
        }
        finally { _lock.ExitWriteLock(); }
    }

    /// <inheritdoc/>
    public void Dispose() => _lock.Dispose();
}
