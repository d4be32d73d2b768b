using System.CommandLine;
using System.Diagnostics;
using System.Net;
using Microsoft.Extensions.Logging;

namespace Skiff.Cli;

/// <summary><c>skiff serve</c>: one node in the foreground until Ctrl-C or SIGTERM, logging elections and membership
/// changes to stdout.</summary>
internal static class Serve
{
    public static Command Command()
    {
        var dir = new Option<string>("--dir") { Description = "Data directory (created if missing; reuse it to restart the node)", Required = true };
        var bind = new Option<string>("--bind") { Description = "IP address to listen on", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "Port (every member uses the same one)", DefaultValueFactory = _ => 9400 };
        var join = new Option<string?>("--join") { Description = "Join the cluster through these members, HOST[:PORT][,…] by IP address or host name (a member restarting on its own data dir needs none, but may keep it)" };
        var advertise = new Option<string?>("--advertise-address") { Description = "HOST:PORT the other members and clients reach this node at, by host name or IP address (default: --bind:--port)" };
        var newCluster = new Option<bool>("--new-cluster") { Description = "Found a new cluster if the data dir holds none; only for a cluster's first member, once (never in a service's command line)" };
        var parentPid = new Option<int?>("--parent-pid") { Hidden = true, Description = "Exit cleanly when this process dies (used by the demo)" };
        var heartbeat = new Option<int?>("--heartbeat-ms") { Description = "Leader heartbeat interval in ms (default 50)" };
        var election = new Option<int?>("--election-ms") { Description = "Election timeout in ms, randomised in [T, 2T] (default 150, i.e. 150-300)" };
        var maxValue = new Option<int?>("--max-value-bytes") { Description = "The largest value the node accepts, in bytes (default 1048576); larger writes fail with ValueTooLarge" };
        var faultAfter = new Option<int?>("--fault-after-ms") { Hidden = true, Description = "Test hook: fail-stop the node this long after it serves" };
        var noDedup = new Option<bool>("--unsafe-no-dedup") { Hidden = true, Description = "Test hook: apply resent session writes again (shows the fault harness catches duplicates)" };
        var memory = new Option<int?>("--state-machine-memory-mib")
        {
            Description = "Memory for the state machine's keys and values, in MiB (default 64); what does not fit stays on disk",
        };
        var tokenTtl = new Option<int?>("--auth-token-ttl") { Description = "Seconds an auth token is valid (default 300, as etcd's)" };
        var tls = ServeTls.Options();
        var serve = new Command("serve", "Run a node in the foreground until Ctrl-C or SIGTERM") { dir, bind, port, advertise, join, newCluster, heartbeat, election, maxValue, memory, tokenTtl, parentPid, faultAfter, noDedup };
        foreach (var o in tls) serve.Add(o);
        serve.SetAction((p, ct) => RunAsync(p.GetValue(dir)!, p.GetValue(bind)!, p.GetValue(port), p.GetValue(advertise), p.GetValue(join), p.GetValue(newCluster), p.GetValue(parentPid),
            p.GetValue(heartbeat), p.GetValue(election), p.GetValue(maxValue), p.GetValue(memory), p.GetValue(tokenTtl), p.GetValue(faultAfter), p.GetValue(noDedup), () => ServeTls.Read(p), ct));
        return serve;
    }

    /// <summary>
    /// Maps --heartbeat-ms/--election-ms onto the runtime: the tick is the largest of 10, 5, 2, 1 ms dividing both,
    /// the heartbeat is a whole number of ticks, and the election timeout is randomised in [T, 2T] as etcd's is.
    /// Null when neither is given (the runtime's defaults: 10 ms tick, 50 ms heartbeat, 150-300 ms election).
    /// </summary>
    internal static Action<Skiff.Net.Runtime.SkiffServerOptions>? Timing(int? heartbeatMs, int? electionMs)
    {
        if (heartbeatMs is null && electionMs is null) return null;
        var hb = heartbeatMs ?? 50;
        var el = electionMs ?? Math.Max(150, 3 * hb);
        if (hb < 1) throw new CliException(Exit.Usage, $"--heartbeat-ms {hb} must be at least 1");
        if (el <= hb) throw new CliException(Exit.Usage, $"--election-ms {el} must be greater than --heartbeat-ms {hb}");
        var tick = new[] { 10, 5, 2, 1 }.First(t => hb % t == 0 && el % t == 0);
        return o =>
        {
            o.TickInterval = TimeSpan.FromMilliseconds(tick);
            var raft = o.Raft ?? Skiff.Core.OptionsModule.defaults;
            o.Raft = new Skiff.Core.Options(hb / tick, el / tick, 2 * el / tick, raft.MaxInflight, raft.MaxEntriesPerAppend,
                raft.MaxBytesPerAppend, raft.WindowSize, raft.SnapshotThreshold, raft.SnapshotBytes, raft.CompactionTail, raft.PromotionLag,
                raft.PreVote, raft.CheckQuorum, raft.WindowBytes, raft.MaxUncommittedBytes, raft.MaxWaitingRequests);
        };
    }

