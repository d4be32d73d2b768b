using System.Buffers.Binary;
using System.Text;
using FASTER.core;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using Skiff.Core;

namespace Skiff.Net.Storage;

/// <summary>Settings of a <see cref="KvStateMachine"/>. The in-memory sizes bound memory use; data beyond them
/// lives on disk and is read back on demand, so a store larger than memory works.</summary>
public sealed record KvOptions
{
    /// <summary>Size of FASTER's hash index in bytes (64 bytes a bucket of 7 entries; default 16 MiB).</summary>
    public long IndexSizeBytes { get; init; } = 1L << 24;
    /// <summary>log2 of a page of the hybrid log (default 20 = 1 MiB).</summary>
    public int PageSizeBits { get; init; } = 20;
    /// <summary>log2 of the in-memory part of the hybrid log (default 25 = 32 MiB of records, each holding
    /// references to its key and value objects).</summary>
    public int MemorySizeBits { get; init; } = 25;
    /// <summary>log2 of a log segment file (default 30 = 1 GiB).</summary>
    public int SegmentSizeBits { get; init; } = 30;
    /// <summary>Applies and snapshots are refused with <see cref="ErrorKind.StorageError"/> while the disk has less
    /// free space than this. FASTER cannot report a failed background page flush to the writer (on a full disk its
    /// writers wait for buffer space forever), so we stop before the disk is full. Null: twice the in-memory log
    /// plus the index plus 16 MiB, enough to flush memory and write one checkpoint.</summary>
    public long? MinFreeDiskBytes { get; init; }

    /// <summary>How many of the most recent changes (puts and deletes that took effect) the store keeps as its
    /// change history, for watchers resuming from an index (default 100,000; 0 keeps none). The history lives in
    /// the store under reserved keys, so snapshots carry it and replaying the log after a restart rebuilds it.</summary>
    public int WatchHistory { get; init; } = 100_000;

    /// <summary>Test hook, never for production: apply every write in a client session as if it had none, so a
    /// resent write is applied again. The fault harness uses it to show that it catches duplicated writes.</summary>
    internal bool UnsafeNoSessionDedup { get; init; }

    internal long EffectiveMinFreeDiskBytes => MinFreeDiskBytes ?? (2L << MemorySizeBits) + IndexSizeBytes + (16L << 20);
}

/// <summary>A change the state machine applied: a put (<paramref name="Value"/> set) or a delete of a key that
/// existed (<paramref name="Value"/> null).</summary>
/// <param name="Index">The index of the entry that made it.</param>
/// <param name="Key">The key.</param>
/// <param name="Value">The new value, or null for a delete.</param>
public readonly record struct KvHistoryChange(long Index, string Key, byte[]? Value);

/// <summary>How long opening a <see cref="KvStateMachine"/> took.</summary>
/// <param name="Recover">Creating the store and recovering its latest checkpoint.</param>
/// <param name="KeyIndex">Rebuilding the ordered key index.</param>
/// <param name="Keys">Keys found.</param>
public readonly record struct KvOpenStats(TimeSpan Recover, TimeSpan KeyIndex, int Keys);

/// <summary>A snapshot: a FASTER checkpoint of the state machine at an applied index, and the files (with their
/// lengths at checkpoint time) that make it up.</summary>
/// <param name="Index">The last applied index included.</param>
/// <param name="Term">The term of that entry.</param>
/// <param name="Token">FASTER's checkpoint token.</param>
/// <param name="Files">Files relative to the store directory, and how many bytes of each belong to the snapshot.</param>
public sealed record SnapshotInfo(long Index, long Term, Guid Token, IReadOnlyList<(string Path, long Length)> Files)
{
    /// <summary>Total bytes of the snapshot's files.</summary>
    public long TotalBytes => Files.Sum(f => f.Length);
}

/// <summary>
/// The replicated key-value state machine on FASTER's <see cref="FasterKV{Key, Value}"/>: string keys with
/// <c>/</c> levels, opaque byte values. Commands are applied in log order at an index; the applied index and term
/// are stored in the store itself (a reserved key), so a checkpoint always carries the index it reflects.
/// An ordered <see cref="KeyIndex"/> (rebuilt on open) serves <see cref="ListKeys"/> and <see cref="GetPrefixes"/>
/// without scanning the store. Thread-safe (one lock; FASTER sessions are single-threaded).
/// </summary>
public sealed class KvStateMachine : IDisposable
{
    /// <summary>Keys starting with this are reserved for the state machine's own bookkeeping.</summary>
    public const string ReservedPrefix = "\0skiff/";
    private const string AppliedKey = ReservedPrefix + "applied";
    /// <summary>The change made by the entry at index i is kept under this prefix + i in 20 digits (an entry changes
    /// at most one key).</summary>
    private const string HistoryPrefix = ReservedPrefix + "rev/";
    private const byte HistoryPut = 1, HistoryDelete = 2;
    /// <summary>Client session i (see Skiff.Core.Sessions) is kept under this prefix + i. Sessions live in memory
    /// and are written here just before each checkpoint: between checkpoints the store is rebuilt by replaying the
    /// log, which rebuilds the sessions too.</summary>
    private const string SessionPrefix = ReservedPrefix + "session/";
    /// <summary>Longest key accepted, in UTF-8 bytes.</summary>
    public const int MaxKeyBytes = Keys.MaxKeyBytes;

