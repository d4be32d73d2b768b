using System.Diagnostics;
using System.Text;
using Skiff.Bench.Cluster.Systems;

namespace Skiff.Bench.Cluster;

public enum Op { Put, GetLinearizable, GetStale }

/// <summary>One closed-loop point: C clients, one request in flight each.</summary>
public sealed record PointResult(
    string System, string Kind, int Clients, int Rep, double OpsPerSec, double P50Ms, double P99Ms, double MaxMs,
    double ClientCpuPct, double ServerCpuPct, long Errors, long TermChanges);

/// <summary>One failover: writers running, SIGKILL the leader, how long until writes succeed again.</summary>
public sealed record FailoverResult(
    string System, int Clients, int Rep, double GapMs, double ElectionMs, double FirstWriteMs, long Errors);

/// <summary>Recovery: a member holding `Keys` keys is SIGKILLed and started again; how long until it serves them.</summary>
public sealed record RecoveryResult(string System, int Keys, int Rep, double LoadSeconds, double RecoveryMs,
    double LeaderRssMb, double RecoveredRssMb);

/// <summary>16-byte distinct keys and 100-byte values, as the issue specifies.</summary>
internal static class Keys
{
    private static int run;
    public static readonly byte[] Value = MakeValue();

    private static byte[] MakeValue()
    {
        var v = new byte[100];
        new Random(7).NextBytes(v);
        return v;
    }

    /// <summary>A fresh prefix per point so that no two puts in a whole run share a key.</summary>
    public static int NextRun() => Interlocked.Increment(ref run);

    /// <summary>16 ASCII characters: 2 of run, 4 of client, 10 of sequence, all hex.</summary>
    public static byte[] Make(int runId, int client, long seq) =>
        Encoding.ASCII.GetBytes($"{runId & 0xff:x2}{client & 0xffff:x4}{seq & 0xff_ffff_ffffL:x10}");
}

internal static class Cpu
{
    private static readonly long TicksPerSecond = 100; // USER_HZ on Linux

    /// <summary>utime + stime of a process in seconds, or null if it is gone.</summary>
    public static double? ProcessSeconds(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            // After "pid (comm) ", fields[0] is state (field 3); utime and stime are fields 14 and 15.
            return (long.Parse(fields[11]) + long.Parse(fields[12])) / (double)TicksPerSecond;
        }
        catch (Exception e) when (e is IOException or FormatException or IndexOutOfRangeException) { return null; }
    }

    public static double Self() => Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds;

    public static double Members(IReadOnlyList<int> pids) => pids.Sum(p => ProcessSeconds(p) ?? 0);
}

public static class Load
{
    private static double Ms(long ticks) => ticks * 1000.0 / Stopwatch.Frequency;

