using FASTER.core;

namespace Skiff.Net.Storage;

/// <summary>One Raft log entry: its position, the term it was created in, and opaque payload bytes.</summary>
/// <param name="Index">The entry's index (1-based, contiguous).</param>
/// <param name="Term">The term of the leader that created it.</param>
/// <param name="Payload">The bytes to replicate (an encoded command, or empty for a no-op).</param>
internal sealed record LogEntry(long Index, long Term, byte[] Payload);

/// <summary>
/// The durable Raft log on a FASTER <see cref="FasterLog"/>.
/// <para>Records are <c>[type u8][index i64][term i64][length i32][payload][crc32c u32]</c> (<see cref="LogRecord"/>).
/// FasterLog only appends, so every record carries its index and a later record supersedes: an entry at index i
/// drops any entries at i and above written before it (suffix replacement); a <c>Base(i, t)</c> record drops
/// entries up to i and says the term at i is t (written by compaction and after installing a snapshot). Recovery
/// (<see cref="LogRecovery"/>) scans the log in address order, applies these rules, and so keeps the last-written
/// version of each index.</para>
/// <para>Appends use group commit (<see cref="LogWriter"/>): concurrent <c>AppendAsync</c> callers enqueue their
/// batches and one commit loop makes everything enqueued so far durable with one commit, then completes every
/// caller it covered.</para>
/// <para>Reads (<see cref="TermAt"/>, <see cref="ReadAsync"/>, <see cref="LastIndex"/>) see only durable entries:
/// the <see cref="LogIndex"/> this class guards learns of a batch only once it is durable.</para>
/// </summary>
internal sealed class RaftLog : IAsyncDisposable, IDisposable
{
    private readonly string _logPath;
    private readonly RaftLogOptions _options;
    private readonly FasterLogFiles _files;
    private readonly LogWriter _writer;

    private readonly object _state = new();
    private readonly LogIndex _durable = new(); // guarded by _state

    /// <summary>The largest payload an entry may carry: a record must fit one FASTER page.</summary>
    public int MaxPayloadBytes => (1 << _options.PageSizeBits) - LogRecord.Overhead - 64;

    /// <summary>Number of commits the commit loop issued; for the benchmark.</summary>
    public long Commits => _writer.Commits;

    /// <summary>Metadata writes made by our commit manager, if one is in use; for the benchmark.</summary>
    public long MetadataWrites => _files.MetadataWrites;

    /// <summary>Torn tail records found and dropped when the log was opened (their addresses).</summary>
    public IReadOnlyList<long> DroppedTornRecords { get; }

    /// <summary>FASTER commit records that failed their checksum and were skipped when the log was opened.</summary>
    public int DamagedCommitRecords { get; }

    /// <summary>The range of log addresses found past a hole when the log was opened, and voided; null if none.
    /// See <see cref="VoidRanges"/>.</summary>
    public (long From, long Until)? HoleVoided { get; }

    private RaftLog(string dir, RaftLogOptions options, FasterLogFiles files)
    {
        _logPath = Path.Combine(dir, "raft.log");
        _options = options;
        _files = files;
        var recovered = LogRecovery.Run(files, dir, _logPath, options, _durable);
        DroppedTornRecords = recovered.TornRecords;
        DamagedCommitRecords = recovered.DamagedCommitRecords;
        HoleVoided = recovered.HoleVoided;
        var space = new FreeSpaceCheck(dir, options.EffectiveMinFreeDiskBytes, min => $"the log needs at least {min} to append safely");
        _writer = new LogWriter(files.Log, _logPath, space, _durable.BaseIndex, _durable.LastIndex, ApplyDurable);
        _writer.WriteSkips(DroppedTornRecords);
    }

