using System.Text;
using FASTER.core;

namespace Skiff.Net.Storage;

/// <summary>
/// The FASTER side of the key-value state machine: the <see cref="FasterKV{Key, Value}"/> with its hybrid log device
/// and the one session the state machine reads and writes through, created, recovered and disposed together. It
/// knows nothing of what the keys mean. Not thread-safe: FASTER sessions are single-threaded, and the state machine
/// serialises access under its lock.
/// <para>Keys (UTF-8) and values are kept inline in the hybrid log's pages (<see cref="SpanByte"/>, FASTER's
/// variable-length allocator), so the in-memory part of the log, <see cref="KvOptions.MemorySizeBits"/>, bounds the
/// memory the data takes: older pages are flushed and evicted, and read back from disk on demand. Stores of older
/// versions held references to managed key and value objects (the object log), which that size did not count; they
/// are converted when opened (<see cref="KvFormatMigration"/>). A record never crosses a page, so a page must hold
/// the largest record (<see cref="RecordBytes"/>).</para>
/// </summary>
internal sealed partial class FasterKvStore : IDisposable
{
    private readonly string _dir;
    private readonly CrashSafeDevice _logDevice;
    private readonly DeviceLogCommitCheckpointManager _checkpoints;
    private readonly FasterKV<SpanByte, SpanByte> _kv;
    private ClientSession<SpanByte, SpanByte, SpanByte, StoreRead, Empty, StoreFunctions>? _session;

    // While a checkpoint is taken in the background, writes land in this overlay instead of the store (reads see
    // them first), so the checkpoint holds exactly the state at its start: FASTER cuts a session's operations at a
    // point of its own choosing, which could fall between the several writes of one apply. Drained into the store
    // after the checkpoint, a few records per write (FasterKvStore.Overlay.cs).
    private Dictionary<string, byte[]?>? _overlay;
    private Task? _checkpoint;

    /// <summary>Bytes of keys and values written to the overlay since the checkpoint began (at most: a key written
    /// twice counts twice).</summary>
    public long OverlayBytes { get; private set; }

    /// <summary>Records written since the store was opened (tombstones aside): with <see cref="WrittenBytes"/>, what
    /// compaction paces itself by and estimates the size of a live record from.</summary>
    public long WrittenRecords { get; private set; }

    /// <summary>Bytes of the records counted in <see cref="WrittenRecords"/> (<see cref="RecordBytes"/> each).</summary>
    public long WrittenBytes { get; private set; }

    /// <summary>The page and segment sizes of this store's files.</summary>
    public StoreGeometry Geometry { get; }

    /// <summary>The bytes in memory of the hybrid log (FASTER's MemorySize): the store's memory budget.</summary>
    public long MemoryBytes { get; }

    private FasterKvStore(string dir, StoreGeometry geometry, long memoryBytes, CrashSafeDevice logDevice,
        DeviceLogCommitCheckpointManager checkpoints, FasterKV<SpanByte, SpanByte> kv)
    {
        _dir = dir;
        Geometry = geometry;
        MemoryBytes = memoryBytes;
        _logDevice = logDevice;
        _checkpoints = checkpoints;
        _kv = kv;
    }

    /// <summary>Bytes a record takes in the hybrid log: its header, then the key and the value each with a 4-byte
    /// length, each part 8-byte aligned (FASTER's variable-length allocator).</summary>
    public static long RecordBytes(int keyBytes, int valueBytes) => 8 + Align(4L + keyBytes) + Align(4L + valueBytes);

    private static long Align(long n) => (n + 7) & ~7L;

