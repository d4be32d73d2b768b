using System.Buffers.Binary;
using FASTER.core;

namespace Skiff.Net.Storage;

/// <summary>One Raft log entry: its position, the term it was created in, and opaque payload bytes.</summary>
/// <param name="Index">The entry's index (1-based, contiguous).</param>
/// <param name="Term">The term of the leader that created it.</param>
/// <param name="Payload">The bytes to replicate (an encoded command, or empty for a no-op).</param>
public sealed record LogEntry(long Index, long Term, byte[] Payload);

/// <summary>How a <see cref="RaftLog"/> makes a group of appends durable.</summary>
public enum LogCommitMode
{
    /// <summary>FASTER's own commit: a new metadata file per commit, the old one deleted, the directory never
    /// synced. Several syncs per commit, and the newest commit may be lost on power loss. Kept to compare.</summary>
    FasterDefault,
    /// <summary>Our <see cref="SlotCommitManager"/>: log pages, then the metadata into a preallocated two-slot
    /// file with one fdatasync.</summary>
    SlotFile,
    /// <summary>Commit records kept inside the log (FASTER fast-commit mode); the slot file is written only now and
    /// then, and recovery scans forward from it. One sync per commit. The default.</summary>
    InLog,
}

/// <summary>Settings of a <see cref="RaftLog"/>.</summary>
public sealed record RaftLogOptions
{
    /// <summary>How commits are made durable.</summary>
    public LogCommitMode CommitMode { get; init; } = LogCommitMode.InLog;
    /// <summary>log2 of FASTER's page size (default 22 = 4 MiB).</summary>
    public int PageSizeBits { get; init; } = 22;
    /// <summary>log2 of the log's in-memory buffer (default 26 = 64 MiB); bounds memory use.</summary>
    public int MemorySizeBits { get; init; } = 26;
    /// <summary>log2 of a log segment file's size (default 28 = 256 MiB); compaction frees whole segments.</summary>
    public int SegmentSizeBits { get; init; } = 28;
    /// <summary>How many entries before a snapshot's index <see cref="RaftLog.CompactUntil"/> keeps, so slightly
    /// lagging followers can still be served from the log.</summary>
    public long KeepTail { get; init; } = 1000;
    /// <summary>Appends are refused with <see cref="ErrorKind.StorageError"/> while the disk has less free space
    /// than this: once FASTER's in-memory buffer is full, an append waits for page flushes, which never complete on
    /// a full disk. Null: the in-memory buffer plus 16 MiB.</summary>
    public long? MinFreeDiskBytes { get; init; }

    internal long EffectiveMinFreeDiskBytes => MinFreeDiskBytes ?? (1L << MemorySizeBits) + (16L << 20);
}

/// <summary>
/// The durable Raft log on a FASTER <see cref="FasterLog"/>.
/// <para>Records are <c>[type u8][index i64][term i64][length i32][payload][crc32c u32]</c>. FasterLog only
/// appends, so every record carries its index and a later record supersedes: an entry at index i drops any entries
/// at i and above written before it (suffix replacement); a <c>Base(i, t)</c> record drops entries up to i and says
/// the term at i is t (written by compaction and after installing a snapshot). Recovery scans the log in address
/// order, applies these rules, and so keeps the last-written version of each index.</para>
/// <para>Appends use group commit: concurrent <c>AppendAsync</c> callers enqueue their batches and one
/// commit loop makes everything enqueued so far durable with one commit, then completes every caller it
/// covered.</para>
/// <para>Reads (<see cref="TermAt"/>, <see cref="ReadAsync"/>, <see cref="LastIndex"/>) see only durable entries.</para>
/// </summary>
public sealed class RaftLog : IAsyncDisposable, IDisposable
{
    private const byte TypeEntry = 1;
    private const byte TypeBase = 2;
    private const byte TypeSkip = 3;
    private const byte TypeReset = 4;
    private const int RecordHeader = 21;
    private const int RecordOverhead = RecordHeader + 4;

