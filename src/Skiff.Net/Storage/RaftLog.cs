namespace Skiff.Net.Storage;

/// <summary>One Raft log entry: its position, the term it was created in, and opaque payload bytes.</summary>
/// <param name="Index">The entry's index (1-based, contiguous).</param>
/// <param name="Term">The term of the leader that created it.</param>
/// <param name="Payload">The bytes to replicate (an encoded command, or empty for a no-op).</param>
internal sealed record LogEntry(long Index, long Term, byte[] Payload);

/// <summary>
/// The durable Raft log: Skiff's own segmented write-ahead log (<see cref="WalSegments"/>).
/// <para>Records are <c>[type u8][index i64][term i64][length i32][payload][crc32c u32]</c> (<see cref="LogRecord"/>),
/// appended to segment files of at most <see cref="RaftLogOptions.SegmentSizeBits"/>. The log only appends, so a
/// later record supersedes: an entry at index i drops any entries at i and above written before it (suffix
/// replacement); a <c>Base(i, t)</c> record drops entries up to i and says the term at i is t (compaction, or a
/// snapshot install that keeps the suffix); a <c>Reset</c> drops everything. Recovery (<see cref="WalRecovery"/>)
/// applies these rules. Once a base or reset record is durable, the segments before both it and the first live
/// entry are deleted (and the deletion made durable).</para>
/// <para>Appends use group commit (<see cref="WalWriter"/>): concurrent <c>AppendAsync</c> callers enqueue their
/// batches and one writer thread writes everything enqueued so far and syncs it with one fdatasync, then completes
/// every caller it covered.</para>
/// <para>Reads (<see cref="TermAt"/>, <see cref="ReadAsync"/>, <see cref="LastIndex"/>) see only durable entries:
/// the <see cref="LogIndex"/> this class guards learns of a batch only once it is durable.</para>
/// <para>A log directory written by older versions (FASTER's FasterLog) is converted on open
/// (<see cref="LegacyLogMigration"/>).</para>
/// </summary>
internal sealed class RaftLog : IAsyncDisposable, IDisposable
{
    private readonly RaftLogOptions _options;
    private readonly WalSegments _segments;
    private readonly WalWriter _writer;

    private readonly object _state = new();
    private readonly LogIndex _durable = new(); // guarded by _state
    private long _baseAddress;                  // guarded by _state: the last durable base/reset record, -1 if none
    // Deletions of segments a durable base made unnecessary, one after the other, off the writer thread: unlinking a
    // 4 MiB segment whose pages are still being written back took 5-20 ms here, and the appends behind it waited.
    // On a crash test's file system they run inline, so that its seed replays the same order of operations (a
    // deletion that runs later, or not at all before a crash, is a case those tests already cover).
    private readonly bool _reclaimInline;
    private Task _reclaiming = Task.CompletedTask; // guarded by _state

    /// <summary>The largest payload an entry may carry: a record must fit one segment (and at most 4 MiB).</summary>
    public int MaxPayloadBytes => (int)Math.Min(4L << 20, _segments.SegmentBytes - WalSegments.HeaderSize) - LogRecord.Overhead;

    /// <summary>Number of syncs the writer made; for the benchmark.</summary>
    public long Commits => _writer.Commits;

    /// <summary>Bytes of a torn write cut from the end of the log when it was opened (never acknowledged).</summary>
    public long TornBytesDropped { get; }

    /// <summary>The commit index recorded with the log when it was opened (<see cref="LogRecordType.Commit"/>; 0 if
    /// none): every entry up to it was committed.</summary>
    public long RecoveredCommitHint { get; }

    /// <summary>Entries moved over from a log written by an older version when this one was opened (0 if none).</summary>
    public long MigratedEntries { get; }

    /// <summary>Number of segment files.</summary>
    public int SegmentCount => _segments.Count;