    /// <summary>Creates the store in <paramref name="dir"/> (recovering nothing yet). The directory must hold a store
    /// of this format or none (see <see cref="KvFormatMigration"/>).</summary>
    public static FasterKvStore Create(string dir, KvOptions options)
    {
        CrashSafeDevice? logDevice = null;
        DeviceLogCommitCheckpointManager? checkpoints = null;
        var wanted = new StoreGeometry(options.PageSizeBits, Math.Max(options.PageSizeBits, options.SegmentSizeBits), InlineValues: true);
        var geometry = StoreGeometry.Resolve(dir, wanted, KvOptions.LegacyGeometry, "hlog.");
        if (!geometry.InlineValues)
            throw new InvalidOperationException($"{dir} holds a store of object values: convert it first");
        try
        {
            // New files durable before FASTER hears of a write to them, truncation only once the checkpoint asking
            // for it is durable (see CrashSafeDevice); and so is deleting older checkpoints (not FASTER's
            // RemoveOutdatedCheckpoints: CheckpointFiles.DeleteOlderCheckpoints).
            logDevice = new CrashSafeDevice(options.Devices.CreateLogDevice(Path.Combine(dir, "hlog.log")), dir);
            checkpoints = new DeviceLogCommitCheckpointManager(new CrashSafeDeviceFactory(options.Devices.CheckpointDevices(), dir),
                new DefaultCheckpointNamingScheme(Path.Combine(dir, "checkpoints")), removeOutdated: false);
            var memory = 1L << Math.Max(options.MemorySizeBits, geometry.PageSizeBits + KvOptions.MinMemoryPagesBits);
            var settings = new FasterKVSettings<SpanByte, SpanByte>(null)
            {
                IndexSize = options.IndexSizeBytes,
                LogDevice = logDevice,
                PageSize = 1L << geometry.PageSizeBits,
                MemorySize = memory,
                SegmentSize = 1L << geometry.SegmentSizeBits,
                CheckpointManager = checkpoints,
                TryRecoverLatest = false,
                ReadCacheEnabled = false,
            };
            return new FasterKvStore(dir, geometry, memory, logDevice, checkpoints, new FasterKV<SpanByte, SpanByte>(settings));
        }
        catch
        {
            checkpoints?.Dispose();
            logDevice?.Dispose();
            throw;
        }
    }

    /// <summary>Whether the directory holds any checkpoint, finished or not.</summary>
    public bool HasCheckpoint
    {
        get
        {
            var checkpoints = Path.Combine(_dir, "checkpoints", "cpr-checkpoints");
            return Directory.Exists(checkpoints) && Directory.EnumerateDirectories(checkpoints).Any();
        }
    }

    /// <summary>Recovers the newest checkpoint FASTER can read (it skips unfinished ones); false if none is
    /// complete. Before <see cref="StartSession"/>.</summary>
    public bool TryRecoverLatestCheckpoint()
    {
        try
        {
            _kv.Recover();
            return true;
        }
        catch (FasterException e) when (e.Message.Contains("Unable to find valid", StringComparison.Ordinal))
        {
            return false;
        }
    }

    /// <summary>Opens the session that every read and write goes through, once recovery is done.</summary>
    public void StartSession() =>
        _session = _kv.For(new StoreFunctions()).NewSession<StoreFunctions>();

    private ClientSession<SpanByte, SpanByte, SpanByte, StoreRead, Empty, StoreFunctions> Session =>
        _session ?? throw new InvalidOperationException("the store's session is not started");

    /// <summary>The value of a key, or null; waits for a read that has to go to disk.</summary>
    public byte[]? Read(string key)
    {
        if (_overlay is not null && _overlay.TryGetValue(key, out var written)) return written;
        if (_draining is not null && _draining.TryGetValue(key, out var pending)) return pending;
        var (found, value, _) = Lookup(key);
        return found ? value : null;
    }

    /// <summary>The store's newest record of a key (the overlay aside): whether it holds a value, the value and the
    /// record's address; waits for a lookup that has to go to disk.</summary>
    private (bool Found, byte[] Value, long Address) Lookup(string key)
    {
        var status = IssueRead(key, out var output);
        if (status.IsPending)
        {
            DiskWaits++;
            Session.CompletePendingWithOutputs(out var outputs, wait: true);
            using (outputs)
            {
                if (!outputs.Next())
                    throw new SkiffException(ErrorKind.StorageError, $"pending read of a key in {_dir} produced no result");
                status = outputs.Current.Status;
                output = outputs.Current.Output;
            }
        }
        ThrowIfFaulted(status);
        return status.Found ? (true, output.Value ?? [], output.Address) : (false, [], 0);
    }

