using FASTER.core;

namespace Skiff.Net.Storage;

/// <summary>Where the key-value store's FASTER devices come from: the hybrid log's and object log's files, and the
/// checkpoint manager's (metadata and index checkpoint files). Behind an interface so the crash-consistency tests
/// can record every write FASTER makes and replay a power loss.</summary>
internal interface IKvDevices
{
    /// <summary>A segmented log device writing <c>{path}.{segment}</c> files.</summary>
    IDevice CreateLogDevice(string path);

    /// <summary>The factory of the checkpoint manager's devices (its base directory set by FASTER).</summary>
    INamedDeviceFactory CheckpointDevices();
}

/// <summary>The real devices: local files written through, as FASTER's own local device on Linux writes them (a
/// write is durable when it completes; creating or deleting a file is durable once its directory is synced), but
/// with their I/O on threads of their own rather than the thread pool (<see cref="DedicatedIoDevice"/>).</summary>
internal sealed class RealKvDevices : IKvDevices
{
    /// <summary>The one instance.</summary>
    public static readonly RealKvDevices Instance = new();

    /// <inheritdoc/>
    public IDevice CreateLogDevice(string path) => new DedicatedIoDevice(path, DeviceIoThreads.Shared);

    /// <inheritdoc/>
    public INamedDeviceFactory CheckpointDevices() => new DedicatedIoDeviceFactory();

    /// <summary>FASTER's local checkpoint file layout (listing, deleting), with <see cref="DedicatedIoDevice"/>s.</summary>
    private sealed class DedicatedIoDeviceFactory : INamedDeviceFactory
    {
        private readonly LocalStorageNamedDeviceFactory _layout = new();
        private string _baseName = "";

        public void Initialize(string baseName)
        {
            _baseName = baseName;
            _layout.Initialize(baseName);
        }

        public IDevice Get(FileDescriptor fileInfo) =>
            new DedicatedIoDevice(Path.Combine(_baseName, fileInfo.directoryName, fileInfo.fileName), DeviceIoThreads.Shared);

        public void Delete(FileDescriptor fileInfo) => _layout.Delete(fileInfo);

        public IEnumerable<FileDescriptor> ListContents(string path) => _layout.ListContents(path);
    }
}

/// <summary>The checkpoint manager's devices, each a <see cref="CrashSafeDevice"/> (a new checkpoint file's directory
/// entries are durable before FASTER hears its write completed, so before it writes the metadata naming it).</summary>
/// <param name="inner">The factory.</param>
/// <param name="storeDir">The store's directory.</param>
internal sealed class CrashSafeDeviceFactory(INamedDeviceFactory inner, string storeDir) : INamedDeviceFactory
{
    /// <inheritdoc/>
    public void Initialize(string baseName) => inner.Initialize(baseName);

    /// <inheritdoc/>
    public IDevice Get(FileDescriptor fileInfo) => new CrashSafeDevice(inner.Get(fileInfo), storeDir);

    /// <inheritdoc/>
    public void Delete(FileDescriptor fileInfo) => inner.Delete(fileInfo);

    /// <inheritdoc/>
    public IEnumerable<FileDescriptor> ListContents(string path) => inner.ListContents(path);
}

/// <summary>
/// A FASTER device made safe against power loss, in two ways FASTER's own is not.
/// <para>A new file's directory entry is made durable (its directory synced, and each directory above it up to the
/// store's) before the first write to it is reported complete. FASTER's devices write through, so a completed write's
/// data is durable, but a file it created is not until its directory is synced, and FASTER never syncs one. Without
/// this a checkpoint whose metadata survived a power loss could find the hybrid log segment holding its newest pages,
/// or its hash index file, gone: FASTER then recovers an empty or partial store without a word.</para>
/// <para>Truncation waits for <see cref="Release"/>. FASTER truncates the hybrid log below a checkpoint's begin address
/// as soon as it has written that checkpoint's metadata (<c>WriteHybridLogMetaInfo</c> shifts the begin address with
/// <c>truncateLog: true</c>), before the checkpoint is durable (see <see cref="CheckpointFiles.MakeDurable"/>). A
/// power loss in between could keep the deletion of the segments but not the new checkpoint, leaving the previous
/// checkpoint, the one recovery then uses, without its segments. So a truncation is only noted here, and carried out
/// by <see cref="Release"/> once the checkpoint that asked for it is durable.</para>
/// Everything else goes straight to the device it wraps.
/// </summary>
/// <param name="inner">The device.</param>
/// <param name="storeDir">The store's directory, the highest one synced for a new file.</param>
internal sealed class CrashSafeDevice(IDevice inner, string storeDir) : IDevice
{
    private readonly HashSet<int> _durableSegments = [];
    private int _requested; // segments below this may be deleted once released

    /// <summary>Deletes the segments below the highest truncation point asked for so far (blocking): call only once
    /// every checkpoint that may have asked for it is durable.</summary>
    public void Release()
    {
        int until = Volatile.Read(ref _requested);
        if (until > inner.StartSegment) inner.TruncateUntilSegment(until);
    }

    private void Note(int segment)
    {
        int seen;
        while (segment > (seen = Volatile.Read(ref _requested)) && Interlocked.CompareExchange(ref _requested, segment, seen) != seen) { }
    }

    private int SegmentOf(long address) => inner.SegmentSize > 0 ? (int)(address / inner.SegmentSize) : 0;

