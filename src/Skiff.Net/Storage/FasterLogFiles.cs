using FASTER.core;

namespace Skiff.Net.Storage;

/// <summary>
/// The FASTER side of the Raft log: the segment files' device (<c>raft.log.N</c>), the commit manager the
/// <see cref="LogCommitMode"/> asks for, and the <see cref="FasterLog"/> over them, opened (recovering FASTER's own
/// commit point) and closed together.
/// </summary>
internal sealed class FasterLogFiles : IDisposable
{
    private readonly IDevice _device;
    private readonly SlotCommitManager? _commitManager;

    /// <summary>The log.</summary>
    public FasterLog Log { get; }

    /// <summary>Metadata writes made by our commit manager, if one is in use.</summary>
    public long MetadataWrites => _commitManager?.MetadataWrites ?? 0;

    private FasterLogFiles(IDevice device, SlotCommitManager? commitManager, FasterLog log)
    {
        _device = device;
        _commitManager = commitManager;
        Log = log;
    }

    /// <summary>Opens the log's files in <paramref name="dir"/> (which must exist).</summary>
    public static FasterLogFiles Open(string dir, RaftLogOptions options)
    {
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
            return new FasterLogFiles(device, manager, log);
        }
        catch
        {
            log?.Dispose();
            manager?.Dispose();
            device?.Dispose();
            throw;
        }
    }

    /// <summary>FASTER's iterator failing to parse one of FASTER's own commit records (see
    /// <see cref="LogRecovery"/>).</summary>
    public static bool IsDamagedCommitRecord(FasterException e) =>
        e.Message.Contains("commit recovery", StringComparison.Ordinal);

    /// <summary>Leaves FASTER's epoch if this thread still holds it (FASTER 2.6.5's scan iterator keeps it held
    /// when parsing a commit record throws, and page flushes waiting on the epoch would never run). FasterLog does
    /// not expose its epoch, hence the reflection.</summary>
    public void ReleaseEpoch()
    {
        if (FasterLogEpoch?.GetValue(Log) is LightEpoch epoch && epoch.ThisInstanceProtected()) epoch.Suspend();
    }

    private static readonly System.Reflection.FieldInfo? FasterLogEpoch =
        typeof(FasterLog).GetField("epoch", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance);

    /// <summary>Closes the log, its commit manager and its device, in that order.</summary>
    public void Dispose()
    {
        Log.Dispose();
        _commitManager?.Dispose();
        _device.Dispose();
    }
}