    /// <summary>Opens (recovering) or creates the log in <paramref name="dir"/>.</summary>
    /// <param name="dir">The log's directory (created if missing).</param>
    /// <param name="options">Settings; null for defaults.</param>
    /// <returns>The open log.</returns>
    /// <exception cref="SkiffException"><see cref="ErrorKind.StorageCorrupted"/> for a checksum failure anywhere
    /// but the tail; <see cref="ErrorKind.StorageError"/> for I/O failures.</exception>
    public static RaftLog Open(string dir, RaftLogOptions? options = null)
    {
        options ??= new RaftLogOptions();
        StorageIo.Guard(dir, () => StorageIo.CreateDirectoryDurably(dir));
        FasterLogFiles? files = null;
        try
        {
            // The log's files keep the page and segment sizes they were made with, whatever the options say now.
            var geometry = StoreGeometry.Resolve(dir, new StoreGeometry(options.PageSizeBits, Math.Max(options.PageSizeBits, options.SegmentSizeBits)),
                RaftLogOptions.LegacyGeometry, "raft.log");
            options = options with { PageSizeBits = geometry.PageSizeBits, SegmentSizeBits = geometry.SegmentSizeBits };
            files = FasterLogFiles.Open(dir, options);
            return new RaftLog(dir, options, files);
        }
        catch (Exception e)
        {
            files?.Dispose();
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
    /// concurrent callers share one commit.
    /// </summary>
    /// <param name="entries">Contiguous entries; the first index must be in (base, last + 1].</param>
    /// <param name="cancellationToken">Stops waiting (the entries may still become durable).</param>
    /// <returns>A task that completes when the entries are durable.</returns>
    /// <exception cref="ArgumentException">Entries not contiguous, or starting at a compacted index or past
    /// last + 1.</exception>
    /// <exception cref="SkiffException"><see cref="ErrorKind.StorageError"/> if the disk fails.</exception>
    public Task AppendAsync(IReadOnlyList<LogEntry> entries, CancellationToken cancellationToken = default)
    {
        if (entries.Count == 0) return Task.CompletedTask;
        for (int i = 1; i < entries.Count; i++)
            if (entries[i].Index != entries[0].Index + i)
                throw new ArgumentException($"entries are not contiguous at position {i}", nameof(entries));
        foreach (var e in entries)
            if (e.Payload.Length > MaxPayloadBytes)
                throw new SkiffException(ErrorKind.ValueTooLarge,
                    $"entry {e.Index} has {e.Payload.Length} payload bytes; a log record must fit one page ({MaxPayloadBytes} bytes)");
        var durable = _writer.Append(entries);
        return cancellationToken.CanBeCanceled ? durable.WaitAsync(cancellationToken) : durable;
    }

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
    public async Task<IReadOnlyList<LogEntry>> ReadAsync(long from, long toInclusive, long maxBytes = long.MaxValue,
        CancellationToken cancellationToken = default)
    {
        long[] addrs;
        long endAddress;
        lock (_state)
        {
            if (from <= _durable.BaseIndex)
                throw new ArgumentOutOfRangeException(nameof(from), $"index {from} is compacted (first index {_durable.BaseIndex + 1})");
            toInclusive = Math.Min(toInclusive, _durable.LastIndex);
            if (toInclusive < from) return Array.Empty<LogEntry>();
            addrs = _durable.AddressesOf(from, (int)(toInclusive - from + 1));
            // The scan must end past the whole last record, not just its first byte: FASTER loads a page from disk
            // only up to the scan's end address (rounded to a sector), so a last record that crosses a sector
            // boundary would be read half stale. The next live record starts after it; the durable tail is past
            // everything durable.
            endAddress = toInclusive < _durable.LastIndex ? _durable.AddressOf(toInclusive + 1) : _files.Log.CommittedUntilAddress;
        }
        var result = new List<LogEntry>(addrs.Length);
        long bytes = 0;
        using var iter = _files.Log.Scan(addrs[0], endAddress, scanUncommitted: false);
        int k = 0;
        try
        {
            while (true)
            {
                cancellationToken.ThrowIfCancellationRequested();
                byte[] data;
                int length;
                long address;
                try
                {
                    if (!iter.GetNext(out data, out length, out address, out _))
                    {
                        if (iter.Ended) break;
                        await iter.WaitAsync(cancellationToken).ConfigureAwait(false);
                        continue;
                    }
                }
                catch (FasterException e) when (FasterLogFiles.IsDamagedCommitRecord(e))
                {
                    _files.ReleaseEpoch(); // a damaged FASTER commit record between our records: see LogRecovery
                    continue;
                }
                if (address < addrs[k]) continue; // a superseded record between live ones
                if (address != addrs[k])
                    throw Corrupt(address, $"expected the record of index {from + k} at address {addrs[k]}, found one at {address}");
                var rec = LogRecord.Decode(data, length) ?? throw Corrupt(address, "checksum mismatch");
                if (rec.Type != LogRecordType.Entry || rec.Index != from + k)
                    throw Corrupt(address, $"expected entry {from + k}, found type {(byte)rec.Type} index {rec.Index}");
                result.Add(new LogEntry(rec.Index, rec.Term, rec.Payload));
                bytes += rec.Payload.Length;
                k++;
                if (k == addrs.Length || bytes >= maxBytes) break;
            }
        }
        catch (Exception e) when (e is not OperationCanceledException && CompactedPast(from))
        {
            // A compaction moved the start of the log past what we were reading: not a storage failure.
            throw new ArgumentOutOfRangeException(nameof(from), $"index {from} was compacted while being read ({e.Message})");
        }
        catch (Exception e) when (e is not SkiffException and not OperationCanceledException)
        {
            throw new SkiffException(ErrorKind.StorageError, $"reading {_logPath}: {e.Message}", e);
        }
        if (k == 0 && addrs.Length > 0)
            throw new SkiffException(ErrorKind.StorageError, $"could not read index {from} from {_logPath}");
        return result;
    }

    private bool CompactedPast(long index)
    {
        lock (_state) return index <= _durable.BaseIndex;
    }

    /// <summary>Drops entries behind a snapshot at <paramref name="snapshotIndex"/>, keeping the configured tail
    /// (<see cref="RaftLogOptions.KeepTail"/>) of entries at and before it. Durable on return; disk space of whole
    /// segments is released by FASTER.</summary>
    /// <param name="snapshotIndex">The snapshot's last included index (must be durable in the log).</param>
    /// <returns>A task that completes when the new base is durable.</returns>
    public async Task CompactUntil(long snapshotIndex)
    {
        long newBase, newBaseTerm;
        lock (_state)
        {
            newBase = Math.Min(snapshotIndex - _options.KeepTail, _durable.LastIndex);
            if (newBase <= _durable.BaseIndex) return;
            newBaseTerm = _durable.TermOf(newBase);
        }
        await WriteBase(LogRecordType.Base, newBase, newBaseTerm).ConfigureAwait(false);
    }

    /// <summary>After installing a snapshot at (<paramref name="index"/>, <paramref name="term"/>): if
    /// <paramref name="keepSuffix"/> (our entry at index has that term), drop entries up to index and keep the
    /// rest; otherwise discard the whole log. Either way the next append goes after the kept entries.</summary>
    /// <param name="index">The snapshot's last included index.</param>
    /// <param name="term">Its term.</param>
    /// <param name="keepSuffix">Keep entries after index.</param>
    /// <returns>A task that completes when durable.</returns>
    public Task ResetToSnapshot(long index, long term, bool keepSuffix) =>
        WriteBase(keepSuffix ? LogRecordType.Base : LogRecordType.Reset, index, term);

    private async Task WriteBase(LogRecordType type, long index, long term)
    {
        var batch = _writer.WriteBase(type, index, term);
        await batch.Done.Task.ConfigureAwait(false);
        // Keep this base record: truncate at it or at the first live entry, whichever comes first. (Entries may
        // have been appended since, after the record; truncating at them would lose the base's term.)
        long truncateAt = batch.Addresses[0];
        lock (_state)
            if (_durable.FirstAddress is { } first) truncateAt = Math.Min(truncateAt, first);
        _files.Log.TruncateUntil(truncateAt);
    }

    /// <summary>The commit loop's hand-off: batches now durable become visible to readers.</summary>
    private void ApplyDurable(List<LogBatch> batches)
    {
        lock (_state)
            foreach (var b in batches)
                switch (b.Kind)
                {
                    case LogRecordType.Entry:
                        _durable.Append(b.First, b.Terms, b.Addresses);
                        break;
                    case LogRecordType.Base:
                    case LogRecordType.Reset:
                        _durable.SetBase(b.Kind == LogRecordType.Reset, b.First, b.BaseTerm);
                        break;
                    case LogRecordType.Skip:
                        break;
                }
    }

    private SkiffException Corrupt(long address, string what) =>
        LogRecord.Corrupt(_logPath, _options.SegmentSizeBits, address, what);

    /// <summary>Finishes pending commits and closes the log.</summary>
    /// <returns>A task that completes when closed.</returns>
    public async ValueTask DisposeAsync()
    {
        if (!await _writer.StopAsync().ConfigureAwait(false)) return;
        _files.Dispose();
    }

    /// <summary>Closes the log; see <see cref="DisposeAsync"/>.</summary>
    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();
}