    /// <summary>Syncs the directory of the device's files and those above it, up to the store's.</summary>
    private void SyncDirectories()
    {
        var top = Path.TrimEndingDirectorySeparator(Path.GetFullPath(storeDir));
        for (var d = Path.GetDirectoryName(Path.GetFullPath(inner.FileName)); d is not null; d = Path.GetDirectoryName(d))
        {
            StorageIo.FsyncDirectory(d);
            if (d.Length <= top.Length) break;
        }
    }

    /// <summary>The callback to hand the device for a write to <paramref name="segment"/>: FASTER's own, preceded by
    /// syncing the directories the first time the segment is written.</summary>
    private DeviceIOCompletionCallback Durable(int segment, DeviceIOCompletionCallback callback)
    {
        lock (_durableSegments)
            if (_durableSegments.Contains(segment)) return callback;
        return (error, bytes, context) =>
        {
            if (error == 0)
            {
                try
                {
                    SyncDirectories();
                    lock (_durableSegments) _durableSegments.Add(segment);
                }
                catch (SkiffException)
                {
                    error = 5; // EIO: the write is not durable, and FASTER reports the error
                }
            }
            callback(error, bytes, context);
        };
    }

    /// <inheritdoc/>
    public void WriteAsync(IntPtr sourceAddress, int segmentId, ulong destinationAddress, uint numBytesToWrite, DeviceIOCompletionCallback callback, object context) =>
        inner.WriteAsync(sourceAddress, segmentId, destinationAddress, numBytesToWrite, Durable(segmentId, callback), context);

    /// <inheritdoc/>
    public void WriteAsync(IntPtr alignedSourceAddress, ulong alignedDestinationAddress, uint numBytesToWrite, DeviceIOCompletionCallback callback, object context) =>
        inner.WriteAsync(alignedSourceAddress, alignedDestinationAddress, numBytesToWrite, Durable(SegmentOf((long)alignedDestinationAddress), callback), context);

    /// <inheritdoc/>
    public void Initialize(long segmentSize, LightEpoch? epoch = null, bool omitSegmentIdFromFilename = false)
    {
        inner.Initialize(segmentSize, epoch, omitSegmentIdFromFilename);
        // Files that exist now may have been created before a crash without their directory being synced.
        var dir = Path.GetDirectoryName(Path.GetFullPath(inner.FileName))!;
        if (!Directory.Exists(dir)) return;
        SyncDirectories();
        var prefix = Path.GetFileName(inner.FileName) + ".";
        foreach (var file in Directory.EnumerateFiles(dir, prefix + "*"))
            if (int.TryParse(Path.GetFileName(file).AsSpan(prefix.Length), out var segment))
                lock (_durableSegments) _durableSegments.Add(segment);
    }

    /// <inheritdoc/>
    public void TruncateUntilAddress(long toAddress) => Note(SegmentOf(toAddress));

    /// <inheritdoc/>
    public void TruncateUntilAddressAsync(long toAddress, AsyncCallback callback, IAsyncResult result)
    {
        Note(SegmentOf(toAddress));
        callback(result);
    }

    /// <inheritdoc/>
    public void TruncateUntilSegment(int toSegment) => Note(toSegment);

    /// <inheritdoc/>
    public void TruncateUntilSegmentAsync(int toSegment, AsyncCallback callback, IAsyncResult result)
    {
        Note(toSegment);
        callback(result);
    }

    /// <inheritdoc/>
    public uint SectorSize => inner.SectorSize;
    /// <inheritdoc/>
    public string FileName => inner.FileName;
    /// <inheritdoc/>
    public long Capacity => inner.Capacity;
    /// <inheritdoc/>
    public long SegmentSize => inner.SegmentSize;
    /// <inheritdoc/>
    public int StartSegment => inner.StartSegment;
    /// <inheritdoc/>
    public int EndSegment => inner.EndSegment;
    /// <inheritdoc/>
    public int ThrottleLimit { get => inner.ThrottleLimit; set => inner.ThrottleLimit = value; }
    /// <inheritdoc/>
    public bool TryComplete() => inner.TryComplete();
    /// <inheritdoc/>
    public bool Throttle() => inner.Throttle();
    /// <inheritdoc/>
    public void ReadAsync(int segmentId, ulong sourceAddress, IntPtr destinationAddress, uint readLength, DeviceIOCompletionCallback callback, object context) =>
        inner.ReadAsync(segmentId, sourceAddress, destinationAddress, readLength, callback, context);
    /// <inheritdoc/>
    public void ReadAsync(ulong alignedSourceAddress, IntPtr alignedDestinationAddress, uint aligned_read_length, DeviceIOCompletionCallback callback, object context) =>
        inner.ReadAsync(alignedSourceAddress, alignedDestinationAddress, aligned_read_length, callback, context);
    /// <inheritdoc/>
    public void RemoveSegmentAsync(int segment, AsyncCallback callback, IAsyncResult result) => inner.RemoveSegmentAsync(segment, callback, result);
    /// <inheritdoc/>
    public void RemoveSegment(int segment) => inner.RemoveSegment(segment);
    /// <inheritdoc/>
    public long GetFileSize(int segment) => inner.GetFileSize(segment);
    /// <inheritdoc/>
    public void Reset() => inner.Reset();
    /// <inheritdoc/>
    public void Dispose() => inner.Dispose();
}