    private RaftLog(string dir, RaftLogOptions options, IWalFileSystem fs, long migrated)
    {
        _options = options;
        _segments = new WalSegments(fs, dir, 1L << options.SegmentSizeBits, options.PreallocateSegments);
        try
        {
            var recovered = WalRecovery.Run(_segments, _durable, MaxPayloadBytes + LogRecord.Overhead);
            TornBytesDropped = recovered.TornBytes;
            _baseAddress = recovered.BaseAddress;
            RecoveredCommitHint = recovered.CommitHint;
            MigratedEntries = migrated;
            var space = fs is RealWalFileSystem && options.EffectiveMinFreeDiskBytes > 0
                ? new FreeSpaceCheck(dir, options.EffectiveMinFreeDiskBytes, min => $"the log needs at least {min} to append safely")
                : null;
            _reclaimInline = fs.Deterministic;
            _writer = new WalWriter(_segments, space, _durable.BaseIndex, _durable.LastIndex, ApplyDurable);
        }
        catch
        {
            _segments.Dispose();
            throw;
        }
    }

    /// <summary>Opens (recovering) or creates the log in <paramref name="dir"/>.</summary>
    /// <param name="dir">The log's directory (created if missing).</param>
    /// <param name="options">Settings; null for defaults.</param>
    /// <returns>The open log.</returns>
    /// <exception cref="SkiffException"><see cref="ErrorKind.StorageCorrupted"/> for a checksum failure anywhere
    /// but the tail; <see cref="ErrorKind.StorageError"/> for I/O failures.</exception>
    public static RaftLog Open(string dir, RaftLogOptions? options = null) => Open(dir, options, RealWalFileSystem.Instance);

    /// <summary>Opens the log without looking for an old log to migrate (the migration itself uses this).</summary>
    internal static RaftLog OpenWithoutMigration(string dir, RaftLogOptions options) =>
        new(dir, options, RealWalFileSystem.Instance, 0);

    /// <summary>Opens the log on the given file system (tests record and replay its writes).</summary>
    internal static RaftLog Open(string dir, RaftLogOptions? options, IWalFileSystem fs)
    {
        options ??= new RaftLogOptions();
        try
        {
            fs.CreateDirectory(dir);
            long migrated = fs is RealWalFileSystem ? LegacyLogMigration.Run(dir, options) : 0;
            return new RaftLog(dir, options, fs, migrated);
        }
        catch (Exception e)
        {
            if (e is SkiffException) throw;
            if (e is IOException or UnauthorizedAccessException) throw StorageIo.Wrap(dir, e);
            throw new SkiffException(ErrorKind.StorageError, $"cannot open the log in {dir}: {e.Message}", e);
        }
    }

    /// <summary>The first index still in the log (<see cref="LastIndex"/> + 1 when the log is empty).</summary>
    public long FirstIndex { get { lock (_state) return _durable.BaseIndex + 1; } }

    /// <summary>The last durable index (the snapshot/base index when the log is empty, 0 for a new log).</summary>
    public long LastIndex { get { lock (_state) return _durable.LastIndex; } }

    /// <summary>The term of the last durable entry (or of the base when empty; 0 for a new log).</summary>
    public long LastTerm { get { lock (_state) return _durable.LastTerm; } }

    /// <summary>The term of the entry at <paramref name="index"/>; for the base index (just before
    /// <see cref="FirstIndex"/>) the base term if known; null if the index is compacted or beyond the end.</summary>
    /// <param name="index">The index.</param>
    /// <returns>Its term, or null.</returns>
    public long? TermAt(long index)
    {
        lock (_state)
        {
            if (index == _durable.BaseIndex) return _durable.BaseTerm >= 0 ? _durable.BaseTerm : null;
            if (index < _durable.BaseIndex || index > _durable.LastIndex) return null;
            return _durable.TermOf(index);
        }
    }

    /// <summary>
    /// Appends entries durably; returns once they are on disk. Entries must be contiguous. If the first index is at
    /// or below the last index, the entries from there on are replaced (the conflicting suffix is dropped). Many
    /// concurrent callers share one sync.
    /// </summary>
    /// <param name="entries">Contiguous entries; the first index must be in (base, last + 1].</param>
    /// <param name="cancellationToken">Stops waiting (the entries may still become durable).</param>
    /// <returns>A task that completes when the entries are durable.</returns>
    /// <exception cref="ArgumentException">Entries not contiguous, or starting at a compacted index or past
    /// last + 1.</exception>
    /// <exception cref="SkiffException"><see cref="ErrorKind.StorageError"/> if the disk fails.</exception>
    public Task AppendAsync(IReadOnlyList<LogEntry> entries, CancellationToken cancellationToken = default) =>
        AppendAsync(entries, 0, cancellationToken);

