using System.Text;
using Microsoft.FSharp.Core;
using Skiff.Core;

namespace Skiff.Net.Storage;

/// <summary>How long opening a <see cref="KvStateMachine"/> took.</summary>
/// <param name="Recover">Creating the store and recovering its latest checkpoint.</param>
/// <param name="KeyIndex">Reading (or rebuilding) the ordered key index and the other in-memory indexes.</param>
/// <param name="Keys">Keys found.</param>
/// <param name="IndexSource">"file" if the indexes were read from the checkpoint's index file, else why they were
/// rebuilt by scanning the store.</param>
internal readonly record struct KvOpenStats(TimeSpan Recover, TimeSpan KeyIndex, int Keys, string IndexSource);

/// <summary>
/// The replicated key-value state machine on FASTER's <c>FasterKV</c>: string keys with <c>/</c> levels, opaque
/// byte values. Commands are applied in log order at an index; the applied index and term are stored in the store
/// itself (a reserved key), so a checkpoint always carries the index it reflects. An ordered <see cref="KeyIndex"/>
/// (rebuilt on open) serves <see cref="ListKeys(string, string?, int)"/> and <see cref="GetPrefixes(string?, int)"/> without scanning the store.
/// Thread-safe (one lock; FASTER sessions are single-threaded).
/// <para>This class is the lock, the applied position and the order of things; its parts each own one concern:
/// <see cref="FasterKvStore"/> (FASTER itself), <see cref="KvCommandApplier"/> (a command's effect on the data),
/// <see cref="ChangeHistory"/> (the watch history), <see cref="SessionTableStore"/> (client sessions),
/// <see cref="KeyIndexFile"/> (the indexes written beside each checkpoint and read on open),
/// <see cref="KeyIndexRebuilder"/> (rebuilding them when that file is missing or damaged) and
/// <see cref="CheckpointFiles"/> (snapshot files).</para>
/// </summary>
internal partial class KvStateMachine : IDisposable
{
    /// <summary>Keys starting with this are reserved for the state machine's own bookkeeping.</summary>
    public const string ReservedPrefix = "\0skiff/";
    /// <summary>Longest key accepted, in UTF-8 bytes.</summary>
    public const int MaxKeyBytes = Keys.MaxKeyBytes;

    private readonly string _dir;
    private readonly KvOptions _options;
    private readonly object _gate = new();
    private readonly KeyIndex _index = new();
    private readonly FreeSpaceCheck _space;
    // Made afresh by every load (open, and the reload after a snapshot install), from what the store holds.
    private FasterKvStore _store = null!;
    private KvCommandApplier _commands = null!;
    private ChangeHistory _history = null!;
    private SessionTableStore _sessions = null!;
    private AuthStore _auth = null!;
    private KvCompactor? _compactor;
    private (long Index, long Term, KeyIndex.Frozen Keys, Task<(Guid Token, List<(string, long)> Files)> Checkpoint)? _snapshot;
    private Task _indexCleanup = Task.CompletedTask;
    private bool _disposed;

    /// <summary>The index of the last applied entry (0 if none).</summary>
    public long AppliedIndex { get; private set; }

    /// <summary>The term of the last applied entry (0 if none).</summary>
    public long AppliedTerm { get; private set; }

    /// <summary>Changes at or below this index are no longer in the change history (trimmed, or made before the
    /// store kept one); every change after it, up to <see cref="AppliedIndex"/>, is.</summary>
    public long HistoryFloor => _history?.Floor ?? 0;

    /// <summary>The client sessions (for tests and diagnostics).</summary>
    public Sessions.Table ClientSessions { get { lock (_gate) return _sessions.Table; } }

    /// <summary>The auth state (users, roles, the auth switch) as of the applied index; read from any thread.</summary>
    public AuthState Auth => _auth?.State ?? Skiff.Core.Auth.empty;

    /// <summary>Number of changes in the change history.</summary>
    public int HistoryCount { get { lock (_gate) return _history.Count; } }

    /// <summary>The latest snapshot taken or installed in this directory, if any.</summary>
    public SnapshotInfo? LatestSnapshot { get; private set; }

    /// <summary>Number of keys.</summary>
    public int KeyCount { get { lock (_gate) return _index.Count; } }

    /// <summary>log2 of the store's page: a value larger than <see cref="KvOptions.MaxValueBytesFor"/> of it is refused.</summary>
    public int PageSizeBits { get { lock (_gate) return _store.Geometry.PageSizeBits; } }

    /// <summary>Timings of the last open: FASTER's checkpoint recovery, then the key-index rebuild.</summary>
    public KvOpenStats LastOpen { get; private set; }