    private static async Task<int> RunAsync(string dir, string bindText, int port, string? advertise, string? joinText, bool newCluster, int? parentPid,
        int? heartbeatMs, int? electionMs, int? maxValueBytes, int? memoryMib, int? tokenTtlSeconds, int? faultAfterMs, bool unsafeNoDedup, Func<TlsOptions?> readTls, CancellationToken ct)
    {
        // SKIFF_TRACE=1: every event and effect of the node's loop (the library logs them at Trace level).
        var trace = Environment.GetEnvironmentVariable("SKIFF_TRACE") == "1";
        var minimum = trace ? LogLevel.Trace : LogLevel.Information;
        using var loggerFactory = LoggerFactory.Create(b => b.AddProvider(new LineLoggerProvider(minimum)).SetMinimumLevel(minimum));
        var log = loggerFactory.CreateLogger("skiff");
        SkiffNode? node = null;
        try
        {
            if (!Addresses.TryParse(bindText, out var bind)) throw new CliException(Exit.Usage, $"--bind '{bindText}' is not an IP address");
            if (port is < 1 or > 65535) throw new CliException(Exit.Usage, $"--port {port} is not between 1 and 65535");
            var join = JoinList(joinText, port);
            if (advertise is not null && !Skiff.Net.Runtime.MemberAddress.TryParse(advertise, out _, out _, out var badAdvertise))
                throw new CliException(Exit.Usage, $"--advertise-address '{advertise}' is not a HOST:PORT address: {badAdvertise}");
            var timing = Timing(heartbeatMs, electionMs);
            if (memoryMib is < 1 or > 1 << 20)
                throw new CliException(Exit.Usage, $"--state-machine-memory-mib {memoryMib} must be between 1 and 1048576");
            var memoryBytes = (memoryMib ?? (int)(Skiff.Net.Runtime.SkiffServerOptions.DefaultStateMachineMemoryBytes >> 20)) * (1L << 20);
            Action<Skiff.Net.Runtime.SkiffServerOptions> configure = o =>
            {
                timing?.Invoke(o);
                // A member joining keeps running as a learner until promoted, however long catching up takes (as
                // etcd and hashicorp/raft members do), and says so every 5 s; it exits only when refused outright.
                o.KeepJoining = true;
                if (unsafeNoDedup) o.UnsafeNoSessionDedup = true;
            };

            using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
            if (parentPid is { } pid) _ = WatchParent(pid, stop);

            node = SkiffNode.Create(new SkiffOptions
            {
                DataDirectory = dir,
                Address = bind,
                Port = port,
                JoinEndpoints = join,
                AdvertiseAddress = advertise,
                // Founding is explicit: a member that lost its data dir and is restarted with its usual command
                // line must fail, not found a second cluster at its old address.
                NewCluster = newCluster,
                Tls = readTls(),
                LoggerFactory = loggerFactory,
                ConfigureServer = configure,
                // serve owns its process, so it may set this process-wide knob (see SkiffOptions.MinThreadPoolThreads).
                MinThreadPoolThreads = 64,
                MaxValueBytes = maxValueBytes ?? KeyRules.DefaultMaxValueBytes,
                StateMachineMemoryBytes = memoryBytes,
                TokenTtl = TimeSpan.FromSeconds(tokenTtlSeconds ?? 300),
            });
            log.LogInformation("node {Id} starting at {Bind}:{Port} (reached at {Advertised}), data in {Dir}{Join}; state machine memory {Mib} MiB",
                node.Id, bind, port, node.AdvertisedAddress, Path.GetFullPath(dir), join.Count > 0 ? $", joining through {string.Join(",", join)}" : "",
                memoryBytes >> 20);
            await node.StartAsync(stop.Token);
            log.LogInformation("node {Id} serving at {Bind}:{Port} (reached at {Advertised})", node.Id, bind, port, node.AdvertisedAddress);
            if (faultAfterMs is { } after)
            {
                var target = node;
                _ = Task.Delay(after, stop.Token).ContinueWith(_ => target.InjectFatal(
                    new SkiffException(ErrorKind.StorageError, "injected fault (--fault-after-ms)")), TaskContinuationOptions.OnlyOnRanToCompletion);
            }

            // Membership is logged as it changes (joins, removals), from what the node itself knows.
            var lastMembers = "";
            while (!stop.IsCancellationRequested && !node.Stopped.IsCompleted)
            {
                var members = await node.GetMembersAsync(CancellationToken.None);
                var text = string.Join(", ", members.Select(m => $"{m.Endpoint} ({m.Id.ToString()[..8]})"));
                if (text != lastMembers)
                {
                    log.LogInformation("members ({Count}): {Members}", members.Count, text);
                    lastMembers = text;
                }
                try { await Task.WhenAny(node.Stopped, Task.Delay(250, stop.Token)); }
                catch (OperationCanceledException) { }
            }
            if (node.Stopped.IsCompleted && await node.Stopped is { } fatal)
            {
                // The node stopped itself (fail-stop): its port is closed, so the process must not look healthy.
                log.LogCritical("node {Id} stopped itself: {Cause}", node.Id, fatal.Message);
                return Exit.FailStop;
            }
            log.LogInformation("stopping");
            await node.ShutdownAsync();
            log.LogInformation("stopped cleanly");
            return Exit.Ok;
        }
        catch (CliException e)
        {
            Console.Error.WriteLine($"skiff: {e.Message}");
            return e.Code;
        }
        catch (SkiffException e)
        {
            Console.Error.WriteLine($"skiff: cannot serve: {Commands.Describe(e)}");
            return Exit.Of(e.Kind) is var code && code == Exit.Internal ? Exit.ServeFailed : code;
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            log.LogInformation("interrupted while starting");
            return Exit.Ok;
        }
        finally
        {
            if (node is not null) await node.DisposeAsync();
        }
    }