    private readonly string _dir;
    private readonly KvOptions _options;
    private readonly object _gate = new();
    private readonly KeyIndex _index = new();
    private readonly IndexRing _history = new();
    private Sessions.Table _sessions = Sessions.empty;
    private readonly HashSet<long> _dirtySessions = new();
    private FasterKV<string, byte[]> _store = null!;
    private ClientSession<string, byte[], byte[], byte[], Empty, IFunctions<string, byte[], byte[], byte[], Empty>> _session = null!;
    private IDevice _logDevice = null!;
    private IDevice _objDevice = null!;
    private bool _disposed;
    private long _nextSpaceCheck;

    /// <summary>The index of the last applied entry (0 if none).</summary>
    public long AppliedIndex { get; private set; }

    /// <summary>The term of the last applied entry (0 if none).</summary>
    public long AppliedTerm { get; private set; }

    /// <summary>Changes at or below this index are no longer in the change history (trimmed, or made before the
    /// store kept one); every change after it, up to <see cref="AppliedIndex"/>, is.</summary>
    public long HistoryFloor { get; private set; }

    /// <summary>The client sessions (for tests and diagnostics).</summary>
    public Sessions.Table ClientSessions { get { lock (_gate) return _sessions; } }

    /// <summary>Number of changes in the change history.</summary>
    public int HistoryCount { get { lock (_gate) return _history.Count; } }

    /// <summary>The latest snapshot taken or installed in this directory, if any.</summary>
    public SnapshotInfo? LatestSnapshot { get; private set; }

    /// <summary>Number of keys.</summary>
    public int KeyCount { get { lock (_gate) return _index.Count; } }

    private KvStateMachine(string dir, KvOptions options)
    {
        _dir = dir;
        _options = options;
    }

    /// <summary>Opens the store in <paramref name="dir"/>, recovering its latest checkpoint (finishing or
    /// discarding an interrupted snapshot install first). The caller replays log entries after
    /// <see cref="AppliedIndex"/>.</summary>
    /// <param name="dir">The store's directory.</param>
    /// <param name="options">Settings; null for defaults.</param>
    /// <param name="logHoldsEverything">The caller's log still holds every entry from index 1 (it was never
    /// compacted), so a store whose only checkpoints are unfinished (a crash during the first snapshot) can start
    /// empty and be rebuilt from the log. Otherwise such a store is <see cref="ErrorKind.StorageCorrupted"/>.</param>
    /// <returns>The open state machine.</returns>
    public static KvStateMachine Open(string dir, KvOptions? options = null, bool logHoldsEverything = false)
    {
        dir = Path.GetFullPath(dir);
        SnapshotInstaller.FinishInterruptedInstall(dir);
        var kv = new KvStateMachine(dir, options ?? new KvOptions());
        kv.Load(logHoldsEverything);
        return kv;
    }