    private readonly string _dir;
    private readonly string _logPath;
    private readonly RaftLogOptions _options;
    private readonly IDevice _device;
    private readonly SlotCommitManager? _commitManager;
    private readonly FasterLog _log;

    // Durable view (guarded by _state).
    private readonly object _state = new();
    private long _baseIndex;      // entries <= _baseIndex are gone
    private long _baseTerm;       // term at _baseIndex (0 for a new log), -1 if unknown
    private readonly List<long> _terms = new();
    private readonly List<long> _addresses = new();
    private long _baseAddress;    // address of the Base record (or first entry) to truncate until when empty

    // Pending view (guarded by _append): what appends validate against.
    private readonly object _append = new();
    private long _pendingBase;
    private long _pendingLast;
    private readonly Queue<Batch> _queue = new();
    private Exception? _failed;
    private bool _disposed;
    private long _nextSpaceCheck;

    private readonly SemaphoreSlim _signal = new(0);
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _committer;

    /// <summary>The largest payload an entry may carry: a record must fit one FASTER page.</summary>
    public int MaxPayloadBytes => (1 << _options.PageSizeBits) - RecordOverhead - 64;

    /// <summary>Number of commits the commit loop issued; for the benchmark.</summary>
    public long Commits { get; private set; }

    /// <summary>Metadata writes made by our commit manager, if one is in use; for the benchmark.</summary>
    public long MetadataWrites => _commitManager?.MetadataWrites ?? 0;

    /// <summary>Torn tail records found and dropped when the log was opened (their addresses).</summary>
    public IReadOnlyList<long> DroppedTornRecords { get; }

    private sealed class Batch
    {
        public required byte Kind;
        public required long First;      // first index (entries), or base index
        public required long BaseTerm;
        public required long[] Terms;
        public required long[] Addresses;
        public long EndAddress;
        public readonly TaskCompletionSource Done = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private RaftLog(string dir, RaftLogOptions options, IDevice device, SlotCommitManager? manager, FasterLog log)
    {
        _dir = dir;
        _logPath = Path.Combine(dir, "raft.log");
        _options = options;
        _device = device;
        _commitManager = manager;
        _log = log;
        DroppedTornRecords = Recover();
        _pendingBase = _baseIndex;
        _pendingLast = LastIndexUnlocked;
        _committer = Task.Run(CommitLoop);
        if (DroppedTornRecords.Count > 0)
        {
            // Mark the dropped records so that, once later records follow them, they are not mistaken for
            // corruption in the middle of the log.
            var skips = DroppedTornRecords.Select(a => new Batch
            {
                Kind = TypeSkip, First = a, BaseTerm = 0, Terms = Array.Empty<long>(), Addresses = Array.Empty<long>(),
            }).ToList();
            lock (_append)
            {
                foreach (var b in skips)
                {
                    Enqueue(Encode(TypeSkip, b.First, 0, ReadOnlySpan<byte>.Empty));
                    b.EndAddress = _log.TailAddress;
                    _queue.Enqueue(b);
                }
            }
            _signal.Release();
            skips[^1].Done.Task.GetAwaiter().GetResult();
        }
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
        IDevice? device = null;
        SlotCommitManager? manager = null;
        FasterLog? log = null;
        try
        {
            device = Devices.CreateLogDevice(Path.Combine(dir, "raft.log"), preallocateFile: false, deleteOnClose: false);
            var settings = new FasterLogSettings
            {
                LogDevice = device,
                PageSizeBits = options.PageSizeBits,
                MemorySizeBits = options.MemorySizeBits,
                SegmentSizeBits = options.SegmentSizeBits,
                AutoRefreshSafeTailAddress = false,
                TryRecoverLatest = true,
            };
            switch (options.CommitMode)
            {
                case LogCommitMode.FasterDefault:
                    settings.LogCommitDir = Path.Combine(dir, "commits");
                    break;
                case LogCommitMode.SlotFile:
                    manager = new SlotCommitManager(Path.Combine(dir, "commit.meta"), writeOnlyWhenForced: false) { SegmentSizeBits = options.SegmentSizeBits };
                    settings.LogCommitManager = manager;
                    break;
                case LogCommitMode.InLog:
                    manager = new SlotCommitManager(Path.Combine(dir, "commit.meta"), writeOnlyWhenForced: true) { SegmentSizeBits = options.SegmentSizeBits };
                    settings.LogCommitManager = manager;
                    settings.FastCommitMode = true;
                    break;
            }
            log = new FasterLog(settings);
            return new RaftLog(dir, options, device, manager, log);
        }
        catch (Exception e)
        {
            log?.Dispose();
            manager?.Dispose();
            device?.Dispose();
            if (e is SkiffException) throw;
            if (e is IOException or UnauthorizedAccessException) throw StorageIo.Wrap(dir, e);
            throw new SkiffException(ErrorKind.StorageError, $"cannot open the log in {dir}: {e.Message}", e);
        }
    }