    /// <summary>The members of <c>--join</c>: <c>HOST[:PORT]</c> each, by IP address or host name (the port defaults
    /// to this node's).</summary>
    internal static List<string> JoinList(string? text, int port)
    {
        var join = new List<string>();
        foreach (var part in (text ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!Addresses.TryParseMember(part, port, out var endpoint, out var why))
                throw new CliException(Exit.Usage, $"--join '{part}' is not a HOST[:PORT] address: {why}");
            join.Add(endpoint);
        }
        return join;
    }

    /// <summary>Stops the node when the parent process is gone, so a demo killed with SIGKILL leaves no node behind.</summary>
    private static async Task WatchParent(int pid, CancellationTokenSource stop)
    {
        while (!stop.IsCancellationRequested)
        {
            try
            {
                using var parent = Process.GetProcessById(pid);
                if (parent.HasExited) break;
            }
            catch (ArgumentException)
            {
                break; // no such process
            }
            try { await Task.Delay(300, stop.Token); }
            catch (OperationCanceledException) { return; }
        }
        await stop.CancelAsync();
    }

    /// <summary>One line per log event: time, level, message.</summary>
    private sealed class LineLoggerProvider(LogLevel minimum) : ILoggerProvider
    {
        private static readonly Lock Gate = new();

        public ILogger CreateLogger(string categoryName) => new LineLogger(minimum);

        public void Dispose() { }

        private sealed class LineLogger(LogLevel minimum) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => logLevel >= minimum;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            {
                if (!IsEnabled(logLevel)) return;
                var level = logLevel switch
                {
                    LogLevel.Warning => "warn",
                    LogLevel.Error => "error",
                    LogLevel.Critical => "fatal",
                    LogLevel.Trace or LogLevel.Debug => "trace",
                    _ => "info",
                };
                var line = $"{DateTime.Now:HH:mm:ss.fff} {level} {formatter(state, exception)}";
                if (exception is not null) line += $" ({exception.GetType().Name}: {exception.Message.ReplaceLineEndings(" ")})";
                lock (Gate)
                {
                    Console.Out.WriteLine(line);
                    Console.Out.Flush();
                }
            }
        }
    }
}