    private void Load(bool logHoldsEverything = false)
    {
        var watch = System.Diagnostics.Stopwatch.StartNew();
        StorageIo.Guard(_dir, () => StorageIo.CreateDirectoryDurably(_dir));
        try
        {
            _logDevice = Devices.CreateLogDevice(Path.Combine(_dir, "hlog.log"), preallocateFile: false);
            _objDevice = Devices.CreateLogDevice(Path.Combine(_dir, "hlog.obj.log"), preallocateFile: false);
            var settings = new FasterKVSettings<string, byte[]>(null)
            {
                IndexSize = _options.IndexSizeBytes,
                LogDevice = _logDevice,
                ObjectLogDevice = _objDevice,
                PageSize = 1L << _options.PageSizeBits,
                MemorySize = 1L << _options.MemorySizeBits,
                SegmentSize = 1L << _options.SegmentSizeBits,
                CheckpointDir = Path.Combine(_dir, "checkpoints"),
                RemoveOutdatedCheckpoints = true,
                TryRecoverLatest = false,
                ReadCacheEnabled = false,
                KeySerializer = () => new StringSerializer(),
                ValueSerializer = () => new BytesSerializer(),
            };
            _store = new FasterKV<string, byte[]>(settings);
            bool hasCheckpoint = Directory.Exists(Path.Combine(_dir, "checkpoints", "cpr-checkpoints"))
                && Directory.EnumerateDirectories(Path.Combine(_dir, "checkpoints", "cpr-checkpoints")).Any();
            if (hasCheckpoint && !TryRecoverLatestCheckpoint())
            {
                // Every checkpoint here is unfinished: the node died while taking its first snapshot. Nothing was
                // compacted behind an unfinished snapshot, so when the log still starts at index 1 the store is
                // rebuilt from it; otherwise entries would be missing, and that must not pass silently.
                if (!logHoldsEverything)
                    throw new SkiffException(ErrorKind.StorageCorrupted,
                        $"the key-value store in {_dir} has no complete checkpoint and the log no longer starts at index 1");
                DisposeStore();
                DeleteContents(_dir);
                Load(logHoldsEverything: false);
                return;
            }
            _session = _store.NewSession<byte[], byte[], Empty>(new SimpleFunctions<string, byte[], Empty>());
            var applied = ReadUnlocked(AppliedKey);
            AppliedIndex = AppliedTerm = HistoryFloor = 0;
            long sessionClock = 0;
            if (applied is { Length: >= 16 })
            {
                AppliedIndex = BinaryPrimitives.ReadInt64LittleEndian(applied);
                AppliedTerm = BinaryPrimitives.ReadInt64LittleEndian(applied.AsSpan(8));
                // A store written before the change history existed has none: it starts at the applied index.
                HistoryFloor = applied.Length >= 24 ? BinaryPrimitives.ReadInt64LittleEndian(applied.AsSpan(16)) : AppliedIndex;
                sessionClock = applied.Length >= 32 ? BinaryPrimitives.ReadInt64LittleEndian(applied.AsSpan(24)) : 0;
            }
            var recovered = watch.Elapsed;
            var sessionIds = RebuildKeyIndex();
            LoadSessions(sessionClock, sessionIds);
            LastOpen = new KvOpenStats(recovered, watch.Elapsed - recovered, _index.Count);
            if (hasCheckpoint)
            {
                _store.GetLatestCheckpointTokens(out var hlogToken, out _);
                LatestSnapshot = new SnapshotInfo(AppliedIndex, AppliedTerm, hlogToken, BuildManifest(hlogToken));
            }
        }
        catch (Exception e)
        {
            DisposeStore();
            if (e is SkiffException) throw;
            if (e is IOException or UnauthorizedAccessException) throw StorageIo.Wrap(_dir, e);
            throw new SkiffException(ErrorKind.StorageCorrupted, $"cannot recover the key-value store in {_dir}: {e.Message}", e);
        }
    }

    /// <summary>Recovers the newest checkpoint FASTER can read (it skips unfinished ones); false if none is
    /// complete.</summary>
    private bool TryRecoverLatestCheckpoint()
    {
        try
        {
            _store.Recover();
            return true;
        }
        catch (FasterException e) when (e.Message.Contains("Unable to find valid", StringComparison.Ordinal))
        {
            return false;
        }
    }

    /// <summary>Removes everything in <paramref name="dir"/> and syncs it, leaving an empty store directory.</summary>
    private static void DeleteContents(string dir)
    {
        foreach (var sub in Directory.EnumerateDirectories(dir)) Directory.Delete(sub, recursive: true);
        foreach (var file in Directory.EnumerateFiles(dir)) File.Delete(file);
        StorageIo.FsyncDirectory(dir);
    }

    /// <summary>Rebuilds the ordered key index by scanning the hybrid log once in address order. Every newer
    /// version of a key lies at a higher address than the older ones (updates in place keep the address), so
    /// applying records in order — a live record adds its key, a tombstone removes it — leaves exactly the live
    /// keys. The same scan finds the change-history records still live, whose indexes make up the in-memory history
    /// index. Set SKIFF_KV_INDEX_REBUILD=iterate to use FASTER's distinct-record iterator instead.</summary>
    private HashSet<long> RebuildKeyIndex()
    {
        _index.Clear();
        _history.Clear();
        var history = new HashSet<long>();
        var sessions = new HashSet<long>();
        if (Environment.GetEnvironmentVariable("SKIFF_KV_INDEX_REBUILD") == "iterate")
        {
            using var iter = _session.Iterate();
            while (iter.GetNext(out var info))
            {
                if (info.Tombstone) continue;
                var key = iter.GetKey();
                if (!Reserved(key)) _index.Add(key);
                else if (HistoryIndexOf(key) is { } i) history.Add(i);
                else if (SessionIdOf(key) is { } s) sessions.Add(s);
            }
        }
        else
        {
            var live = new HashSet<string>(StringComparer.Ordinal);
            using (var scan = _store.Log.Scan(_store.Log.BeginAddress, _store.Log.TailAddress))
            {
                while (scan.GetNext(out var info))
                {
                    if (info.Invalid) continue;
                    var key = scan.GetKey();
                    if (Reserved(key))
                    {
                        if (HistoryIndexOf(key) is { } i) Track(history, i, info.Tombstone);
                        else if (SessionIdOf(key) is { } id) Track(sessions, id, info.Tombstone);
                        continue;
                    }
                    if (info.Tombstone) live.Remove(key);
                    else live.Add(key);
                }
            }
            _index.Rebuild(live);
        }
        var indexes = history.ToArray();
        Array.Sort(indexes);
        foreach (var i in indexes) _history.Add(i);
        return sessions;

        static void Track(HashSet<long> live, long id, bool tombstone)
        {
            if (tombstone) live.Remove(id);
            else live.Add(id);
        }
    }

