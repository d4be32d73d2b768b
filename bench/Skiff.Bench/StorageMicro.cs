// BenchmarkDotNet micro-benchmarks of the storage paths (issue #7): the durable log append (one group commit per
// call, so fsync-bound), a log range read, applying a put to the key-value state machine, a point read, and
// listing 100 keys under a prefix among 100,000; and a put applied outside and inside a client session.
//   dotnet run --project bench/Skiff.Bench -c Release -- micro                  (all, BenchmarkDotNet short job)
//   dotnet run --project bench/Skiff.Bench -c Release -- micro --job default    (BenchmarkDotNet's full job)
//   ... -- micro --filter '*KvApply*'                                           (one class)
// Ends with one line per benchmark: `storage-micro <name> mean_us=… alloc_b=…`.
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;
using Skiff.Core;
using Skiff.Net.Storage;

namespace Skiff.Bench;

/// <summary>A fresh directory per benchmark class, removed afterwards.</summary>
public abstract class StorageMicroBase
{
    protected string Dir { get; } = Path.Combine(Path.GetTempPath(), "skiff-micro-" + Guid.NewGuid().ToString("N"));

    protected static byte[] Payload(long i) =>
        CommandCodec.encode(Command.NewInsert($"k/{i:D14}", new byte[100]));

    protected void RemoveDir()
    {
        try { Directory.Delete(Dir, recursive: true); } catch (IOException) { }
    }
}

/// <summary>Durable appends: each call is its own group commit (one fsync), as a lone writer sees it.</summary>
[MemoryDiagnoser]
public class LogAppend : StorageMicroBase
{
    private RaftLog _log = null!;
    private long _next;
    private byte[] _payload = [];

    /// <summary>Entries per append.</summary>
    [Params(1, 64)] public int Batch { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _log = RaftLog.Open(Dir);
        _payload = Payload(0);
        _next = 1;
    }

    [Benchmark(Description = "append durable")]
    public Task Append()
    {
        var entries = new LogEntry[Batch];
        for (int i = 0; i < Batch; i++) entries[i] = new LogEntry(_next + i, 1, _payload);
        _next += Batch;
        return _log.AppendAsync(entries);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _log.Dispose();
        RemoveDir();
    }
}

/// <summary>Reading 64 recent entries back, as replication and the applier do.</summary>
[MemoryDiagnoser]
public class LogRead : StorageMicroBase
{
    private RaftLog _log = null!;
    private int _k;

    [GlobalSetup]
    public void Setup()
    {
        _log = RaftLog.Open(Dir);
        var payload = Payload(0);
        for (long first = 1; first <= 20_000; first += 1000)
            _log.AppendAsync(Enumerable.Range(0, 1000).Select(i => new LogEntry(first + i, 1, payload)).ToArray()).GetAwaiter().GetResult();
    }

    [Benchmark(Description = "read 64 entries")]
    public async Task<int> Read()
    {
        long from = 19_000 + (_k++ % 900);
        return (await _log.ReadAsync(from, from + 63)).Count; // the count: LogEntry is internal to Skiff.Net
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _log.Dispose();
        RemoveDir();
    }
}

/// <summary>The state machine: applying a put (new key), reading a key, listing 100 keys among 100,000.</summary>
[MemoryDiagnoser]
public class KvApply : StorageMicroBase
{
    private const int Keys = 100_000;
    private KvStateMachine _kv = null!;
    private long _index;
    private byte[][] _puts = [];
    private int _p;

    [GlobalSetup]
    public void Setup()
    {
        _kv = KvStateMachine.Open(Dir);
        for (_index = 1; _index <= Keys; _index++)
            _kv.ApplyEncoded(_index, 1, CommandCodec.encode(Command.NewInsert($"dir{_index % 1000:D4}/{_index:D10}", new byte[100])));
        _puts = Enumerable.Range(0, 1 << 16).Select(i => Payload(i)).ToArray();
    }

    [Benchmark(Description = "apply put")]
    public CommandResult? ApplyPut() => _kv.ApplyEncoded(++_index, 1, _puts[_p++ & 0xFFFF]);