    /// <summary>Starts a read of <paramref name="key"/>'s newest record. Pending when it has to go to disk: the
    /// caller then completes it (and any others issued before) with one wait. The record's address is the one in
    /// <paramref name="output"/> (<see cref="StoreFunctions"/> says why not the read's metadata).</summary>
    private unsafe Status IssueRead(string key, out StoreRead output)
    {
        Span<byte> buffer = stackalloc byte[256];
        var utf8 = Utf8(key, buffer);
        output = default;
        fixed (byte* k = utf8)
        {
            var sbKey = SpanByte.FromPointer(k, utf8.Length);
            SpanByte input = default;
            return Session.Read(ref sbKey, ref input, ref output);
        }
    }

    private void ThrowIfFaulted(Status status)
    {
        if (status.IsFaulted) throw new SkiffException(ErrorKind.StorageError, $"reading a key from {_dir} failed");
    }

    /// <summary>How many times a lookup waited for the disk (one wait may complete many reads): for tests and
    /// diagnostics.</summary>
    public long DiskWaits { get; private set; }

    /// <summary>Sets a key.</summary>
    /// <exception cref="SkiffException"><see cref="ErrorKind.StorageError"/> if the record does not fit a page of
    /// this store (a value larger than the store was made for): nothing is written.</exception>
    public void Upsert(string key, byte[] value)
    {
        if (_overlay is not null)
        {
            _overlay[key] = value;
            OverlayBytes += 2L * key.Length + value.Length;
            return;
        }
        if (_draining is not null) DrainSome(key);
        WriteToStore(key, value);
    }

    private unsafe void WriteToStore(string key, byte[] value)
    {
        Span<byte> buffer = stackalloc byte[256];
        var utf8 = Utf8(key, buffer);
        var bytes = RecordBytes(utf8.Length, value.Length);
        if (bytes > 1L << Geometry.PageSizeBits)
            throw new SkiffException(ErrorKind.StorageError,
                $"a record of {bytes} bytes does not fit the pages of {1L << Geometry.PageSizeBits} bytes of the store in {_dir} " +
                "(made for smaller values: see KvOptions.PageSizeBits)");
        fixed (byte* k = utf8)
        fixed (byte* v = value)
        {
            var sbKey = SpanByte.FromPointer(k, utf8.Length);
            var sbValue = SpanByte.FromPointer(v, value.Length);
            Session.Upsert(ref sbKey, ref sbValue);
        }
        WrittenRecords++;
        WrittenBytes += bytes;
    }

    /// <summary>Deletes a key (writes a tombstone).</summary>
    public void Delete(string key)
    {
        if (_overlay is not null)
        {
            _overlay[key] = null;
            OverlayBytes += 2L * key.Length;
            return;
        }
        if (_draining is not null) DrainSome(key);
        DeleteFromStore(key);
    }

    private unsafe void DeleteFromStore(string key)
    {
        Span<byte> buffer = stackalloc byte[256];
        var utf8 = Utf8(key, buffer);
        fixed (byte* k = utf8)
        {
            var sbKey = SpanByte.FromPointer(k, utf8.Length);
            Session.Delete(ref sbKey);
        }
    }

    /// <summary>The UTF-8 bytes of <paramref name="key"/>, in <paramref name="buffer"/> when they fit.</summary>
    private static ReadOnlySpan<byte> Utf8(string key, Span<byte> buffer)
    {
        return Encoding.UTF8.GetByteCount(key) <= buffer.Length ? buffer[..Encoding.UTF8.GetBytes(key, buffer)] : Encoding.UTF8.GetBytes(key);
    }

    private static string KeyOf(ref SpanByte key) => Encoding.UTF8.GetString(key.AsReadOnlySpan());

    /// <summary>Every record of the hybrid log in address order, superseded ones and tombstones included: a newer
    /// version of a key always lies at a higher address than the older ones.</summary>
    public IEnumerable<(string Key, bool Tombstone)> ScanInAddressOrder()
    {
        DrainAll();
        using var scan = _kv.Log.Scan(_kv.Log.BeginAddress, _kv.Log.TailAddress);
        while (scan.GetNext(out var info))
        {
            if (info.Invalid) continue;
            yield return (KeyOf(ref scan.GetKey()), info.Tombstone);
        }
    }