    /// <summary>The first index still in the log (<see cref="LastIndex"/> + 1 when the log is empty).</summary>
    public long FirstIndex { get { lock (_state) return _baseIndex + 1; } }

    /// <summary>The last durable index (the snapshot/base index when the log is empty, 0 for a new log).</summary>
    public long LastIndex { get { lock (_state) return LastIndexUnlocked; } }

    private long LastIndexUnlocked => _baseIndex + _terms.Count;

    /// <summary>The term of the last durable entry (or of the base when empty; 0 for a new log).</summary>
    public long LastTerm { get { lock (_state) return _terms.Count > 0 ? _terms[^1] : Math.Max(0, _baseTerm); } }

    /// <summary>The term of the entry at <paramref name="index"/>; for the base index (just before
    /// <see cref="FirstIndex"/>) the base term if known; null if the index is compacted or beyond the end.</summary>
    /// <param name="index">The index.</param>
    /// <returns>Its term, or null.</returns>
    public long? TermAt(long index)
    {
        lock (_state)
        {
            if (index == _baseIndex) return _baseTerm >= 0 ? _baseTerm : null;
            if (index < _baseIndex || index > LastIndexUnlocked) return null;
            return _terms[(int)(index - _baseIndex - 1)];
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
        var batch = new Batch
        {
            Kind = TypeEntry, First = entries[0].Index, BaseTerm = 0,
            Terms = new long[entries.Count], Addresses = new long[entries.Count],
        };
        foreach (var e in entries)
            if (e.Payload.Length > MaxPayloadBytes)
                throw new SkiffException(ErrorKind.ValueTooLarge,
                    $"entry {e.Index} has {e.Payload.Length} payload bytes; a log record must fit one page ({MaxPayloadBytes} bytes)");
        lock (_append)
        {
            ThrowIfFailed();
            EnsureFreeSpace();
            long first = entries[0].Index;
            if (first <= _pendingBase || first > _pendingLast + 1)
                throw new ArgumentException(
                    $"append at index {first} outside ({_pendingBase}, {_pendingLast + 1}]", nameof(entries));
            for (int i = 0; i < entries.Count; i++)
            {
                var e = entries[i];
                batch.Terms[i] = e.Term;
                batch.Addresses[i] = Enqueue(Encode(TypeEntry, e.Index, e.Term, e.Payload));
            }
            batch.EndAddress = _log.TailAddress;
            _pendingLast = entries[^1].Index;
            _queue.Enqueue(batch);
        }
        _signal.Release();
        return cancellationToken.CanBeCanceled ? batch.Done.Task.WaitAsync(cancellationToken) : batch.Done.Task;
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
            if (from <= _baseIndex)
                throw new ArgumentOutOfRangeException(nameof(from), $"index {from} is compacted (first index {_baseIndex + 1})");
            toInclusive = Math.Min(toInclusive, LastIndexUnlocked);
            if (toInclusive < from) return Array.Empty<LogEntry>();
            int start = (int)(from - _baseIndex - 1);
            int count = (int)(toInclusive - from + 1);
            addrs = _addresses.GetRange(start, count).ToArray();
            // The scan must end past the whole last record, not just its first byte: FASTER loads a page from disk
            // only up to the scan's end address (rounded to a sector), so a last record that crosses a sector
            // boundary would be read half stale. The next live record starts after it; the durable tail is past
            // everything durable.
            endAddress = start + count < _addresses.Count ? _addresses[start + count] : _log.CommittedUntilAddress;
        }
        var result = new List<LogEntry>(addrs.Length);
        long bytes = 0;
        using var iter = _log.Scan(addrs[0], endAddress, scanUncommitted: false);
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
                catch (FasterException e) when (IsDamagedCommitRecord(e))
                {
                    ReleaseFasterEpoch(); // a damaged FASTER commit record between our records: see Recover
                    continue;
                }
                if (address < addrs[k]) continue; // a superseded record between live ones
                if (address != addrs[k])
                    throw Corrupt(address, $"expected the record of index {from + k} at address {addrs[k]}, found one at {address}");
                var rec = Decode(data, length) ?? throw Corrupt(address, "checksum mismatch");
                if (rec.type != TypeEntry || rec.index != from + k)
                    throw Corrupt(address, $"expected entry {from + k}, found type {rec.type} index {rec.index}");
                result.Add(new LogEntry(rec.index, rec.term, rec.payload));
                bytes += rec.payload.Length;
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
        lock (_state) return index <= _baseIndex;
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
            newBase = Math.Min(snapshotIndex - _options.KeepTail, LastIndexUnlocked);
            if (newBase <= _baseIndex) return;
            newBaseTerm = _terms[(int)(newBase - _baseIndex - 1)];
        }
        await WriteBase(TypeBase, newBase, newBaseTerm).ConfigureAwait(false);
    }