    private static double Percentile(long[] sorted, double q) =>
        sorted.Length == 0 ? double.NaN : Ms(sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(q * sorted.Length) - 1)]);

    /// <summary>
    /// Runs C closed-loop clients against one member for warm-up + duration. Operations that complete inside the
    /// measured window are counted; their latencies go into one sorted array (p50, p99, max).
    /// </summary>
    public static async Task<PointResult> ClosedLoopAsync(
        IBenchSystem sys, int member, Op op, int clients, int rep, TimeSpan warmup, TimeSpan duration,
        byte[][]? readKeys, CancellationToken ct)
    {
        var client = sys.Client(member);
        var runId = Keys.NextRun();
        long t0 = Stopwatch.GetTimestamp();
        long measureFrom = t0 + (long)(warmup.TotalSeconds * Stopwatch.Frequency);
        long measureTo = measureFrom + (long)(duration.TotalSeconds * Stopwatch.Frequency);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var termBefore = await TermAsync(sys, member, ct);

        var samples = new List<long>[clients];
        var errors = new long[clients];
        var workers = new Task[clients];
        for (int c = 0; c < clients; c++)
        {
            int id = c;
            samples[id] = new List<long>(4096);
            workers[id] = Task.Run(async () =>
            {
                var rnd = new Random(id * 7919 + runId);
                long seq = 0;
                while (!stop.IsCancellationRequested)
                {
                    var key = op == Op.Put ? Keys.Make(runId, id, seq++) : readKeys![rnd.Next(readKeys.Length)];
                    long start = Stopwatch.GetTimestamp();
                    try
                    {
                        if (op == Op.Put) await client.PutAsync(key, Keys.Value, stop.Token);
                        // Reads go to preloaded keys: a miss is a broken system or adapter, counted as an error.
                        else if (!await client.GetAsync(key, op == Op.GetLinearizable, stop.Token))
                            throw new KeyNotFoundException("a preloaded key was not found");
                        long end = Stopwatch.GetTimestamp();
                        // Counted by completion time: what completes inside the window is the throughput.
                        if (end >= measureFrom && end <= measureTo) samples[id].Add(end - start);
                    }
                    catch (Exception) when (stop.IsCancellationRequested) { break; }
                    catch (Exception)
                    {
                        if (start >= measureFrom && start <= measureTo) errors[id]++;
                        // Do not spin on a broken member: one failed call costs at least a millisecond.
                        await Task.Delay(1, CancellationToken.None);
                    }
                }
            }, CancellationToken.None);
        }

        // CPU is sampled over exactly the measured window.
        await DelayUntil(measureFrom, ct);
        var pids = sys.MemberPids;
        double selfFrom = Cpu.Self(), membersFrom = Cpu.Members(pids);
        await DelayUntil(measureTo, ct);
        double selfTo = Cpu.Self(), membersTo = Cpu.Members(pids);
        stop.Cancel();
        await Task.WhenAll(workers);
        var termAfter = await TermAsync(sys, member, ct);

        var all = samples.SelectMany(s => s).ToArray();
        Array.Sort(all);
        double secs = duration.TotalSeconds;
        return new PointResult(sys.Name, op switch { Op.Put => "put", Op.GetLinearizable => "get-lin", _ => "get-stale" },
            clients, rep, all.Length / secs, Percentile(all, 0.50), Percentile(all, 0.99),
            all.Length == 0 ? double.NaN : Ms(all[^1]),
            100 * (selfTo - selfFrom) / secs, 100 * (membersTo - membersFrom) / secs, errors.Sum(),
            termBefore is long b && termAfter is long a ? a - b : -1);
    }

    private static async Task<long?> TermAsync(IBenchSystem sys, int member, CancellationToken ct)
    {
        try { return (await sys.ProbeAsync(member, ct)).Term; }
        catch (Exception) when (!ct.IsCancellationRequested) { return null; }
    }

    private static async Task DelayUntil(long timestamp, CancellationToken ct)
    {
        var wait = Ms(timestamp - Stopwatch.GetTimestamp());
        if (wait > 0) await Task.Delay(TimeSpan.FromMilliseconds(wait), ct);
    }

    /// <summary>Writes `count` keys with 16 clients so that reads find something; returns the keys.</summary>
    public static async Task<byte[][]> PreloadAsync(IBenchSystem sys, int member, int count, CancellationToken ct)
    {
        var runId = Keys.NextRun();
        var keys = Enumerable.Range(0, count).Select(i => Keys.Make(runId, 0, i)).ToArray();
        var client = sys.Client(member);
        int next = -1;
        await Task.WhenAll(Enumerable.Range(0, 16).Select(_ => Task.Run(async () =>
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < count)
                await client.PutAsync(keys[i], Keys.Value, ct);
        }, ct)));
        return keys;
    }

    /// <summary>Finds the one member that says it is the leader, skipping the excluded (killed) one.</summary>
    public static async Task<int> FindLeaderAsync(IBenchSystem sys, int members, TimeSpan timeout, CancellationToken ct,
        int exclude = -1)
    {
        var until = Stopwatch.GetTimestamp() + (long)(timeout.TotalSeconds * Stopwatch.Frequency);
        while (Stopwatch.GetTimestamp() < until)
        {
            for (int m = 0; m < members; m++)
            {
                if (m == exclude) continue;
                try
                {
                    if ((await sys.ProbeAsync(m, ct)).IsLeader) return m;
                }
                catch (Exception) when (!ct.IsCancellationRequested) { }
            }
            await Task.Delay(10, ct);
        }
        throw new TimeoutException($"{sys.Name}: no leader after {timeout.TotalSeconds:0} s");
    }

    /// <summary>
    /// Failover: `clients` writers with a short per-call deadline, SIGKILL the leader after `before`, keep writing
    /// until a new leader has been seen and then `after` more. Gap = the longest time between two successful writes
    /// (across all writers) from one second before the kill to the end; election = kill until a surviving member
    /// says it is the leader (polled every 10 ms); first write = kill until the end of the first successful write
    /// that started after the kill.
    /// Writers go to whichever member was last seen as leader.
    /// </summary>
    public static async Task<FailoverResult> FailoverAsync(IBenchSystem sys, int members, int leader, int clients, int rep,
        TimeSpan deadline, TimeSpan before, TimeSpan after, CancellationToken ct)
    {
        var runId = Keys.NextRun();
        int current = leader;
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var successes = new List<(long Start, long End)>[clients];
        long errors = 0, latestSuccessStart = 0;
        var workers = new Task[clients];
        for (int c = 0; c < clients; c++)
        {
            int id = c;
            successes[id] = new List<(long, long)>(4096);
            workers[id] = Task.Run(async () =>
            {
                long seq = 0;
                while (!stop.IsCancellationRequested)
                {
                    var key = Keys.Make(runId, id, seq++);
                    long start = Stopwatch.GetTimestamp();
                    try
                    {
                        using var call = CancellationTokenSource.CreateLinkedTokenSource(stop.Token);
                        call.CancelAfter(deadline);
                        await sys.Client(Volatile.Read(ref current)).PutAsync(key, Keys.Value, call.Token);
                        successes[id].Add((start, Stopwatch.GetTimestamp()));
                        long seen;
                        while ((seen = Interlocked.Read(ref latestSuccessStart)) < start &&
                               Interlocked.CompareExchange(ref latestSuccessStart, start, seen) != seen) { }
                    }
                    catch (Exception) when (stop.IsCancellationRequested) { break; }
                    catch (Exception)
                    {
                        Interlocked.Increment(ref errors);
                        await Task.Delay(1, CancellationToken.None);
                    }
                }
            }, CancellationToken.None);
        }

        await Task.Delay(before, ct);
        long killedAt = Stopwatch.GetTimestamp();
        sys.Kill(leader);
        int next = await FindLeaderAsync(sys, members, TimeSpan.FromSeconds(15), ct, exclude: leader);
        long electedAt = Stopwatch.GetTimestamp();
        Volatile.Write(ref current, next);
        // Keep writing until a write that started after the kill has succeeded (at most 30 s), then `after` more:
        // a new leader can take a while to accept writes (DotNext after loading 1,000,000 keys took seconds).
        var recoverBy = Stopwatch.GetTimestamp() + 30 * Stopwatch.Frequency;
        while (Interlocked.Read(ref latestSuccessStart) <= killedAt && Stopwatch.GetTimestamp() < recoverBy)
            await Task.Delay(10, ct);
        await Task.Delay(after, ct);
        stop.Cancel();
        await Task.WhenAll(workers);

        long from = killedAt - Stopwatch.Frequency;
        var ok = successes.SelectMany(s => s).ToArray();
        var times = ok.Select(s => s.End).Where(t => t >= from).Order().ToArray();
        long gap = 0;
        for (int i = 1; i < times.Length; i++) gap = Math.Max(gap, times[i] - times[i - 1]);
        // Replies that were already on their way when the leader died do not count as recovery: the first write
        // after the kill is the first one that also started after it.
        var firstAfter = ok.Where(s => s.Start > killedAt).Select(s => s.End).DefaultIfEmpty(0).Min();
        // No successful write after the kill means writes never recovered: the gap is unknown, not zero.
        return new FailoverResult(sys.Name, clients, rep, firstAfter == 0 ? double.NaN : Ms(gap),
            Ms(electedAt - killedAt), firstAfter == 0 ? double.NaN : Ms(firstAfter - killedAt), errors);
    }

    /// <summary>
    /// Recovery and memory: load `keys` distinct keys (batched, 4 loaders, to the leader), wait until a follower
    /// has the last one, read the leader's resident memory, SIGKILL that follower, start it again on its data, and
    /// time until it serves the keys from its own state (stale reads on that member, polled every 10 ms).
    /// </summary>
    public static async Task<RecoveryResult> RecoveryAsync(IBenchSystem sys, int members, int keys, int rep,
        CancellationToken ct)
    {
        int leader = await FindLeaderAsync(sys, members, TimeSpan.FromSeconds(20), ct);
        var runId = Keys.NextRun();
        var all = Enumerable.Range(0, keys).Select(i => Keys.Make(runId, i >> 24, i & 0xff_ffff)).ToArray();
        var load = Stopwatch.StartNew();
        const int batch = 4000;
        int next = -1, retries = 0;
        // Loading is not measured, only got through: four loaders, and a batch that fails (a large entry can outlast
        // a member's request timeout on a busy machine and cost the leader its term) is retried at the leader of
        // the moment. Puts of the same keys are idempotent.
        await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => Task.Run(async () =>
        {
            int b;
            while ((b = Interlocked.Increment(ref next)) * batch < keys)
            {
                var chunk = all[(b * batch)..Math.Min(keys, (b + 1) * batch)];
                for (int attempt = 1; ; attempt++)
                {
                    try
                    {
                        await sys.Client(Volatile.Read(ref leader)).PutBatchAsync(chunk, Keys.Value, ct);
                        break;
                    }
                    catch (Exception) when (!ct.IsCancellationRequested && attempt < 20)
                    {
                        Interlocked.Increment(ref retries);
                        await Task.Delay(100, ct);
                        Volatile.Write(ref leader, await FindLeaderAsync(sys, members, TimeSpan.FromSeconds(20), ct));
                    }
                }
            }
        }, ct)));
        if (retries > 0) Console.WriteLine($"# {sys.Name} recovery: {retries} load batch(es) retried");
        leader = await FindLeaderAsync(sys, members, TimeSpan.FromSeconds(20), ct);
        double loadSeconds = load.Elapsed.TotalSeconds;
        var last = all[^1];
        var probe = all[keys / 2];
        // The victim is the first follower found holding every key (the last one written); the other may lag far
        // behind on a busy machine (DotNext at 1,000,000 keys took minutes) and does not matter here.
        int follower = -1;
        await Waiting.UntilAsync(async () =>
        {
            for (int m = 0; m < members; m++)
            {
                if (m == leader) continue;
                try
                {
                    if (await sys.Client(m).GetAsync(last, false, ct)) { follower = m; return true; }
                }
                catch (Exception) when (!ct.IsCancellationRequested) { }
            }
            return false;
        }, TimeSpan.FromSeconds(300), $"a {sys.Name} follower to apply the loaded keys", ct);
        double leaderRss = (sys.ResidentBytes(leader) ?? 0) / 1048576.0;

        sys.Kill(follower);
        var down = Stopwatch.StartNew();
        await sys.RestartAsync(follower, ct);
        var deadline = TimeSpan.FromSeconds(300);
        while (true)
        {
            try
            {
                using var call = CancellationTokenSource.CreateLinkedTokenSource(ct);
                call.CancelAfter(500);
                if (await sys.Client(follower).GetAsync(probe, false, call.Token)
                    && await sys.Client(follower).GetAsync(last, false, call.Token))
                    break;
            }
            catch (Exception) when (!ct.IsCancellationRequested) { }
            if (down.Elapsed > deadline)
                throw new TimeoutException($"{sys.Name}: the restarted member did not serve its keys within {deadline.TotalSeconds:0} s");
            await Task.Delay(10, ct);
        }
        double recoveryMs = down.Elapsed.TotalMilliseconds;
        double recoveredRss = (sys.ResidentBytes(follower) ?? 0) / 1048576.0;
        return new RecoveryResult(sys.Name, keys, rep, loadSeconds, recoveryMs, leaderRss, recoveredRss);
    }
}