    /// <summary>Reads the sessions the last checkpoint wrote (the ids found by the key-index scan).</summary>
    private void LoadSessions(long clock, HashSet<long> ids)
    {
        var table = MapModule.Empty<long, Sessions.Session>();
        foreach (var id in ids)
        {
            var record = ReadUnlocked(SessionKey(id))
                ?? throw new SkiffException(ErrorKind.StorageCorrupted, $"the session table in {_dir} lost session {id}");
            var decoded = Sessions.decode(record);
            if (decoded.IsError)
                throw new SkiffException(ErrorKind.StorageCorrupted, $"session {id} in {_dir} is damaged: {decoded.ErrorValue}");
            table = table.Add(id, decoded.ResultValue);
        }
        _sessions = new Sessions.Table(clock, table);
        _dirtySessions.Clear();
    }

    /// <summary>Writes the sessions changed since the last checkpoint into the store (before taking the next).</summary>
    private void WriteSessionsUnlocked()
    {
        foreach (var id in _dirtySessions)
        {
            var key = SessionKey(id);
            var found = _sessions.Sessions.TryFind(id);
            if (FSharpOption<Sessions.Session>.get_IsSome(found))
            {
                var bytes = Sessions.encode(found!.Value);
                _session.Upsert(ref key, ref bytes);
            }
            else _session.Delete(ref key);
        }
        _dirtySessions.Clear();
    }

    private static long? SessionIdOf(string key) =>
        key.StartsWith(SessionPrefix, StringComparison.Ordinal) && long.TryParse(key.AsSpan(SessionPrefix.Length), out var i) ? i : null;

    private static string SessionKey(long id) => SessionPrefix + id.ToString(System.Globalization.CultureInfo.InvariantCulture);

    private static long? HistoryIndexOf(string key) =>
        key.StartsWith(HistoryPrefix, StringComparison.Ordinal) && long.TryParse(key.AsSpan(HistoryPrefix.Length), out var i) ? i : null;

