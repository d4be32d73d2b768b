namespace Skiff.Net.Storage;

/// <summary>Settings of a node's <see cref="NodeStorage"/>.</summary>
internal sealed record NodeStorageOptions
{
    /// <summary>Settings of the Raft log.</summary>
    public RaftLogOptions Log { get; init; } = new();
    /// <summary>Settings of the key-value state machine.</summary>
    public KvOptions Kv { get; init; } = new();
}

/// <summary>
/// Everything a node keeps on disk, in one locked data directory:
/// <c>LOCK</c> (held with flock while open), <c>hardstate</c> (<see cref="HardStateStore"/>: node id, term, vote),
/// <c>log/</c> (<see cref="RaftLog"/>) and <c>kv/</c> (<see cref="KvStateMachine"/>, whose checkpoints are the
/// snapshots). After <see cref="Open"/>, the runtime replays log entries after <see cref="KvStateMachine.AppliedIndex"/>
/// up to the commit index it learns.
/// </summary>
internal sealed class NodeStorage : IDisposable
{
    private readonly FileStream _lock;

    /// <summary>The data directory.</summary>
    public string Directory { get; }

    /// <summary>Node identity and Raft hard state.</summary>
    public HardStateStore HardState { get; }

    /// <summary>The Raft log.</summary>
    public RaftLog Log { get; }

    /// <summary>The key-value state machine.</summary>
    public KvStateMachine Kv { get; }

    private NodeStorage(string dir, FileStream lockFile, HardStateStore hs, RaftLog log, KvStateMachine kv)
    {
        Directory = dir;
        _lock = lockFile;
        HardState = hs;
        Log = log;
        Kv = kv;
    }

    /// <summary>Opens (creating if needed) and locks a data directory, recovering all state.</summary>
    /// <param name="directory">The data directory.</param>
    /// <param name="options">Settings; null for defaults.</param>
    /// <returns>The open storage; dispose it to release the lock.</returns>
    /// <exception cref="SkiffException"><see cref="ErrorKind.DataDirectoryLocked"/> if another process (or another
    /// open in this one) holds it; <see cref="ErrorKind.DataDirectoryCreateFailed"/> if it cannot be created;
    /// <see cref="ErrorKind.StorageError"/> for I/O failures (read-only or full disk);
    /// <see cref="ErrorKind.StorageCorrupted"/> for corruption other than a torn log tail.</exception>
    public static NodeStorage Open(string directory, NodeStorageOptions? options = null)
    {
        options ??= new NodeStorageOptions();
        var dir = Path.GetFullPath(directory);
        FileStream lockFile = AcquireLock(dir);
        HardStateStore? hs = null;
        RaftLog? log = null;
        try
        {
            hs = HardStateStore.Open(Path.Combine(dir, "hardstate"));
            log = RaftLog.Open(Path.Combine(dir, "log"), options.Log);
            var kv = KvStateMachine.Open(Path.Combine(dir, "kv"), options.Kv, logHoldsEverything: log.FirstIndex == 1);
            return new NodeStorage(dir, lockFile, hs, log, kv);
        }
        catch
        {
            log?.Dispose();
            hs?.Dispose();
            lockFile.Dispose();
            throw;
        }
    }

    /// <summary>Creates the directory if needed and takes an exclusive lock on its <c>LOCK</c> file. .NET opens a
    /// file with <see cref="FileShare.None"/> with <c>flock(LOCK_EX | LOCK_NB)</c> on Unix, so the lock is held per
    /// open file description and dies with the process.</summary>
    /// <param name="dir">The data directory.</param>
    /// <returns>The open lock file; dispose it to release the lock.</returns>
    public static FileStream AcquireLock(string dir)
    {
        try
        {
            StorageIo.CreateDirectoryDurably(dir);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SkiffException(ErrorKind.DataDirectoryCreateFailed, $"cannot create data directory {dir}: {e.Message}", e);
        }
        var path = Path.Combine(dir, "LOCK");
        try
        {
            return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1);
        }
        catch (IOException e) when ((e.HResult & 0xFFFF) == 32 || e.Message.Contains("being used by another process", StringComparison.Ordinal))
        {
            throw new SkiffException(ErrorKind.DataDirectoryLocked, $"data directory {dir} is in use (lock file {path} is held)", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw StorageIo.Wrap(path, e);
        }
    }

    /// <summary>Takes a snapshot of the state machine and compacts the log behind it (keeping the configured tail).</summary>
    /// <returns>The snapshot.</returns>
    public async Task<SnapshotInfo> SnapshotAndCompactAsync()
    {
        var snap = Kv.TakeSnapshot();
        await Log.CompactUntil(snap.Index).ConfigureAwait(false);
        return snap;
    }

    /// <summary>Closes everything and releases the directory lock.</summary>
    public void Dispose()
    {
        Log.Dispose();
        Kv.Dispose();
        HardState.Dispose();
        _lock.Dispose();
    }
}
