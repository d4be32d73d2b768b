using Google.Protobuf;
using Microsoft.FSharp.Core;
using Skiff.Core;
using Skiff.Net.Protocol;
using Skiff.Net.Storage;

namespace Skiff.Net.Runtime;

/// <summary>The runtime's log on the storage's <see cref="RaftLog"/> (a write-ahead log of our own, beside the FASTER
/// state machine; the name is from when the log was FASTER's too). The log does its own group commit: appends are
/// queued in order and <see cref="Flush"/> waits for the newest one to be durable.</summary>
internal sealed class FasterLogStore : ILogStore
{
    private const byte Noop = 0, Cmd = 1, Cfg = 2;
    private readonly RaftLog _log;
    private Task _last = Task.CompletedTask;

    /// <summary>Wraps an open log.</summary>
    public FasterLogStore(RaftLog log) => _log = log;

    /// <summary>Encodes an entry's payload for the log: a tag byte, then the command or configuration bytes.</summary>
    public static LogEntry Encode(Entry e)
    {
        byte[] payload;
        switch (e.Payload)
        {
            case Payload.Command c:
                payload = new byte[c.Bytes.Length + 1];
                payload[0] = Cmd;
                c.Bytes.CopyTo(payload, 1);
                break;
            case Payload.Config c:
                var body = WireCodec.ToWire(c.Configuration).ToByteArray();
                payload = new byte[body.Length + 1];
                payload[0] = Cfg;
                body.CopyTo(payload, 1);
                break;
            default:
                payload = Array.Empty<byte>();
                break;
        }
        return new LogEntry(e.Index, e.Term, payload);
    }

    /// <summary>Decodes what <see cref="Encode"/> wrote.</summary>
    public static Entry Decode(LogEntry e)
    {
        Payload payload = e.Payload.Length == 0 || e.Payload[0] == Noop ? Payload.Noop
            : e.Payload[0] == Cmd ? Payload.NewCommand(e.Payload.AsSpan(1).ToArray())
            : Payload.NewConfig(WireCodec.FromWire(ConfigurationMsg.Parser.ParseFrom(e.Payload.AsSpan(1))));
        return new Entry(e.Index, e.Term, payload);
    }

    /// <inheritdoc/>
    public long SnapshotIndex => _log.FirstIndex - 1;

    /// <inheritdoc/>
    public long SnapshotTerm => _log.TermAt(_log.FirstIndex - 1) ?? 0;

    /// <inheritdoc/>
    public long LastIndex => _log.LastIndex;

    /// <inheritdoc/>
    public void Append(IReadOnlyList<Entry> entries)
    {
        var encoded = new LogEntry[entries.Count];
        for (var i = 0; i < encoded.Length; i++) encoded[i] = Encode(entries[i]);
        _last = _log.AppendAsync(encoded);
    }

    /// <inheritdoc/>
    public void Flush() => DedicatedThread.Wait(_last);

    /// <inheritdoc/>
    public Task FlushAsync() => _last;

    /// <inheritdoc/>
    public long? TermAt(long index) => _log.TermAt(index);

    /// <inheritdoc/>
    public int MaxCommandBytes => _log.MaxPayloadBytes - 1; // the tag byte of Encode

    /// <inheritdoc/>
    public IReadOnlyList<Entry> Read(long from, long to)
    {
        if (from < _log.FirstIndex || to < from) return Array.Empty<Entry>();
        var entries = _log.ReadAsync(from, to).GetAwaiter().GetResult();
        if (entries.Count == 0 || entries[0].Index != from) return Array.Empty<Entry>();
        return entries.Select(Decode).ToList();
    }

    /// <inheritdoc/>
    public void CompactUntil(long index, long term) => _log.CompactUntil(index).GetAwaiter().GetResult();

    /// <inheritdoc/>
    public void Reset(long snapshotIndex, long snapshotTerm) =>
        _log.ResetToSnapshot(snapshotIndex, snapshotTerm, keepSuffix: false).GetAwaiter().GetResult();

    /// <inheritdoc/>
    public void Dispose() { }
}

/// <summary>The hard state in the storage's <see cref="HardStateStore"/>.</summary>
internal sealed class FasterHardStateStore : IHardStateStore
{
    private readonly HardStateStore _store;

    /// <summary>Wraps an open store.</summary>
    public FasterHardStateStore(HardStateStore store) => _store = store;

    /// <inheritdoc/>
    public HardState? Load() => _store.State;

    /// <inheritdoc/>
    public void Save(HardState state) => _store.Save(state);

    /// <inheritdoc/>
    public void Dispose() { }
}