    /// <summary>Appends entries durably (see <see cref="AppendAsync(IReadOnlyList{LogEntry}, CancellationToken)"/>)
    /// and records <paramref name="commitHint"/> after them: the caller knew every entry up to it committed, in
    /// the log as it stands once these entries are written. Recovery reports it (<see cref="RecoveredCommitHint"/>).</summary>
    /// <param name="entries">Contiguous entries; the first index must be in (base, last + 1].</param>
    /// <param name="commitHint">The caller's commit index (0 to record none).</param>
    /// <param name="cancellationToken">Stops waiting (the entries may still become durable).</param>
    /// <returns>A task that completes when the entries are durable.</returns>
    public Task AppendAsync(IReadOnlyList<LogEntry> entries, long commitHint, CancellationToken cancellationToken = default)
    {
        if (entries.Count == 0) return Task.CompletedTask;
        for (int i = 1; i < entries.Count; i++)
            if (entries[i].Index != entries[0].Index + i)
                throw new ArgumentException($"entries are not contiguous at position {i}", nameof(entries));
        foreach (var e in entries)
            if (e.Payload.Length > MaxPayloadBytes)
                throw new SkiffException(ErrorKind.ValueTooLarge,
                    $"entry {e.Index} has {e.Payload.Length} payload bytes; a log record holds at most {MaxPayloadBytes}");
        var durable = _writer.Append(entries, commitHint);
        return cancellationToken.CanBeCanceled ? durable.WaitAsync(cancellationToken) : durable;
    }

    /// <summary>Records <paramref name="commitHint"/> (the caller's commit index, learned without an append) after
    /// everything appended so far, without waiting and without a sync of its own: the next append's sync makes it
    /// durable, and recovery reports the last one that survived (<see cref="RecoveredCommitHint"/>).</summary>
    /// <param name="commitHint">The caller's commit index.</param>
    public void NoteCommit(long commitHint) => _writer.NoteCommit(commitHint);

    /// <summary>Appends one entry durably; see <see cref="AppendAsync(IReadOnlyList{LogEntry}, CancellationToken)"/>.</summary>
    /// <param name="entry">The entry.</param>
    /// <returns>A task that completes when it is durable.</returns>
    public Task AppendAsync(LogEntry entry) => AppendAsync(new[] { entry });

    /// <summary>Reads durable entries <paramref name="from"/>..<paramref name="toInclusive"/> (clamped to the log),
    /// stopping early once <paramref name="maxBytes"/> of payload are gathered (always at least one entry).</summary>
    /// <param name="from">First index wanted; must be at least <see cref="FirstIndex"/>.</param>
    /// <param name="toInclusive">Last index wanted.</param>
    /// <param name="maxBytes">Payload budget.</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>The entries, in order.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="from"/> is compacted.</exception>
    /// <exception cref="SkiffException"><see cref="ErrorKind.StorageCorrupted"/> if a record fails its checksum.</exception>
    public Task<IReadOnlyList<LogEntry>> ReadAsync(long from, long toInclusive, long maxBytes = long.MaxValue,
        CancellationToken cancellationToken = default)
    {
        long[] addrs;
        lock (_state)
        {
            if (from <= _durable.BaseIndex)
                throw new ArgumentOutOfRangeException(nameof(from), $"index {from} is compacted (first index {_durable.BaseIndex + 1})");
            toInclusive = Math.Min(toInclusive, _durable.LastIndex);
            if (toInclusive < from) return Task.FromResult<IReadOnlyList<LogEntry>>(Array.Empty<LogEntry>());
            addrs = _durable.AddressesOf(from, (int)(toInclusive - from + 1));
        }
        try
        {
            return Task.FromResult<IReadOnlyList<LogEntry>>(WalReader.Read(_segments, from, addrs, maxBytes, cancellationToken));
        }
        catch (Exception e) when (e is not OperationCanceledException && CompactedPast(from))
        {
            // A compaction moved the start of the log past what we were reading: not a storage failure.
            throw new ArgumentOutOfRangeException(nameof(from), $"index {from} was compacted while being read ({e.Message})");
        }
        catch (Exception e) when (e is not SkiffException and not OperationCanceledException)
        {
            throw new SkiffException(ErrorKind.StorageError, $"reading the log in {_segments.Dir}: {e.Message}", e);
        }
    }