    /// <summary>After installing a snapshot at (<paramref name="index"/>, <paramref name="term"/>): if
    /// <paramref name="keepSuffix"/> (our entry at index has that term), drop entries up to index and keep the
    /// rest; otherwise discard the whole log. Either way the next append goes after the kept entries.</summary>
    /// <param name="index">The snapshot's last included index.</param>
    /// <param name="term">Its term.</param>
    /// <param name="keepSuffix">Keep entries after index.</param>
    /// <returns>A task that completes when durable.</returns>
    public Task ResetToSnapshot(long index, long term, bool keepSuffix) =>
        WriteBase(keepSuffix ? TypeBase : TypeReset, index, term);

    private async Task WriteBase(byte type, long index, long term)
    {
        var batch = new Batch { Kind = type, First = index, BaseTerm = term, Terms = Array.Empty<long>(), Addresses = new long[1] };
        lock (_append)
        {
            ThrowIfFailed();
            if (index < _pendingBase)
                throw new ArgumentException($"base {index} is behind the current base {_pendingBase}");
            batch.Addresses[0] = Enqueue(Encode(type, index, term, ReadOnlySpan<byte>.Empty));
            batch.EndAddress = _log.TailAddress;
            _pendingBase = index;
            if (type == TypeReset || index > _pendingLast) _pendingLast = index;
            _queue.Enqueue(batch);
        }
        _signal.Release();
        await batch.Done.Task.ConfigureAwait(false);
        // Keep this base record: truncate at it or at the first live entry, whichever comes first. (Entries may
        // have been appended since, after the record; truncating at them would lose the base's term.)
        long truncateAt = batch.Addresses[0];
        lock (_state)
            if (_addresses.Count > 0) truncateAt = Math.Min(truncateAt, _addresses[0]);
        _log.TruncateUntil(truncateAt);
    }

    private long Enqueue(byte[] record)
    {
        try
        {
            return _log.Enqueue(record);
        }
        catch (Exception e)
        {
            var err = new SkiffException(ErrorKind.StorageError, $"appending to {_logPath}: {e.Message}", e);
            _failed ??= err;
            throw err;
        }
    }