/// <summary>The state machine on the storage's FASTER <see cref="KvStateMachine"/>, with its durable change
/// history.</summary>
internal sealed class FasterStateMachine : IStateMachine, IChangeHistory
{
    private readonly KvStateMachine _kv;

    /// <summary>Wraps an open state machine.</summary>
    public FasterStateMachine(KvStateMachine kv) => _kv = kv;

    /// <inheritdoc/>
    public long AppliedIndex => _kv.AppliedIndex;

    /// <inheritdoc/>
    public bool CompactionPending => _kv.CompactionPending;

    /// <inheritdoc/>
    public void CompactStep() => _kv.CompactStep();

    /// <inheritdoc/>
    public void Skip(long index, long term) => _kv.AdvanceApplied(index, term);

    /// <inheritdoc/>
    public LogResult Apply(long index, long term, LogCommand command, out Change? change)
    {
        var result = _kv.Apply(index, term, command, out change);
        return result ?? LogResult.NewApplied(CommandResult.Done); // null: already applied (replay after recovery)
    }

    /// <inheritdoc/>
    public bool TryReadChanges(long from, long to, string prefix, List<Change> into, out long floor) =>
        _kv.TryReadHistory(from, to, prefix, into, out floor);

    /// <inheritdoc/>
    public byte[]? Get(string key) => _kv.Get(key);

    /// <inheritdoc/>
    public AuthState Auth => _kv.Auth;

    /// <inheritdoc/>
    public IReadOnlyList<string> ListKeys(string prefix, string? startAfter, int limit) => _kv.ListKeys(prefix, startAfter, limit);

    /// <inheritdoc/>
    public IReadOnlyList<string> GetPrefixes(string? startAfter, int limit) => _kv.GetPrefixes(startAfter, limit);

    /// <inheritdoc/>
    public void Dispose() { }
}

/// <summary>Snapshots as FASTER checkpoints of the <see cref="KvStateMachine"/>, with the configuration in force
/// at each kept in a small side file (`snapmeta/INDEX.meta`), streamed with its reader and installed with its
/// installer.</summary>
internal sealed class FasterSnapshotStore : ISnapshotStore
{
    private readonly KvStateMachine _kv;
    private readonly string _metaDir;
    private readonly object _gate = new();
    private readonly Dictionary<string, (SnapshotInstaller Installer, DateTime At)> _staged = new();
    private SnapshotInstaller? _receiving;

    /// <summary>Uses <paramref name="kv"/>'s checkpoints, with side files in <paramref name="metaDir"/>.</summary>
    public FasterSnapshotStore(KvStateMachine kv, string metaDir)
    {
        _kv = kv;
        _metaDir = metaDir;
        StorageIo.CreateDirectoryDurably(metaDir);
    }

    private string MetaPath(long index) => Path.Combine(_metaDir, $"{index:D20}.meta");

    private SnapshotMeta MetaOf(SnapshotInfo info)
    {
        var path = MetaPath(info.Index);
        var config = File.Exists(path)
            ? WireCodec.FromWire(SnapshotMetaMsg.Parser.ParseFrom(File.ReadAllBytes(path))).Configuration
            : Configuration.Empty;
        return new SnapshotMeta(info.Index, info.Term, config);
    }

    private void SaveMeta(SnapshotMeta meta)
    {
        var path = MetaPath(meta.Index);
        using (var f = new FileStream(path + ".tmp", FileMode.Create, FileAccess.Write))
        {
            WireCodec.ToWire(meta).WriteTo(f);
            f.Flush(true);
        }
        File.Move(path + ".tmp", path, overwrite: true);
        // The rename must be durable before the checkpoint that relies on it: a lost side file reads back as an
        // empty configuration.
        StorageIo.FsyncDirectory(_metaDir);
    }

    /// <summary>Once the snapshot at <paramref name="index"/> is durable: the side files of older ones go (never
    /// before, or the latest durable snapshot would read back without its configuration).</summary>
    private void DeleteMetaBefore(long index)
    {
        var keep = Path.GetFileName(MetaPath(index));
        foreach (var old in Directory.GetFiles(_metaDir, "*.meta"))
            if (string.CompareOrdinal(Path.GetFileName(old), keep) < 0)
                try { File.Delete(old); } catch (IOException) { }
    }

    /// <inheritdoc/>
    public SnapshotMeta? Latest => _kv.LatestSnapshot is { } info ? MetaOf(info) : null;

