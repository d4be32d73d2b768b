using System.Diagnostics;
using System.Globalization;
using Skiff.Core;
using Skiff.Net.Storage;

namespace Skiff.Bench;

/// <summary>`recovery`: the state machine alone (no cluster), loaded with N keys shaped like the cluster benchmark's
/// recovery point (16 hex characters, 100-byte values), snapshotted, closed, and reopened in a fresh process (so its
/// resident memory is that of a restarted member, not of the loader). Prints the phases of the open (FASTER's
/// checkpoint recovery, the key index) and the process's resident memory and managed heap after loading and after
/// reopening: <c>recovery &lt;what&gt; key=value ...</c>. Each reopen is a run; the median is printed too.</summary>
public static class RecoveryBench
{
    /// <summary>Runs it: <c>recovery [--keys N] [--reopens R] [--dir D] [--memory-bits B] [--index-mib M]
    /// [--tail N] [--keep] [--no-index-file] [--node]</c>; with <c>--node</c>, a node's whole
    /// storage (<see cref="NodeStorage"/>): each key one log entry, applied, a snapshot and log compaction every 8 MiB of
    /// entries as the runtime's defaults do, and reopening replays the entries after the last snapshot; <c>--open D</c> is the child that reopens (started by the parent).</summary>
    public static async Task<int> Run(string[] args)
    {
        var keys = 1_000_000;
        var reopens = 3;
        var tail = 0;
        var keep = false;
        var node = false;
        string? root = null, open = null;
        var options = new KvOptions();
        for (var i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--keys": keys = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--reopens": reopens = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--tail": tail = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--dir": root = args[++i]; break;
                case "--keep": keep = true; break;
                case "--node": node = true; break;
                case "--open": open = args[++i]; break;
                case "--memory-bits": options = options with { MemorySizeBits = int.Parse(args[++i], CultureInfo.InvariantCulture) }; break;
                case "--no-index-file": options = options with { KeyIndexFile = false }; break;
                case "--index-mib": options = options with { IndexSizeBytes = long.Parse(args[++i], CultureInfo.InvariantCulture) << 20 }; break;
                default: Console.Error.WriteLine($"unknown argument {args[i]}"); return 2;
            }
        }
        if (open is not null) return node ? await ReopenNode(open, options) : Reopen(open, options);
        var dir = Path.Combine(root ?? Path.GetTempPath(), "skiff-recovery-bench-" + Guid.NewGuid().ToString("N"));
        try
        {
            if (node) await LoadNode(dir, keys, options);
            else Load(dir, keys, tail, options);
            var times = new List<double>();
            for (var r = 0; r < reopens; r++)
            {
                var self = typeof(RecoveryBench).Assembly.Location;
                var extra = new List<string> { self, "recovery", "--open", dir,
                    "--memory-bits", options.MemorySizeBits.ToString(CultureInfo.InvariantCulture),
                    "--index-mib", (options.IndexSizeBytes >> 20).ToString(CultureInfo.InvariantCulture) };
                if (!options.KeyIndexFile) extra.Add("--no-index-file");
                if (node) extra.Add("--node");
                var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true };
                foreach (var a in extra) psi.ArgumentList.Add(a);
                using var child = Process.Start(psi)!;
                var output = await child.StandardOutput.ReadToEndAsync();
                await child.WaitForExitAsync();
                Console.Write(output);
                foreach (var line in output.Split('\n'))
                    if (line.StartsWith("recovery open ", StringComparison.Ordinal))
                        times.Add(double.Parse(line.Split(' ').First(p => p.StartsWith("open_ms=", StringComparison.Ordinal))[8..], CultureInfo.InvariantCulture));
            }
            times.Sort();
            if (times.Count > 0) Console.WriteLine($"recovery median open_ms={times[times.Count / 2]:F0} runs={times.Count} load={Load()}");
        }
        finally
        {
            if (!keep) try { Directory.Delete(dir, true); } catch (IOException) { }
            else Console.WriteLine($"# kept {dir}");
        }
        return 0;
    }

    private static void Load(string dir, int keys, int tail, KvOptions options)
    {
        var value = new byte[100];
        new Random(7).NextBytes(value);
        var sw = Stopwatch.StartNew();
        using var kv = KvStateMachine.Open(dir, options);
        for (var i = 0; i < keys; i++)
            kv.Apply(i + 1, 1, Command.NewInsert(Key(i), value));
        Console.WriteLine($"recovery load keys={keys} s={sw.Elapsed.TotalSeconds:F1} {Memory()}");
        sw.Restart();
        kv.TakeSnapshot();
        Console.WriteLine($"recovery snapshot ms={sw.Elapsed.TotalMilliseconds:F0} {Memory()}");
        // Writes after the snapshot are what a restarted member replays from its log; here they are only applied.
        for (var i = 0; i < tail; i++)
            kv.Apply(keys + i + 1, 1, Command.NewInsert(Key(keys + i), value));
    }

    private static async Task LoadNode(string dir, int keys, KvOptions options)
    {
        var value = new byte[100];
        new Random(7).NextBytes(value);
        var sw = Stopwatch.StartNew();
        using var storage = NodeStorage.Open(dir, new NodeStorageOptions { Kv = options });
        long sinceSnapshot = 0, snapshots = 0;
        const int Batch = 256;
        for (var first = 1; first <= keys; first += Batch)
        {
            var entries = new List<LogEntry>(Batch);
            for (var i = first; i < first + Batch && i <= keys; i++)
                entries.Add(new LogEntry(i, 1, LogCommandCodec.encode(LogCommand.NewPlain(Command.NewInsert(Key(i - 1), value)))));
            await storage.Log.AppendAsync(entries);
            foreach (var e in entries)
            {
                storage.Kv.ApplyEncoded(e.Index, e.Term, e.Payload);
                sinceSnapshot += e.Payload.Length;
            }
            if (sinceSnapshot >= 8L << 20)
            {
                await storage.SnapshotAndCompactAsync();
                sinceSnapshot = 0;
                snapshots++;
            }
        }
        Console.WriteLine($"recovery node-load keys={keys} snapshots={snapshots} s={sw.Elapsed.TotalSeconds:F1} unsnapshotted_mib={sinceSnapshot / 1048576.0:F1} {Memory()}");
    }

    private static async Task<int> ReopenNode(string dir, KvOptions options)
    {
        var sw = Stopwatch.StartNew();
        using var storage = NodeStorage.Open(dir, new NodeStorageOptions { Kv = options });
        var openMs = sw.Elapsed.TotalMilliseconds;
        var openCpu = Cpu();
        var s = storage.Kv.LastOpen;
        sw.Restart();
        long replayed = 0;
        var reading = TimeSpan.Zero;
        for (var next = storage.Kv.AppliedIndex + 1; next <= storage.Log.LastIndex;)
        {
            var read = Stopwatch.StartNew();
            var entries = await storage.Log.ReadAsync(next, storage.Log.LastIndex, 4L << 20);
            reading += read.Elapsed;
            foreach (var e in entries) storage.Kv.ApplyEncoded(e.Index, e.Term, e.Payload);
            replayed += entries.Count;
            next += entries.Count;
        }
        var replayMs = sw.Elapsed.TotalMilliseconds;
        var replayCpu = Cpu() - openCpu;
        if (storage.Kv.Get(Key(storage.Kv.KeyCount - 1)) is null) throw new InvalidOperationException("the last key is missing after reopening");
        var kvMs = (s.Recover + s.KeyIndex).TotalMilliseconds;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"recovery open keys={storage.Kv.KeyCount} open_ms={openMs + replayMs:F0} storage_open_ms={openMs:F0} log_and_hardstate_ms={openMs - kvMs:F0} checkpoint_ms={s.Recover.TotalMilliseconds:F0} key_index_ms={s.KeyIndex.TotalMilliseconds:F0} index_from=\"{s.IndexSource}\" replay_ms={replayMs:F0} of_which_log_read_ms={reading.TotalMilliseconds:F0} replayed={replayed} cpu_ms: process_to_open={openCpu:F0} replay={replayCpu:F0} {Memory()} load={Load()}"));
        return 0;
    }

    /// <summary>The cluster benchmark's key shape (Keys.Make): 2 hex of run, 4 of client, 10 of sequence.</summary>
    private static string Key(int i) => $"{1:x2}{i >> 24:x4}{i & 0xff_ffff:x10}";

    private static int Reopen(string dir, KvOptions options)
    {
        var sw = Stopwatch.StartNew();
        using var kv = KvStateMachine.Open(dir, options);
        var openMs = sw.Elapsed.TotalMilliseconds;
        var openCpu = Cpu();
        var s = kv.LastOpen;
        if (kv.Get(Key(kv.KeyCount / 2)) is null) throw new InvalidOperationException("a loaded key is missing after reopening");
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"recovery open keys={kv.KeyCount} open_ms={openMs:F0} checkpoint_ms={s.Recover.TotalMilliseconds:F0} key_index_ms={s.KeyIndex.TotalMilliseconds:F0} index_from=\"{s.IndexSource}\" cpu_ms_process_to_open={openCpu:F0} {Memory()} load={Load()}"));
        return 0;
    }

    /// <summary>CPU milliseconds this process has used (all threads): on a shared machine, steadier than wall time.</summary>
    private static double Cpu()
    {
        using var self = Process.GetCurrentProcess();
        return self.TotalProcessorTime.TotalMilliseconds;
    }

    private static string Memory()
    {
        using var self = Process.GetCurrentProcess();
        var rss = self.WorkingSet64 / 1048576.0;
        var heap = GC.GetTotalMemory(forceFullCollection: true) / 1048576.0;
        self.Refresh();
        return string.Create(CultureInfo.InvariantCulture, $"rss_mib={rss:F0} heap_mib={heap:F0} rss_after_gc_mib={self.WorkingSet64 / 1048576.0:F0}");
    }

    private static string Load()
    {
        try { return File.ReadAllText("/proc/loadavg").Split(' ')[0]; } catch (IOException) { return "?"; }
    }
}