    private void EnsureFreeSpace()
    {
        long now = Environment.TickCount64;
        if (now < _nextSpaceCheck) return;
        _nextSpaceCheck = now + 20;
        long free;
        try { free = new DriveInfo(_dir).AvailableFreeSpace; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException) { return; }
        long min = _options.EffectiveMinFreeDiskBytes;
        if (free < min)
        {
            _nextSpaceCheck = 0;
            throw new SkiffException(ErrorKind.StorageError, $"disk full: {free} bytes free under {_dir}, the log needs at least {min} to append safely");
        }
    }

    private void ThrowIfFailed()
    {
        if (_disposed) throw new ObjectDisposedException(nameof(RaftLog));
        if (_failed is { } f) throw new SkiffException(ErrorKind.StorageError, $"the log {_logPath} failed earlier: {f.Message}", f);
    }

    private async Task CommitLoop()
    {
        var batches = new List<Batch>();
        while (true)
        {
            try
            {
                await _signal.WaitAsync(_stop.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                // Drain what is left, then stop.
            }
            long target;
            lock (_append)
            {
                while (_queue.Count > 0) batches.Add(_queue.Dequeue());
                if (batches.Count == 0)
                {
                    if (_stop.IsCancellationRequested) return;
                    continue;
                }
                target = _log.TailAddress;
                if (_failed is null)
                {
                    try { _log.Commit(spinWait: false); }
                    catch (Exception e) { _failed = new SkiffException(ErrorKind.StorageError, $"committing {_logPath}: {e.Message}", e); }
                }
            }
            // Signals of the batches just taken stay counted; they cost one empty pass each. Consuming them here
            // could swallow the signal of a batch enqueued after the drain and strand it.
            Exception? error = _failed;
            if (error is null)
            {
                try
                {
                    await _log.WaitForCommitAsync(target).ConfigureAwait(false);
                    Commits++;
                }
                catch (Exception e)
                {
                    error = new SkiffException(ErrorKind.StorageError, $"committing {_logPath}: {e.Message}", e);
                    lock (_append) _failed ??= error;
                }
            }
            if (error is not null)
            {
                foreach (var b in batches) b.Done.TrySetException(error);
            }
            else
            {
                lock (_state)
                    foreach (var b in batches) ApplyDurable(b);
                foreach (var b in batches) b.Done.TrySetResult();
            }
            batches.Clear();
        }
    }

    private void ApplyDurable(Batch b)
    {
        switch (b.Kind)
        {
            case TypeEntry:
                TruncateFrom(b.First);
                _terms.AddRange(b.Terms);
                _addresses.AddRange(b.Addresses);
                break;
            case TypeBase:
            case TypeReset:
                ApplyBase(b.Kind, b.First, b.BaseTerm, b.Addresses[0]);
                break;
            case TypeSkip:
                break;
        }
    }

    private void TruncateFrom(long index)
    {
        int keep = (int)(index - _baseIndex - 1);
        if (keep < _terms.Count)
        {
            _terms.RemoveRange(keep, _terms.Count - keep);
            _addresses.RemoveRange(keep, _addresses.Count - keep);
        }
    }

    private void ApplyBase(byte kind, long index, long term, long address)
    {
        if (kind == TypeReset || index >= LastIndexUnlocked)
        {
            _terms.Clear();
            _addresses.Clear();
        }
        else if (index > _baseIndex)
        {
            int drop = (int)(index - _baseIndex);
            _terms.RemoveRange(0, drop);
            _addresses.RemoveRange(0, drop);
        }
        _baseIndex = index;
        _baseTerm = term;
        _baseAddress = address;
    }

    private List<long> Recover()
    {
        var bad = new List<long>();
        var skipped = new HashSet<long>();
        var voids = VoidRanges.Load(_dir);
        long lastValidAddress = -1;
        bool started = false;
        bool inferred = false; // base taken from the first entry, not from a Base record
        long previousPage = -1; // page of the record seen before this one (-1: none yet)
        long holeAt = -1;
        try
        {
            using var iter = _log.Scan(_log.BeginAddress, _log.TailAddress, scanUncommitted: false);
            while (true)
            {
                byte[] data;
                int length;
                long address;
                try
                {
                    if (!iter.GetNext(out data, out length, out address, out _))
                    {
                        if (iter.Ended || iter.NextAddress >= _log.TailAddress) break;
                        iter.WaitAsync().AsTask().GetAwaiter().GetResult();
                        continue;
                    }
                }
                catch (FasterException e) when (IsDamagedCommitRecord(e))
                {
                    // One of FASTER's own commit records fails its checksum. Seen after a SIGKILL: FASTER counted a
                    // commit complete (and wrote its metadata slot) with the last 20 bytes of that commit's record
                    // not yet in the file, and recovered from the slot without reading the record. The entries
                    // before it were flushed, and the record is only FASTER's bookkeeping: its recovery reads the
                    // slot and the records after it. Our own records carry their own checksums and rules, so skip
                    // it; the iterator has already moved past it. Its parse threw while FASTER's epoch was held,
                    // which GetNext leaves held: release it, or flushes waiting on the epoch would never run.
                    ReleaseFasterEpoch();
                    DamagedCommitRecords++;
                    continue;
                }
                long page = address >> _options.PageSizeBits;
                // A record that breaks the log's rules as the first one seen on a new page may lie past a hole
                // (see VoidRanges): a crash mid-commit left the end of the previous page unwritten.
                bool afterPageChange = previousPage >= 0 && page != previousPage;
                previousPage = page;
                if (voids.Contains(address)) continue;
                var rec = Decode(data, length);
                if (rec is null)
                {
                    if (afterPageChange) { holeAt = address; break; }
                    bad.Add(address);
                    continue;
                }
                var (type, index, term, _) = rec.Value;
                switch (type)
                {
                    case TypeEntry:
                        if (!started)
                        {
                            // The log may start after a truncation: take the first entry's position as given; a Base
                            // record further on supplies the term before it.
                            _baseIndex = index - 1;
                            _baseTerm = index == 1 ? 0 : -1;
                            started = true;
                            inferred = true;
                        }
                        if (index <= _baseIndex || index > LastIndexUnlocked + 1)
                        {
                            if (afterPageChange) { holeAt = address; break; }
                            throw Corrupt(address, $"entry {index} cannot follow a log of ({_baseIndex}, {LastIndexUnlocked}]");
                        }
                        TruncateFrom(index);
                        _terms.Add(term);
                        _addresses.Add(address);
                        break;
                    case TypeBase:
                    case TypeReset:
                        if (started && index < _baseIndex)
                        {
                            // An older base record that survived truncation behind entries written before it: it
                            // drops nothing more. Behind a base read from a record, it cannot happen.
                            if (inferred && type == TypeBase) break;
                            if (afterPageChange) { holeAt = address; break; }
                            throw Corrupt(address, $"base {index} behind base {_baseIndex}");
                        }
                        started = true;
                        inferred = false;
                        ApplyBase(type, index, term, address);
                        break;
                    case TypeSkip:
                        skipped.Add(index);
                        break;
                    default:
                        if (afterPageChange) { holeAt = address; break; }
                        throw Corrupt(address, $"unknown record type {type}");
                }
                if (holeAt >= 0) break;
                lastValidAddress = address;
            }
        }
        catch (SkiffException) { throw; }
        catch (Exception e)
        {
            throw new SkiffException(ErrorKind.StorageCorrupted, $"cannot scan {_logPath}: {e.Message}", e);
        }
        if (holeAt >= 0)
        {
            // Everything from the hole to FASTER's recovered tail was written by a commit that never completed:
            // void it before anything is appended after it.
            voids.Add(holeAt, _log.TailAddress);
            HoleVoided = (holeAt, _log.TailAddress);
        }
        var torn = new List<long>();
        foreach (var a in bad)
        {
            if (skipped.Contains(a)) continue;
            if (a < lastValidAddress) throw Corrupt(a, "checksum mismatch before the end of the log");
            torn.Add(a);
        }
        return torn;
    }

    /// <summary>FASTER commit records that failed their checksum and were skipped when the log was opened.</summary>
    public int DamagedCommitRecords { get; private set; }

    /// <summary>FASTER's iterator failing to parse one of FASTER's own commit records.</summary>
    private static bool IsDamagedCommitRecord(FasterException e) =>
        e.Message.Contains("commit recovery", StringComparison.Ordinal);

    /// <summary>Leaves FASTER's epoch if this thread still holds it (FASTER 2.6.5's scan iterator keeps it held
    /// when parsing a commit record throws). FasterLog does not expose its epoch, hence the reflection.</summary>
    private void ReleaseFasterEpoch()
    {
        if (FasterLogEpoch?.GetValue(_log) is LightEpoch epoch && epoch.ThisInstanceProtected()) epoch.Suspend();
    }

    private static readonly System.Reflection.FieldInfo? FasterLogEpoch =
        typeof(FasterLog).GetField("epoch", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance);

    /// <summary>The range of log addresses found past a hole when the log was opened, and voided; null if none.
    /// See <see cref="VoidRanges"/>.</summary>
    public (long From, long Until)? HoleVoided { get; private set; }

    private SkiffException Corrupt(long address, string what)
    {
        long segment = address >> _options.SegmentSizeBits;
        return new SkiffException(ErrorKind.StorageCorrupted,
            $"{_logPath}.{segment} (log address {address}): {what}");
    }

    private static byte[] Encode(byte type, long index, long term, ReadOnlySpan<byte> payload)
    {
        var buf = new byte[RecordOverhead + payload.Length];
        var s = buf.AsSpan();
        s[0] = type;
        BinaryPrimitives.WriteInt64LittleEndian(s.Slice(1), index);
        BinaryPrimitives.WriteInt64LittleEndian(s.Slice(9), term);
        BinaryPrimitives.WriteInt32LittleEndian(s.Slice(17), payload.Length);
        payload.CopyTo(s.Slice(RecordHeader));
        int end = RecordHeader + payload.Length;
        BinaryPrimitives.WriteUInt32LittleEndian(s.Slice(end), Crc32C.Compute(s.Slice(0, end)));
        return buf;
    }

    private static (byte type, long index, long term, byte[] payload)? Decode(byte[] data, int length)
    {
        if (data is null || length < RecordOverhead || length > data.Length) return null;
        var s = data.AsSpan(0, length);
        int plen = BinaryPrimitives.ReadInt32LittleEndian(s.Slice(17));
        if (plen < 0 || RecordOverhead + plen != length) return null;
        int end = RecordHeader + plen;
        if (BinaryPrimitives.ReadUInt32LittleEndian(s.Slice(end)) != Crc32C.Compute(s.Slice(0, end))) return null;
        return (s[0], BinaryPrimitives.ReadInt64LittleEndian(s.Slice(1)), BinaryPrimitives.ReadInt64LittleEndian(s.Slice(9)),
            s.Slice(RecordHeader, plen).ToArray());
    }

    /// <summary>Finishes pending commits and closes the log.</summary>
    /// <returns>A task that completes when closed.</returns>
    public async ValueTask DisposeAsync()
    {
        lock (_append)
        {
            if (_disposed) return;
            _disposed = true;
        }
        _stop.Cancel();
        try { await _committer.ConfigureAwait(false); } catch { /* failures were reported to callers */ }
        _log.Dispose();
        _commitManager?.Dispose();
        _device.Dispose();
        _stop.Dispose();
    }

    /// <summary>Closes the log; see <see cref="DisposeAsync"/>.</summary>
    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();
}