    private KvStateMachine(string dir, KvOptions options)
    {
        _dir = dir;
        _options = options;
        _space = new FreeSpaceCheck(dir, options.EffectiveMinFreeDiskBytes,
            min => $"the key-value store needs at least {min} to write safely");
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
            KvFormatMigration.ConvertIfNeeded(_dir, _options, logHoldsEverything);
            _store = FasterKvStore.Create(_dir, _options);
            bool hasCheckpoint = _store.HasCheckpoint;
            if (hasCheckpoint && !_store.TryRecoverLatestCheckpoint())
            {
                // Every checkpoint here is unfinished: the node died while taking its first snapshot. Nothing was
                // compacted behind an unfinished snapshot, so when the log still starts at index 1 the store is
                // rebuilt from it; otherwise entries would be missing, and that must not pass silently.
                if (!logHoldsEverything)
                    throw new SkiffException(ErrorKind.StorageCorrupted,
                        $"the key-value store in {_dir} has no complete checkpoint and the log no longer starts at index 1");
                DisposeStore();
                CheckpointFiles.DeleteContents(_dir);
                Load(logHoldsEverything: false);
                return;
            }
            _store.StartSession();
            var applied = AppliedRecord.Decode(_store.Read(AppliedRecord.Key));
            AppliedIndex = applied.Index;
            AppliedTerm = applied.Term;
            var recovered = watch.Elapsed;
            var source = !hasCheckpoint ? "no checkpoint" : !_options.KeyIndexFile ? "index file off" : "file";
            var found = source == "file" ? KeyIndexFile.TryLoad(_dir, _store.LatestCheckpointToken(), applied.Index, _index, ref source) : null;
            found ??= KeyIndexRebuilder.Rebuild(_store, _index, _options.KeyIndexRebuild);
            _history = new ChangeHistory(_store, _dir, _options.WatchHistory, _options.WatchHistoryBytes, applied.HistoryFloor, found.HistoryIndexes);
            _sessions = SessionTableStore.Load(_store, _dir, applied.SessionClock, found.SessionIds);
            _auth = AuthStore.Load(_store, _dir);
            _commands = new KvCommandApplier(_store, _index);
            _compactor = new KvCompactor(_store, LiveRecords, _options.CompactionMinBytes);
            LastOpen = new KvOpenStats(recovered, watch.Elapsed - recovered, _index.Count, source);
            if (hasCheckpoint)
            {
                var token = _store.LatestCheckpointToken();
                LatestSnapshot = new SnapshotInfo(AppliedIndex, AppliedTerm, token, CheckpointFiles.Manifest(_dir, token, FirstSegment));
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

    /// <summary>Throws <see cref="ErrorKind.InvalidKey"/> unless the key is non-empty, at most
    /// <see cref="MaxKeyBytes"/> UTF-8 bytes and free of NUL characters. For callers validating proposals.</summary>
    /// <param name="key">The key.</param>
    public static void ValidateKey(string key) => KeyRules.ValidateKey(key);

    /// <summary>Whether <paramref name="key"/> is in the reserved namespace (never a client's key).</summary>
    internal static bool IsReserved(string key) => key.StartsWith(ReservedPrefix, StringComparison.Ordinal);

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
    public CommandResult? Apply(long index, long term, Command command, out Change? change)
    {
        var result = Apply(index, term, LogCommand.NewPlain(command), out change);
        return result is null ? null : Sessions.resultOf(result)?.Value;
    }

    /// <summary>Applies a log command at <paramref name="index"/>: a key-value command alone, or inside a client
    /// session (applied at most once per session request; a repeat is answered from the session's results), or
    /// the opening or closing of a session. See <see cref="Apply(long, long, Command, out Change?)"/>.</summary>
    /// <param name="index">The entry's index.</param>
    /// <param name="term">The entry's term.</param>
    /// <param name="command">The command.</param>
    /// <param name="change">The change made, or null if none.</param>
    /// <returns>What the proposing client sees, or null if the index was already applied.</returns>
    public LogResult? Apply(long index, long term, LogCommand command, out Change? change)
    {
        change = null;
        lock (_gate)
        {
            ThrowIfDisposed();
            if (index <= AppliedIndex) return null;
            _space.Ensure();
            WaitWhileOverlayFull();
            try
            {
                if (command is LogCommand.Auth auth)
                {
                    var authResult = _auth.Apply(auth.command);
                    SetAppliedUnlocked(index, term);
                    return authResult;
                }
                if (_options.UnsafeNoSessionDedup && command is LogCommand.InSession unsafeWrite) command = LogCommand.NewPlain(unsafeWrite.command);
                var applied = Sessions.apply(_commands.For(index), _sessions.Table, index, command);
                _sessions.Update(applied.Table, applied.Touched);
                change = _commands.LastChange;
                if (change is { } ch) _history.Record(ch);
                SetAppliedUnlocked(index, term);
                return applied.Result;
            }
            catch (Exception e) when (e is not SkiffException)
            {
                throw new SkiffException(ErrorKind.StorageError, $"applying entry {index} in {_dir}: {e.Message}", e);
            }
        }
    }

    /// <summary>Decodes an entry's payload with <see cref="LogCommandCodec.decode"/> and applies it. An empty payload
    /// (a leader's no-op) only advances the applied index. A payload that does not decode is
    /// <see cref="ErrorKind.StorageCorrupted"/> and applies nothing, as the runtime's applier stops the member on
    /// one: skipping it would leave this state machine silently behind every other.</summary>
    /// <param name="index">The entry's index.</param>
    /// <param name="term">The entry's term.</param>
    /// <param name="payload">The entry's payload.</param>
    /// <returns>What applying did, or null (an empty payload, or an index already applied).</returns>
    public CommandResult? ApplyEncoded(long index, long term, ReadOnlySpan<byte> payload)
    {
        if (payload.Length == 0)
        {
            AdvanceApplied(index, term);
            return null;
        }
        var decoded = LogCommandCodec.decode(payload);
        if (decoded.IsError)
            throw new SkiffException(ErrorKind.StorageCorrupted, $"the entry at index {index} does not decode: {decoded.ErrorValue}");
        return Apply(index, term, decoded.ResultValue, out _) is { } result ? Sessions.resultOf(result)?.Value : null;
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
            _space.Ensure();
            SetAppliedUnlocked(index, term);
        }
    }

    private void SetAppliedUnlocked(long index, long term)
    {
        _store.Upsert(AppliedRecord.Key, new AppliedRecord(index, term, _history.Floor, _sessions.Table.Clock).Encode());
        AppliedIndex = index;
        AppliedTerm = term;
    }

    /// <summary>The value of a key, or null.</summary>
    /// <param name="key">The key.</param>
    /// <returns>A copy of the value, or null if absent.</returns>
    public byte[]? Get(string key)
    {
        lock (_gate)
        {
            ThrowIfDisposed();
            if (IsReserved(key)) return null;
            return StorageIo.Guard(_dir, () => _store.Read(key));
        }
    }

    /// <summary>All keys starting with <paramref name="prefix"/> (ordinal), in ordinal order; "" lists all.
    /// Served from the ordered key index, not by scanning the store.</summary>
    /// <param name="prefix">The prefix.</param>
    /// <param name="limit">At most this many keys.</param>
    /// <returns>The keys.</returns>
    public IReadOnlyList<string> ListKeys(string prefix, int limit = int.MaxValue) => ListKeys(prefix, null, limit);

    /// <summary>Up to <paramref name="limit"/> keys starting with <paramref name="prefix"/> and after
    /// <paramref name="startAfter"/> (null: from the first), in ordinal order: one page, read under the lock in
    /// O(log n + limit), so a caller that pages never holds up applies for a whole walk.</summary>
    /// <param name="prefix">The prefix.</param>
    /// <param name="startAfter">Only keys after this one.</param>
    /// <param name="limit">At most this many keys.</param>
    /// <returns>The keys.</returns>
    public IReadOnlyList<string> ListKeys(string prefix, string? startAfter, int limit)
    {
        lock (_gate)
        {
            ThrowIfDisposed();
            return _index.List(prefix, startAfter, limit);
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

    /// <summary>Up to <paramref name="limit"/> directory parts after <paramref name="startAfter"/> (null: from the
    /// first), in ordinal order: one page, read under the lock in O(log n + limit).</summary>
    /// <param name="startAfter">Only parts after this one.</param>
    /// <param name="limit">At most this many.</param>
    /// <returns>The prefixes.</returns>
    public IReadOnlyList<string> GetPrefixes(string? startAfter, int limit)
    {
        lock (_gate)
        {
            ThrowIfDisposed();
            return _index.Prefixes(startAfter, limit);
        }
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
    public bool TryReadHistory(long from, long to, string prefix, List<Change> into, out long floor)
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
                floor = _history.Floor;
                if (next <= floor)
                {
                    into.RemoveRange(start, into.Count - start);
                    return false;
                }
                if (_history.ReadChunk(ref next, to, prefix, into, Chunk)) return true;
            }
        }
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    /// <summary>The hybrid log segment the store begins in: the files of earlier ones are garbage.</summary>
    private long FirstSegment => _store.BeginAddress >> _store.Geometry.SegmentSizeBits;

    private void DisposeStore()
    {
        _compactor?.Abandon(); // its scan must be gone before the store is
        _compactor = null;
        _snapshot = null; // the store waits for a checkpoint still being taken
        try { _indexCleanup.Wait(); }
        catch (AggregateException) { } // its files go with the store, or the next clean-up takes them
        _indexCleanup = Task.CompletedTask;
        _store?.Dispose();
        _store = null!;
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
}