    private static string HistoryKey(long index) => HistoryPrefix + index.ToString("D20", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Timings of the last open: FASTER's checkpoint recovery, then the key-index rebuild.</summary>
    public KvOpenStats LastOpen { get; private set; }

    /// <summary>Throws <see cref="ErrorKind.InvalidKey"/> unless the key is non-empty, at most
    /// <see cref="MaxKeyBytes"/> UTF-8 bytes and free of NUL characters. For callers validating proposals.</summary>
    /// <param name="key">The key.</param>
    public static void ValidateKey(string key)
    {
        if (Keys.problem(key) is { } problem) throw new SkiffException(ErrorKind.InvalidKey, problem.Value);
    }

    /// <summary>Applies a command at <paramref name="index"/>. Must be called in log order; an index at or below
    /// <see cref="AppliedIndex"/> is ignored (already applied — replay after recovery is idempotent) and returns
    /// null. Keys in the reserved namespace are left untouched (the command only advances the index).</summary>
    /// <param name="index">The entry's index.</param>
    /// <param name="term">The entry's term.</param>
    /// <param name="command">The command.</param>
    /// <returns>What applying did, or null if the index was already applied.</returns>
    public CommandResult? Apply(long index, long term, Command command) => Apply(index, term, command, out _);

    /// <summary>Applies a command at <paramref name="index"/> as <see cref="Apply(long, long, Command)"/> does, and
    /// says what it changed: a put, a delete of a key that existed, or a compare-and-swap that matched and changed
    /// something. That change is also recorded in the change history (in the same store, so it is as durable as
    /// the change itself), trimming the oldest beyond <see cref="KvOptions.WatchHistory"/>.</summary>
    /// <param name="index">The entry's index.</param>
    /// <param name="term">The entry's term.</param>
    /// <param name="command">The command.</param>
    /// <param name="change">The change made, or null if none.</param>
    /// <returns>What applying did, or null if the index was already applied.</returns>
    public CommandResult? Apply(long index, long term, Command command, out KvHistoryChange? change)
    {
        var result = Apply(index, term, LogCommand.NewPlain(command), out change);
        return result is null ? null : Sessions.resultOf(result)?.Value;
    }

    /// <summary>Applies a log command at <paramref name="index"/>: a key-value command alone, or inside a client
    /// session (applied at most once per session request; a repeat is answered from the session's results), or
    /// the opening or closing of a session. See <see cref="Apply(long, long, Command, out KvHistoryChange?)"/>.</summary>
    /// <param name="index">The entry's index.</param>
    /// <param name="term">The entry's term.</param>
    /// <param name="command">The command.</param>
    /// <param name="change">The change made, or null if none.</param>
    /// <returns>What the proposing client sees, or null if the index was already applied.</returns>
    public LogResult? Apply(long index, long term, LogCommand command, out KvHistoryChange? change)
    {
        change = null;
        lock (_gate)
        {
            ThrowIfDisposed();
            if (index <= AppliedIndex) return null;
            EnsureFreeSpace(force: false);
            try
            {
                KvHistoryChange? made = null;
                if (_options.UnsafeNoSessionDedup && command is LogCommand.InSession unsafeWrite) command = LogCommand.NewPlain(unsafeWrite.Item2);
                var applied = Sessions.apply(
                    FuncConvert.FromFunc<Command, CommandResult>(c => ApplyDataUnlocked(index, c, out made)),
                    _sessions, index, command);
                _sessions = applied.Item2;
                foreach (var touched in applied.Item3)
                    _dirtySessions.Add(touched is Sessions.Touched.Saved saved ? saved.Item.Id : ((Sessions.Touched.Removed)touched).session);
                change = made;
                if (made is { } ch) RecordUnlocked(ch);
                SetAppliedUnlocked(index, term);
                return applied.Item1;
            }
            catch (Exception e) when (e is not SkiffException)
            {
                throw new SkiffException(ErrorKind.StorageError, $"applying entry {index} in {_dir}: {e.Message}", e);
            }
        }
    }

    /// <summary>Applies a key-value command to the data (the caller holds the lock and records the change).</summary>
    private CommandResult ApplyDataUnlocked(long index, Command command, out KvHistoryChange? change)
    {
        change = null;
        switch (command)
        {
            case Command.Put p when !Reserved(p.key):
                PutUnlocked(p.key, p.value);
                change = new KvHistoryChange(index, p.key, p.value);
                return CommandResult.Done;
            case Command.Delete d when !Reserved(d.key):
                if (DeleteUnlocked(d.key)) change = new KvHistoryChange(index, d.key, null);
                return CommandResult.Done;
            case Command.CompareAndSwap c when !Reserved(c.key):
                return CasUnlocked(index, c.key, c.expected, c.next, out change);
            case Command.CompareAndSwap:
                return CommandResult.NewSwapped(false);
            default:
                return CommandResult.Done;
        }
    }

    /// <summary>Decodes an entry's payload with <see cref="LogCommandCodec.decode"/> and applies it. An empty payload
    /// (a leader's no-op) or one that does not decode only advances the applied index; for the latter the result
    /// is null, as for an already-applied index.</summary>
    /// <param name="index">The entry's index.</param>
    /// <param name="term">The entry's term.</param>
    /// <param name="payload">The entry's payload.</param>
    /// <returns>What applying did, or null.</returns>
    public CommandResult? ApplyEncoded(long index, long term, ReadOnlySpan<byte> payload)
    {
        if (payload.Length == 0)
        {
            AdvanceApplied(index, term);
            return null;
        }
        var decoded = LogCommandCodec.decode(payload);
        if (decoded.IsOk) return Apply(index, term, decoded.ResultValue, out _) is { } result ? Sessions.resultOf(result)?.Value : null;
        AdvanceApplied(index, term);
        return null;
    }

    /// <summary>Records that the entry at <paramref name="index"/> (no command: a no-op or configuration
    /// entry) is applied.</summary>
    /// <param name="index">The entry's index.</param>
    /// <param name="term">Its term.</param>
    public void AdvanceApplied(long index, long term)
    {
        lock (_gate)
        {
            ThrowIfDisposed();
            if (index <= AppliedIndex) return;
            EnsureFreeSpace(force: false);
            SetAppliedUnlocked(index, term);
        }
    }

    /// <summary>The value of a key, or null.</summary>
    /// <param name="key">The key.</param>
    /// <returns>A copy of the value, or null if absent.</returns>
    public byte[]? Get(string key)
    {
        lock (_gate)
        {
            ThrowIfDisposed();
            if (Reserved(key)) return null;
            return StorageIo.Guard(_dir, () => ReadUnlocked(key));
        }
    }

    /// <summary>All keys starting with <paramref name="prefix"/> (ordinal), in ordinal order; "" lists all.
    /// Served from the ordered key index, not by scanning the store.</summary>
    /// <param name="prefix">The prefix.</param>
    /// <param name="limit">At most this many keys.</param>
    /// <returns>The keys.</returns>
    public IReadOnlyList<string> ListKeys(string prefix, int limit = int.MaxValue)
    {
        lock (_gate)
        {
            ThrowIfDisposed();
            return _index.List(prefix, limit);
        }
    }

    /// <summary>Every distinct directory part of the keys (a key minus its last <c>/</c> segment), in ordinal
    /// order. Keys without <c>/</c> contribute nothing; a prefix disappears with its last key.</summary>
    /// <returns>The prefixes.</returns>
    public IReadOnlyList<string> GetPrefixes()
    {
        lock (_gate)
        {
            ThrowIfDisposed();
            return _index.Prefixes();
        }
    }

    /// <summary>Takes a snapshot: a FASTER fold-over checkpoint of everything applied so far, durable on return.
    /// The caller then compacts the log behind <see cref="SnapshotInfo.Index"/>. Call between applies.</summary>
    /// <returns>The snapshot, with its file manifest for streaming.</returns>
    public SnapshotInfo TakeSnapshot()
    {
        lock (_gate)
        {
            ThrowIfDisposed();
            EnsureFreeSpace(force: true);
            try
            {
                WriteSessionsUnlocked();
                var (ok, token) = _store.TakeFullCheckpointAsync(CheckpointType.FoldOver).AsTask().GetAwaiter().GetResult();
                if (!ok) throw new SkiffException(ErrorKind.StorageError, $"a checkpoint of {_dir} is already in progress");
                _store.CompleteCheckpointAsync().AsTask().GetAwaiter().GetResult();
                var files = BuildManifest(token);
                // FASTER writes some checkpoint metadata with plain buffered writes and never syncs directories;
                // sync the checkpoint's files and directories so the snapshot survives power loss before the log
                // is compacted behind it.
                foreach (var (rel, _) in files)
                {
                    if (!rel.StartsWith("checkpoints", StringComparison.Ordinal)) continue;
                    var full = Path.Combine(_dir, rel);
                    using var h = File.OpenHandle(full, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
                    StorageIo.Fdatasync(h, full);
                }
                foreach (var d in Directory.EnumerateDirectories(Path.Combine(_dir, "checkpoints"), "*", SearchOption.AllDirectories))
                    StorageIo.FsyncDirectory(d);
                StorageIo.FsyncDirectory(_dir);
                LatestSnapshot = new SnapshotInfo(AppliedIndex, AppliedTerm, token, files);
                return LatestSnapshot;
            }
            catch (Exception e) when (e is not SkiffException)
            {
                if (e is IOException or UnauthorizedAccessException) throw StorageIo.Wrap(_dir, e);
                throw new SkiffException(ErrorKind.StorageError, $"checkpoint of {_dir} failed: {e.Message}", e);
            }
        }
    }

    /// <summary>The files of checkpoint <paramref name="token"/>: its own directories, and the hybrid log and object
    /// log segments with their current lengths. Bytes below the checkpoint's final address never change afterwards
    /// (later writes go to higher addresses), and bytes beyond it are ignored when recovering from it, so the
    /// lengths may include later data harmlessly.</summary>
    private List<(string, long)> BuildManifest(Guid token)
    {
        var tokenText = token.ToString();
        var files = new List<(string, long)>();
        foreach (var path in Directory.EnumerateFiles(_dir, "*", SearchOption.AllDirectories))
        {
            var rel = Path.GetRelativePath(_dir, path);
            bool isCheckpoint = rel.StartsWith("checkpoints" + Path.DirectorySeparatorChar, StringComparison.Ordinal);
            bool isData = rel.StartsWith("hlog.", StringComparison.Ordinal);
            if ((isCheckpoint && rel.Contains(tokenText, StringComparison.Ordinal)) || (!isCheckpoint && isData))
                files.Add((rel, new FileInfo(path).Length));
        }
        files.Sort((a, b) => string.CompareOrdinal(a.Item1, b.Item1));
        return files;
    }

    /// <summary>Opens a reader that streams <paramref name="snapshot"/> as one byte stream (header, files,
    /// checksum), to be sent in chunks and fed to <see cref="BeginInstall"/> on another node. All files are opened
    /// now, so a later checkpoint deleting them does not break the stream.</summary>
    /// <param name="snapshot">A snapshot returned by <see cref="TakeSnapshot"/>.</param>
    /// <returns>The reader; dispose it when done.</returns>
    public SnapshotReader OpenSnapshotReader(SnapshotInfo snapshot)
    {
        lock (_gate)
        {
            ThrowIfDisposed();
            return new SnapshotReader(_dir, snapshot);
        }
    }

    /// <summary>Starts installing a snapshot received from the leader: bytes go to a staging directory; on
    /// <see cref="SnapshotInstaller.Complete"/> they are verified, synced and swapped in atomically, and this state
    /// machine reloads from them.</summary>
    /// <returns>The installer.</returns>
    public SnapshotInstaller BeginInstall()
    {
        lock (_gate)
        {
            ThrowIfDisposed();
            return new SnapshotInstaller(this, _dir);
        }
    }

    /// <summary>Called by the installer once the staging directory is complete and durable: closes the store,
    /// swaps the directories, reopens.</summary>
    internal void SwapIn(Action swap)
    {
        lock (_gate)
        {
            ThrowIfDisposed();
            DisposeStore();
            swap();
            AppliedIndex = 0;
            AppliedTerm = 0;
            Load();
        }
    }

    /// <summary>Throws <see cref="ErrorKind.StorageError"/> if the disk holding the store is nearly full (checked
    /// at most every 20 ms unless forced).</summary>
    private void EnsureFreeSpace(bool force)
    {
        long now = Environment.TickCount64;
        if (!force && now < _nextSpaceCheck) return;
        _nextSpaceCheck = now + 20;
        long free;
        try
        {
            free = new DriveInfo(_dir).AvailableFreeSpace;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
            return; // cannot tell; let the write itself fail if it must
        }
        long min = _options.EffectiveMinFreeDiskBytes;
        if (free < min)
        {
            _nextSpaceCheck = 0; // check again next time
            throw new SkiffException(ErrorKind.StorageError,
                $"disk full: {free} bytes free under {_dir}, the key-value store needs at least {min} to write safely");
        }
    }

    private static bool Reserved(string key) => key.StartsWith(ReservedPrefix, StringComparison.Ordinal);

    private void PutUnlocked(string key, byte[] value)
    {
        var v = value;
        _session.Upsert(ref key, ref v);
        _index.Add(key);
    }

    /// <summary>Deletes a key; true if it existed (the key index knows every live key).</summary>
    private bool DeleteUnlocked(string key)
    {
        _session.Delete(ref key);
        return _index.Remove(key);
    }

    private CommandResult CasUnlocked(long index, string key, Microsoft.FSharp.Core.FSharpOption<byte[]>? expected,
        Microsoft.FSharp.Core.FSharpOption<byte[]>? next, out KvHistoryChange? change)
    {
        change = null;
        var current = ReadUnlocked(key);
        var want = expected?.Value;
        bool match = want is null ? current is null : current is not null && current.AsSpan().SequenceEqual(want);
        if (!match) return CommandResult.NewSwapped(false);
        if (next?.Value is { } n)
        {
            PutUnlocked(key, n);
            change = new KvHistoryChange(index, key, n);
        }
        else if (DeleteUnlocked(key)) change = new KvHistoryChange(index, key, null);
        return CommandResult.NewSwapped(true);
    }

    /// <summary>Adds a change to the history and trims the oldest beyond the limit. Deterministic given the
    /// store's contents, so replaying the log after a restart rebuilds exactly the same history.</summary>
    private void RecordUnlocked(KvHistoryChange change)
    {
        if (_options.WatchHistory > 0)
        {
            var keyBytes = Encoding.UTF8.GetByteCount(change.Key);
            var value = change.Value;
            var record = new byte[1 + 4 + keyBytes + (value?.Length ?? 0)];
            record[0] = value is null ? HistoryDelete : HistoryPut;
            BinaryPrimitives.WriteInt32LittleEndian(record.AsSpan(1), keyBytes);
            Encoding.UTF8.GetBytes(change.Key, record.AsSpan(5));
            value?.CopyTo(record.AsSpan(5 + keyBytes));
            var k = HistoryKey(change.Index);
            _session.Upsert(ref k, ref record);
            _history.Add(change.Index);
        }
        while (_history.Count > Math.Max(0, _options.WatchHistory))
        {
            var oldest = _history.RemoveOldest();
            var k = HistoryKey(oldest);
            _session.Delete(ref k);
            HistoryFloor = oldest;
        }
        if (_options.WatchHistory <= 0) HistoryFloor = change.Index;
    }

    /// <summary>The recorded changes at indexes <paramref name="from"/> to <paramref name="to"/> (inclusive) whose
    /// key starts with <paramref name="prefix"/>, in index order, from the change history; false, with
    /// <paramref name="floor"/> = <see cref="HistoryFloor"/>, if changes at or after <paramref name="from"/> are
    /// no longer all kept (from ≤ floor).</summary>
    /// <param name="from">The first index wanted (≥ 1).</param>
    /// <param name="to">The last index wanted.</param>
    /// <param name="prefix">Only keys starting with this (ordinal); "" for all.</param>
    /// <param name="into">Receives the changes.</param>
    /// <param name="floor">The history's floor: every change after it is kept.</param>
    /// <returns>Whether the history covers <paramref name="from"/>.</returns>
    public bool TryReadHistory(long from, long to, string prefix, List<KvHistoryChange> into, out long floor)
    {
        // In chunks, taking the lock for each, so a long backlog does not hold up applies and reads for long (100,000
        // changes take 0.1-0.3 s here). Between chunks the oldest changes may be trimmed: that is fine unless one not
        // yet read goes, which shows as the floor reaching the next index wanted.
        const int Chunk = 1024;
        var start = into.Count;
        var next = from;
        while (true)
        {
            lock (_gate)
            {
                ThrowIfDisposed();
                floor = HistoryFloor;
                if (next <= floor)
                {
                    into.RemoveRange(start, into.Count - start);
                    return false;
                }
                var i = _history.LowerBound(next);
                for (var n = 0; n < Chunk; n++, i++)
                {
                    if (i >= _history.Count || _history[i] > to) return true;
                    var index = _history[i];
                    var record = StorageIo.Guard(_dir, () => ReadUnlocked(HistoryKey(index)))
                        ?? throw new SkiffException(ErrorKind.StorageCorrupted, $"the change history in {_dir} lost its record of index {index}");
                    next = index + 1;
                    var keyBytes = BinaryPrimitives.ReadInt32LittleEndian(record.AsSpan(1));
                    var key = Encoding.UTF8.GetString(record, 5, keyBytes);
                    if (!key.StartsWith(prefix, StringComparison.Ordinal)) continue;
                    into.Add(new KvHistoryChange(index, key, record[0] == HistoryDelete ? null : record.AsSpan(5 + keyBytes).ToArray()));
                }
            }
        }
    }

    private void SetAppliedUnlocked(long index, long term)
    {
        var v = new byte[32];
        BinaryPrimitives.WriteInt64LittleEndian(v, index);
        BinaryPrimitives.WriteInt64LittleEndian(v.AsSpan(8), term);
        BinaryPrimitives.WriteInt64LittleEndian(v.AsSpan(16), HistoryFloor);
        BinaryPrimitives.WriteInt64LittleEndian(v.AsSpan(24), _sessions.Clock);
        var k = AppliedKey;
        _session.Upsert(ref k, ref v);
        AppliedIndex = index;
        AppliedTerm = term;
    }

    private byte[]? ReadUnlocked(string key)
    {
        var (status, output) = _session.Read(key);
        if (status.IsPending)
        {
            _session.CompletePendingWithOutputs(out var outputs, wait: true);
            using (outputs)
            {
                if (!outputs.Next())
                    throw new SkiffException(ErrorKind.StorageError, $"pending read of a key in {_dir} produced no result");
                status = outputs.Current.Status;
                output = outputs.Current.Output;
            }
        }
        if (status.IsFaulted) throw new SkiffException(ErrorKind.StorageError, $"reading a key from {_dir} failed");
        return status.Found ? output : null;
    }

    private void ThrowIfDisposed()
    {
        if (_disposed) throw new ObjectDisposedException(nameof(KvStateMachine));
    }

    private void DisposeStore()
    {
        _session?.Dispose();
        _store?.Dispose();
        _logDevice?.Dispose();
        _objDevice?.Dispose();
        _session = null!;
        _store = null!;
        _logDevice = null!;
        _objDevice = null!;
    }

    /// <summary>Closes the store. Changes since the last snapshot are not kept: the log replays them.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            DisposeStore();
        }
    }

    private sealed class StringSerializer : BinaryObjectSerializer<string>
    {
        public override void Serialize(ref string obj) => writer.Write(obj);
        public override void Deserialize(out string obj) => obj = reader.ReadString();
    }

    private sealed class BytesSerializer : BinaryObjectSerializer<byte[]>
    {
        public override void Serialize(ref byte[] obj)
        {
            writer.Write(obj.Length);
            writer.Write(obj);
        }

        public override void Deserialize(out byte[] obj)
        {
            int n = reader.ReadInt32();
            obj = reader.ReadBytes(n);
        }
    }
}