    /// <inheritdoc/>
    public SnapshotMeta Take(long term, Configuration configuration)
    {
        using var ready = new ManualResetEventSlim();
        Begin(term, configuration, ready.Set);
        ready.Wait();
        return Finish();
    }

    private Configuration? _taking;
    private double _beginPauseMs;

    /// <inheritdoc/>
    public SnapshotMeta? Begin(long term, Configuration configuration, Action ready)
    {
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        // The configuration side file goes first (on the checkpoint's thread): a snapshot never exists without it.
        var pending = new SnapshotMeta(_kv.AppliedIndex, _kv.AppliedTerm, configuration);
        _taking = configuration;
        _kv.BeginSnapshot(ready, () => SaveMeta(pending));
        _beginPauseMs = System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalMilliseconds;
        return null;
    }

    /// <inheritdoc/>
    public SnapshotMeta Finish()
    {
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        var configuration = _taking ?? throw new InvalidOperationException("no snapshot is being taken");
        _taking = null;
        var info = _kv.FinishSnapshot();
        DeleteMetaBefore(info.Index);
        // How long applying stopped for this snapshot: its start and its finish (the checkpoint in between does not
        // stop it).
        RuntimeMetrics.SnapshotPause.Record(_beginPauseMs + System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalMilliseconds);
        return new SnapshotMeta(info.Index, info.Term, configuration);
    }

    /// <inheritdoc/>
    public (SnapshotMeta Meta, Stream Data)? OpenLatest()
    {
        if (_kv.LatestSnapshot is not { } info) return null;
        return (MetaOf(info), new ReaderStream(_kv.OpenSnapshotReader(info)));
    }

    /// <inheritdoc/>
    public IStagedSnapshot BeginStaging()
    {
        lock (_gate)
        {
            if (_receiving is not null)
                throw new SkiffException(ErrorKind.StreamClosed, "another snapshot is being received; the leader will retry");
            // FASTER stages into one directory, so a staged offer the reducer may still install must not be
            // overwritten: refuse (the leader retries) unless it has waited long enough to be abandoned.
            if (_staged.Values.Any(s => DateTime.UtcNow - s.At < TimeSpan.FromSeconds(10)))
                throw new SkiffException(ErrorKind.StreamClosed, "a received snapshot is waiting to be installed; the leader will retry");
            foreach (var s in _staged.Values) s.Installer.Dispose();
            _staged.Clear();
            _receiving = _kv.BeginInstall();
            return new Staged(this, _receiving);
        }
    }

    /// <inheritdoc/>
    public void Install(string staged, SnapshotMeta meta)
    {
        SnapshotInstaller installer;
        lock (_gate)
        {
            if (!_staged.Remove(staged, out var entry))
                throw new SkiffException(ErrorKind.StorageError, $"staged snapshot {staged} is gone");
            installer = entry.Installer;
        }
        SaveMeta(meta);
        installer.Complete();
        installer.Dispose();
    }

    private sealed class Staged : IStagedSnapshot
    {
        private readonly FasterSnapshotStore _owner;
        private readonly SnapshotInstaller _installer;
        private bool _finished;

        public Staged(FasterSnapshotStore owner, SnapshotInstaller installer)
        {
            _owner = owner;
            _installer = installer;
        }

        public void Write(ReadOnlySpan<byte> chunk) => _installer.WriteChunk(chunk);

        public string Finish()
        {
            _installer.Verify(); // never hand Raft a stream that would fail to install
            var name = "faster-" + Guid.NewGuid().ToString("N");
            lock (_owner._gate)
            {
                _owner._staged[name] = (_installer, DateTime.UtcNow);
                _owner._receiving = null;
            }
            _finished = true;
            return name;
        }

        public void Dispose()
        {
            if (_finished) return;
            lock (_owner._gate) _owner._receiving = null;
            _installer.Dispose();
        }
    }

    private sealed class ReaderStream : Stream
    {
        private readonly SnapshotReader _reader;
        public ReaderStream(SnapshotReader reader) => _reader = reader;
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => _reader.Length;
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => _reader.Read(buffer.AsSpan(offset, count));
        public override int Read(Span<byte> buffer) => _reader.Read(buffer);
        // The base class would queue the synchronous read to the thread pool and wait for it.
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            ValueTask.FromResult(_reader.Read(buffer.Span));
        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            Task.FromResult(_reader.Read(buffer.AsSpan(offset, count)));
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        protected override void Dispose(bool disposing)
        {
            if (disposing) _reader.Dispose();
            base.Dispose(disposing);
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        lock (_gate)
        {
            foreach (var s in _staged.Values) s.Installer.Dispose();
            _staged.Clear();
        }
    }
}