    private bool CompactedPast(long index)
    {
        lock (_state) return index <= _durable.BaseIndex;
    }

    /// <summary>Drops entries behind a snapshot at <paramref name="snapshotIndex"/>, keeping the configured tail
    /// (<see cref="RaftLogOptions.KeepTail"/>) of entries at and before it, and never past the last durable entry.
    /// The task completes when the new base is durable; the segments this made unnecessary are then deleted in the
    /// background (and at the latest before the log is closed).</summary>
    /// <param name="snapshotIndex">The snapshot's last included index (must be durable in the log).</param>
    /// <returns>A task that completes when the new base is durable.</returns>
    public Task CompactUntil(long snapshotIndex)
    {
        long newBase, newBaseTerm;
        lock (_state)
        {
            newBase = Math.Min(snapshotIndex - _options.KeepTail, _durable.LastIndex);
            if (newBase <= _durable.BaseIndex) return Task.CompletedTask;
            newBaseTerm = _durable.TermOf(newBase);
        }
        return _writer.WriteBase(LogRecordType.Base, newBase, newBaseTerm);
    }

    /// <summary>After installing a snapshot at (<paramref name="index"/>, <paramref name="term"/>): if
    /// <paramref name="keepSuffix"/> (our entry at index has that term), drop entries up to index and keep the
    /// rest; otherwise discard the whole log. Either way the next append goes after the kept entries.</summary>
    /// <param name="index">The snapshot's last included index.</param>
    /// <param name="term">Its term.</param>
    /// <param name="keepSuffix">Keep entries after index.</param>
    /// <returns>A task that completes when durable.</returns>
    public Task ResetToSnapshot(long index, long term, bool keepSuffix) =>
        _writer.WriteBase(keepSuffix ? LogRecordType.Base : LogRecordType.Reset, index, term);

    /// <summary>The writer thread's hand-off: batches now durable become visible to readers; the segments made
    /// unnecessary by a durable base are then deleted in the background (the base record's and the first live
    /// entry's stay).</summary>
    private void ApplyDurable(List<LogBatch> batches)
    {
        long keepFrom = -1;
        lock (_state)
        {
            foreach (var b in batches)
                switch (b.Kind)
                {
                    case LogRecordType.Entry:
                        _durable.Append(b.First, b.Terms, b.Addresses);
                        break;
                    case LogRecordType.Base:
                    case LogRecordType.Reset:
                        _durable.SetBase(b.Kind == LogRecordType.Reset, b.First, b.BaseTerm);
                        _baseAddress = b.Addresses[0];
                        keepFrom = _baseAddress;
                        break;
                }
            if (keepFrom >= 0 && _durable.FirstAddress is { } first) keepFrom = Math.Min(keepFrom, first);
        }
        if (keepFrom < 0) return;
        var seq = keepFrom >> 32;
        if (_reclaimInline)
        {
            DeleteSegmentsBefore(seq);
            return;
        }
        lock (_state)
            _reclaiming = _reclaiming.ContinueWith(_ => DeleteSegmentsBefore(seq), CancellationToken.None,
                TaskContinuationOptions.None, TaskScheduler.Default);
    }

    private void DeleteSegmentsBefore(long seq)
    {
        try
        {
            _segments.DeleteBefore(seq);
        }
        catch (SkiffException)
        {
            // The files stay; the next compaction or recovery deletes them. Nothing acknowledged depends on it.
        }
    }

    /// <summary>Finishes pending writes and closes the log.</summary>
    /// <returns>A task that completes when closed.</returns>
    public async ValueTask DisposeAsync()
    {
        if (!await _writer.StopAsync().ConfigureAwait(false)) return;
        Task reclaiming;
        lock (_state) reclaiming = _reclaiming;
        try { await reclaiming.ConfigureAwait(false); }
        catch (Exception) { /* what it failed to delete, recovery deletes: it lies before the base */ }
        _segments.Dispose();
    }

    /// <summary>Closes the log; see <see cref="DisposeAsync"/>.</summary>
    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();
}
