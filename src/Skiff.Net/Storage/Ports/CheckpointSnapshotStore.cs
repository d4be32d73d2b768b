using System.Diagnostics.Metrics;
using Google.Protobuf;
using Skiff.Core;
using Skiff.Net.Protocol;
using Skiff.Net.Runtime;

namespace Skiff.Net.Storage.Ports;

/// <summary>The snapshot port on FASTER checkpoints of the <see cref="KvStateMachine"/>, with the configuration in
/// force at each kept in a small side file (<c>snapmeta/INDEX.meta</c>: a <see cref="SideFile"/> holding the
/// <c>SnapshotMetaMsg</c> protobuf), streamed with the state machine's reader and installed with its installer.
/// </summary>
internal sealed class CheckpointSnapshotStore : ISnapshotStore
{
    /// <summary>The configuration's side file: a <see cref="SideFile"/> holding the <c>SnapshotMetaMsg</c>.</summary>
    private const uint MetaMagic = 0x4D534B53; // "SKSM" little-endian
    private const int MetaVersion = 1;
    private const string MetaWhat = "a snapshot's configuration";

    private readonly KvStateMachine _kv;
    private readonly string _metaDir;
    private readonly Histogram<double> _pauses, _gcPauses, _work;
    private readonly object _gate = new();
    private readonly Dictionary<string, (SnapshotInstaller Installer, DateTime At)> _staged = new();
    private SnapshotInstaller? _receiving;

    /// <summary>Uses <paramref name="kv"/>'s checkpoints, with side files in <paramref name="metaDir"/>.</summary>
    /// <param name="kv">The state machine.</param>
    /// <param name="metaDir">Where the side files go.</param>
    /// <param name="pauses">Where the time applying waited for each snapshot, the garbage collector's share of it and
    /// the snapshot's own work in it are recorded (default: the node's <see cref="RuntimeMetrics.SnapshotPause"/>,
    /// <see cref="RuntimeMetrics.SnapshotPauseGc"/> and <see cref="RuntimeMetrics.SnapshotPauseWork"/>; the
    /// snapshot warm-up records elsewhere).</param>
    public CheckpointSnapshotStore(KvStateMachine kv, string metaDir,
        (Histogram<double> Pause, Histogram<double> Gc, Histogram<double> Work)? pauses = null)
    {
        _kv = kv;
        _metaDir = metaDir;
        (_pauses, _gcPauses, _work) = pauses ?? (RuntimeMetrics.SnapshotPause, RuntimeMetrics.SnapshotPauseGc, RuntimeMetrics.SnapshotPauseWork);
        StorageIo.CreateDirectoryDurably(metaDir);
    }

    private string MetaPath(long index) => Path.Combine(_metaDir, $"{index:D20}.meta");

    private SnapshotMeta MetaOf(SnapshotInfo info)
    {
        var path = MetaPath(info.Index);
        var config = File.Exists(path) ? ReadMeta(path).Configuration : Configuration.Empty;
        return new SnapshotMeta(info.Index, info.Term, config);
    }

    /// <summary>Reads a side file; one written before side files shared a format holds the bare protobuf (which
    /// never starts with the magic: its first byte is a field tag of SnapshotMetaMsg).</summary>
    private static SnapshotMeta ReadMeta(string path)
    {
        var bytes = StorageIo.Guard(path, () => File.ReadAllBytes(path));
        try
        {
            var message = SideFile.HasMagic(bytes, MetaMagic)
                ? SnapshotMetaMsg.Parser.ParseFrom(SideFile.Decode(path, bytes, MetaMagic, MetaVersion, MetaWhat))
                : SnapshotMetaMsg.Parser.ParseFrom(bytes);
            return WireCodec.FromWire(message);
        }
        catch (Exception e) when (e is InvalidProtocolBufferException or ArgumentException or FormatException)
        {
            throw new SkiffException(ErrorKind.StorageCorrupted, $"{path} is damaged: it must hold {MetaWhat}", e);
        }
    }

    /// <summary>Writes a snapshot's side file. It must be durable before the checkpoint that relies on it: a lost
    /// side file reads back as an empty configuration.</summary>
    private void SaveMeta(SnapshotMeta meta) =>
        SideFile.Write(MetaPath(meta.Index), MetaMagic, MetaVersion, WireCodec.ToWire(meta).ToByteArray());

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
    private PauseStretch _beginning; // the applying thread's time in Begin, added to Finish's

    /// <inheritdoc/>
    public SnapshotMeta? Begin(long term, Configuration configuration, Action ready)
    {
        var timer = PauseStretch.Start();
        // The configuration side file goes first (on the checkpoint's thread): a snapshot never exists without it.
        var pending = new SnapshotMeta(_kv.AppliedIndex, _kv.AppliedTerm, configuration);
        _taking = configuration;
        _kv.BeginSnapshot(ready, () => SaveMeta(pending));
        _beginning = timer.Stop();
        return null;
    }

    /// <inheritdoc/>
    public SnapshotMeta Finish()
    {
        var timer = PauseStretch.Start();
        var configuration = _taking ?? throw new InvalidOperationException("no snapshot is being taken");
        _taking = null;
        // Older side files go once this snapshot is durable, with the older checkpoints, off the applying thread.
        var info = _kv.FinishSnapshot(durable => DeleteMetaBefore(durable.Index));
        // How long applying stopped for this snapshot: its start and its finish (the checkpoint in between does not
        // stop it); with it, the garbage collector's pauses inside those two stretches and the snapshot's own work
        // (the pause less those and less the waits for a core), first, so that a listener has them when the pause
        // arrives. Collections and waits for a core stop any stretch of this thread's work, snapshot or not.
        var pause = _beginning + timer.Stop();
        _work.Record(pause.OwnMs);
        _gcPauses.Record(pause.GcMs);
        _pauses.Record(pause.WallMs);
        return new SnapshotMeta(info.Index, info.Term, configuration);
    }

    /// <inheritdoc/>
    public (SnapshotMeta Meta, Stream Data)? OpenLatest()
    {
        if (_kv.LatestSnapshot is not { } info) return null;
        return (MetaOf(info), new SnapshotReaderStream(_kv.OpenSnapshotReader(info)));
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
        private readonly CheckpointSnapshotStore _owner;
        private readonly SnapshotInstaller _installer;
        private bool _finished;

        public Staged(CheckpointSnapshotStore owner, SnapshotInstaller installer)
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
