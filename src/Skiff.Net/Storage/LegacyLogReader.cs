using FASTER.core;

namespace Skiff.Net.Storage;

/// <summary>
/// Reads a Raft log written by older versions on FASTER's <see cref="FasterLog"/> (<c>raft.log.N</c> segments and
/// commit metadata), only so <see cref="LegacyLogMigration"/> can move it into the write-ahead log. Recovery is the
/// old one (<see cref="LogRecovery"/>: FASTER's commit point, torn tail records, damaged commit records, holes).
/// </summary>
internal sealed class LegacyLogReader : IDisposable
{
    private readonly string _logPath;
    private readonly RaftLogOptions _options;
    private readonly FasterLogFiles _files;
    private readonly LogIndex _durable = new();

    /// <summary>The index before the first entry.</summary>
    public long BaseIndex => _durable.BaseIndex;

    /// <summary>The term at <see cref="BaseIndex"/>, -1 if unknown.</summary>
    public long BaseTerm => _durable.BaseTerm;

    /// <summary>The last entry's index.</summary>
    public long LastIndex => _durable.LastIndex;

    private LegacyLogReader(string dir, RaftLogOptions options, FasterLogFiles files)
    {
        _logPath = Path.Combine(dir, "raft.log");
        _options = options;
        _files = files;
        LogRecovery.Run(files, dir, _logPath, options, _durable);
    }

    /// <summary>Whether <paramref name="dir"/> holds files of the old log.</summary>
    public static bool Present(string dir) =>
        Directory.Exists(dir) && (Directory.EnumerateFiles(dir, "raft.log.*").Any() || File.Exists(Path.Combine(dir, "commit.meta"))
                                  || Directory.Exists(Path.Combine(dir, "commits")));

    /// <summary>The old log's files and directories, to delete once migrated.</summary>
    public static IEnumerable<string> Files(string dir) =>
        Directory.EnumerateFiles(dir, "raft.log.*")
            .Concat(new[] { "commit.meta", "log.voids", "log.voids.tmp", StoreGeometry.FileName }.Select(f => Path.Combine(dir, f)).Where(File.Exists));

    /// <summary>Opens the old log in <paramref name="dir"/>, recovering it.</summary>
    public static LegacyLogReader Open(string dir, RaftLogOptions options)
    {
        FasterLogFiles? files = null;
        try
        {
            var geometry = StoreGeometry.Resolve(dir, new StoreGeometry(options.PageSizeBits, Math.Max(options.PageSizeBits, options.SegmentSizeBits)),
                RaftLogOptions.LegacyGeometry, "raft.log");
            options = options with { PageSizeBits = geometry.PageSizeBits, SegmentSizeBits = geometry.SegmentSizeBits };
            files = FasterLogFiles.Open(dir, options);
            return new LegacyLogReader(dir, options, files);
        }
        catch (Exception e)
        {
            files?.Dispose();
            if (e is SkiffException) throw;
            if (e is IOException or UnauthorizedAccessException) throw StorageIo.Wrap(dir, e);
            throw new SkiffException(ErrorKind.StorageError, $"cannot open the old log in {dir}: {e.Message}", e);
        }
    }

    /// <summary>Entries <paramref name="from"/>..<paramref name="toInclusive"/> (within the log), in order.</summary>
    public List<LogEntry> Read(long from, long toInclusive)
    {
        var addrs = _durable.AddressesOf(from, (int)(toInclusive - from + 1));
        // The scan must end past the whole last record: FASTER loads a page only up to the scan's end address.
        long endAddress = toInclusive < _durable.LastIndex ? _durable.AddressOf(toInclusive + 1) : _files.Log.CommittedUntilAddress;
        var result = new List<LogEntry>(addrs.Length);
        using var iter = _files.Log.Scan(addrs[0], endAddress, scanUncommitted: false);
        int k = 0;
        try
        {
            while (k < addrs.Length)
            {
                byte[] data;
                int length;
                long address;
                try
                {
                    if (!iter.GetNext(out data, out length, out address, out _))
                    {
                        if (iter.Ended) break;
                        iter.WaitAsync().AsTask().GetAwaiter().GetResult();
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
                k++;
            }
        }
        catch (Exception e) when (e is not SkiffException)
        {
            throw new SkiffException(ErrorKind.StorageError, $"reading {_logPath}: {e.Message}", e);
        }
        if (k < addrs.Length)
            throw new SkiffException(ErrorKind.StorageError, $"could not read index {from + k} from {_logPath}");
        return result;
    }

    private SkiffException Corrupt(long address, string what) =>
        LogRecord.Corrupt(_logPath, _options.SegmentSizeBits, address, what);

    /// <summary>Closes the old log's files.</summary>
    public void Dispose() => _files.Dispose();
}