    [Benchmark(Description = "get")]
    public byte[]? Get() => _kv.Get($"dir0042/{42042:D10}");

    [Benchmark(Description = "list 100 keys of 100k")]
    public IReadOnlyList<string> List100() => _kv.ListKeys("dir0042/");

    [GlobalCleanup]
    public void Cleanup()
    {
        _kv.Dispose();
        RemoveDir();
    }
}

/// <summary>What client sessions cost per applied write (issue 11): a put outside any session against the same put
/// inside one, each encoded per call, with 1 or 64 of the session's writes in flight (so its table keeps 1 or 64
/// results).</summary>
[MemoryDiagnoser]
public class KvSessionApply : StorageMicroBase
{
    private KvStateMachine _kv = null!;
    private long _index;
    private long _sequence;
    private Command[] _commands = [];
    private int _p;

    /// <summary>Writes of the session in flight (results the table keeps).</summary>
    [Params(1, 64)] public int InFlight { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _kv = KvStateMachine.Open(Dir);
        _kv.ApplyEncoded(1, 1, LogCommandCodec.encode(LogCommand.NewOpenSession(0, 600_000, "")));
        _index = 1;
        _commands = Enumerable.Range(0, 1 << 12).Select(i => Command.NewInsert($"k/{i:D14}", new byte[100])).ToArray();
    }

    [Benchmark(Baseline = true, Description = "apply put, no session")]
    public CommandResult? Plain() =>
        _kv.ApplyEncoded(++_index, 1, LogCommandCodec.encode(LogCommand.NewPlain(_commands[_p++ & 0xFFF])));

    [Benchmark(Description = "apply put in a session")]
    public CommandResult? InSession()
    {
        var sequence = ++_sequence;
        var stamp = new SessionStamp(1, sequence, Math.Max(1, sequence - InFlight + 1), 1);
        return _kv.ApplyEncoded(++_index, 1, LogCommandCodec.encode(LogCommand.NewInSession(stamp, _commands[_p++ & 0xFFF])));
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _kv.Dispose();
        RemoveDir();
    }
}

/// <summary>Runs the storage micro-benchmarks with BenchmarkDotNet and prints one summary line per benchmark.</summary>
public static class StorageMicro
{
    public static Task<int> Run(string[] args)
    {
        // Short job unless told otherwise: the storage paths are fsync- and allocation-bound, and a short job's
        // spread is enough to compare; the full default job takes many minutes per benchmark.
        bool jobGiven = args.Any(a => a is "--job" || a.StartsWith("--job=", StringComparison.Ordinal));
        var config = ManualConfig.Create(DefaultConfig.Instance)
            .WithBuildTimeout(TimeSpan.FromMinutes(10))
            .WithArtifactsPath(Path.Combine(AppContext.BaseDirectory, "BenchmarkDotNet.Artifacts"));
        if (!jobGiven) config = config.AddJob(Job.ShortRun);
        var switcher = BenchmarkSwitcher.FromTypes([typeof(LogAppend), typeof(LogRead), typeof(KvApply), typeof(KvSessionApply)]);
        bool filtered = args.Any(a => a is "--filter" || a.StartsWith("--filter=", StringComparison.Ordinal));
        var summaries = filtered ? switcher.Run(args, config) : switcher.RunAll(config, args);
        int failed = 0;
        foreach (var summary in summaries)
            foreach (var report in summary.Reports)
            {
                var name = report.BenchmarkCase.Descriptor.WorkloadMethodDisplayInfo.Replace(' ', '_').Replace("'", "");
                foreach (var p in report.BenchmarkCase.Parameters.Items) name += $"_{p.Name.ToLowerInvariant()}{p.Value}";
                var stats = report.ResultStatistics;
                if (stats is null) { failed++; Console.WriteLine($"storage-micro {name} FAILED"); continue; }
                var alloc = report.GcStats.GetBytesAllocatedPerOperation(report.BenchmarkCase);
                Console.WriteLine($"storage-micro {name} mean_us={stats.Mean / 1000:F2} alloc_b={alloc}");
            }
        return Task.FromResult(failed == 0 ? 0 : 1);
    }
}