    /// <summary>The keys of the live records, each once (FASTER's distinct-record iterator).</summary>
    public IEnumerable<string> LiveKeys()
    {
        DrainAll();
        using var iter = Session.Iterate();
        while (iter.GetNext(out var info))
        {
            if (info.Tombstone) continue;
            yield return KeyOf(ref iter.GetKey());
        }
    }

    /// <summary>Takes a fold-over full checkpoint and waits for it; returns its token. Not yet synced: see
    /// <see cref="CheckpointFiles.MakeDurable"/>.</summary>
    public Guid TakeCheckpoint()
    {
        var (ok, token) = _kv.TakeFullCheckpointAsync(CheckpointType.FoldOver).AsTask().GetAwaiter().GetResult();
        if (!ok) throw new SkiffException(ErrorKind.StorageError, $"a checkpoint of {_dir} is already in progress");
        _kv.CompleteCheckpointAsync().AsTask().GetAwaiter().GetResult();
        return token;
    }

    /// <summary>Whether a checkpoint begun with <see cref="BeginCheckpoint{T}"/> has not been ended yet.</summary>
    public bool CheckpointInProgress => _checkpoint is not null;

    /// <summary>Starts a fold-over checkpoint of the store as it is now, on a thread of its own: there it runs
    /// <paramref name="before"/>, takes the checkpoint, then runs <paramref name="then"/> with its token (making its
    /// files durable). Until <see cref="EndCheckpoint"/>, writes go to an overlay that reads see, so the store's
    /// state is that of the checkpoint; everything else may go on meanwhile.</summary>
    public Task<(Guid Token, T Result)> BeginCheckpoint<T>(Action before, Func<Guid, T> then)
    {
        if (_checkpoint is not null) throw new InvalidOperationException("a checkpoint is already in progress");
        DrainAll();
        _overlay = new Dictionary<string, byte[]?>(StringComparer.Ordinal);
        OverlayBytes = 0;
        var task = _background.Run(() =>
        {
            before();
            var token = TakeCheckpoint();
            return (token, then(token));
        });
        _checkpoint = task;
        return task;
    }

    /// <summary>Runs <paramref name="work"/> on the store's background thread, after the checkpoints and work queued
    /// before it (a checkpoint's clean-up, say).</summary>
    public Task RunInBackground(Action work) => _background.Run(work);

    private readonly SerialWorker _background = new("skiff-checkpoint");

    /// <summary>After the task <see cref="BeginCheckpoint{T}"/> returned has finished: writes go straight to the
    /// store again, and the overlay (the newest write of each key) goes into the store
    /// <see cref="DrainPerWrite"/> records with each later write, reads seeing it meanwhile.</summary>
    public void EndCheckpoint()
    {
        if (_checkpoint is not { IsCompleted: true }) throw new InvalidOperationException("no finished checkpoint to end");
        var overlay = _overlay!;
        _overlay = null;
        OverlayBytes = 0;
        _checkpoint = null;
        if (overlay.Count == 0) return;
        _draining = overlay;
        _drainOrder = [.. overlay.Keys];
        _drainNext = 0;
    }

    /// <summary>Deletes the hybrid log segments below the begin address of the checkpoints taken or recovered so far:
    /// call once they are durable.</summary>
    public void ReleaseTruncation() => _logDevice.Release();

    /// <summary>The read-only boundary: everything below it is on disk and immutable (after a fold-over checkpoint,
    /// everything the checkpoint holds).</summary>
    public long SafeReadOnlyAddress => _kv.Log.SafeReadOnlyAddress;

    /// <summary>The token of the checkpoint the store was recovered from or last took.</summary>
    public Guid LatestCheckpointToken()
    {
        _kv.GetLatestCheckpointTokens(out var hlogToken, out _);
        return hlogToken;
    }

    /// <summary>Closes the session, the store and its devices (changes since the last checkpoint are not kept).</summary>
    public void Dispose()
    {
        // A checkpoint still being taken must finish before the store goes; its outcome no longer matters.
        try { _checkpoint?.Wait(); }
        catch (AggregateException) { }
        _session?.Dispose();
        _background.Dispose();
        _kv.Dispose();
        _checkpoints.Dispose();
        _logDevice.Dispose();
        _session = null;
    }
}
