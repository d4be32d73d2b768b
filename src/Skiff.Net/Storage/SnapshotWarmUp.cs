using System.Diagnostics.Metrics;
using Microsoft.FSharp.Core;
using Skiff.Core;
using Skiff.Net.Storage.Ports;

namespace Skiff.Net.Storage;

/// <summary>
/// Runs the snapshot path of <see cref="KvStateMachine"/> once, on a small scratch store in the temporary directory
/// and on a background thread, so that a node's first snapshot does not compile it while applying waits.
/// <para>Why: a snapshot stops applying only while it starts and finishes (the checkpoint itself runs beside
/// applying), 0.3–1.6 ms once the code is compiled. The first one after the process starts took 8–12 ms, and 18–39
/// ms on a loaded machine: the JIT compiling FASTER's checkpoint path and ours on the applying thread (issue 16's
/// bound is 10 ms). Compiled code is shared by every store in the process, so this runs once per process.</para>
/// <para>It touches nothing of the node's: its own directory (deleted after, and by a later run if the process died
/// first), its own store. A failure (no temporary directory, a full disk) only means the first snapshot compiles
/// the path itself, as it did before.</para>
/// </summary>
internal static class SnapshotWarmUp
{
    private const string Prefix = "skiff-snapshot-warmup-";
    private static readonly object Gate = new();
    private static Task<bool>? _started;

    /// <summary>The warm-up started in this process, if any (for tests).</summary>
    internal static Task<bool>? Current { get { lock (Gate) return _started; } }

    /// <summary>Starts the warm-up on a background thread unless it has been started in this process.</summary>
    /// <returns>Completes when it is done (true) or has failed (false); never faults.</returns>
    public static Task<bool> StartOnce()
    {
        lock (Gate)
        {
            if (_started is { } started) return started;
            var done = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
            var thread = new Thread(() =>
            {
                try
                {
                    Run(Path.Combine(Path.GetTempPath(), Prefix + Environment.ProcessId + "-" + Guid.NewGuid().ToString("N")[..8]));
                    done.SetResult(true);
                }
                catch (Exception) // a warm-up that fails costs the first snapshot its compilation, nothing more
                {
                    done.SetResult(false);
                }
            })
            { IsBackground = true, Name = "skiff-snapshot-warmup" };
            thread.Start();
            _started = done.Task;
            return done.Task;
        }
    }

    /// <summary>Opens a scratch store in <paramref name="dir"/>, applies what a node applies (a session, writes in
    /// it, a delete, a compare-and-swap), takes a snapshot through the snapshot port as the applier does, with writes
    /// arriving during its checkpoint (they go aside and are drained after), then deletes the directory.</summary>
    /// <param name="dir">A directory of its own, created and deleted here.</param>
    internal static void Run(string dir)
    {
        DeleteLeftovers(Path.GetDirectoryName(dir)!);
        try
        {
            using var kv = KvStateMachine.Open(Path.Combine(dir, "kv"), ScratchOptions);
            using var snapshots = new CheckpointSnapshotStore(kv, Path.Combine(dir, "snapmeta"), Pauses);
            long index = 0;
            // Many sessions, each with a write: a snapshot writes every session changed since the last one, and code
            // called that many times here is compiled again, optimised, before a node's first snapshot needs it. With
            // one session, a node's first snapshot (64 clients' sessions) spent 2-6 ms encoding them with code not yet
            // optimised, on the applying thread.
            var sessions = new long[WarmUpSessions];
            for (var i = 0; i < sessions.Length; i++)
            {
                sessions[i] = Apply(kv, ++index, LogCommand.NewOpenSession(1, 60_000, ""));
                Apply(kv, ++index, LogCommand.NewInSession(new SessionStamp(sessions[i], 1, 1, 1), Command.NewInsert($"warm/s{i}", [1])));
            }
            var session = sessions[0];
            var sequence = 1L;
            void Write(Command command) =>
                Apply(kv, ++index, LogCommand.NewInSession(new SessionStamp(session, ++sequence, sequence, 1), command));
            Write(Command.NewInsert("warm/a", [1]));
            Write(Command.NewInsert("warm/b", [2]));
            Write(Command.NewRemove("warm/b"));
            Write(Command.NewCompareAndSwap("warm/a", FSharpOption<byte[]>.Some([1]), FSharpOption<byte[]>.Some([3])));
            using var ready = new ManualResetEventSlim();
            snapshots.Begin(1, Configuration.Empty, ready.Set);
            Write(Command.NewInsert("warm/c", [4])); // kept aside while the checkpoint is taken
            ready.Wait();
            snapshots.Finish();
            Write(Command.NewInsert("warm/d", [5])); // drains what was kept aside
            kv.Get("warm/c");
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    /// <summary>More than the 30 calls after which the runtime compiles a method again, optimised.</summary>
    private const int WarmUpSessions = 64;

    /// <summary>The warm-up's snapshot pauses: recorded as a node's are, but not among them.</summary>
    private static readonly Meter WarmUpMeter = new("Skiff.SnapshotWarmUp");

    private static readonly (Histogram<double>, Histogram<double>, Histogram<double>) Pauses =
        (WarmUpMeter.CreateHistogram<double>("skiff.warmup.snapshot_pause"), WarmUpMeter.CreateHistogram<double>("skiff.warmup.snapshot_pause_gc"),
         WarmUpMeter.CreateHistogram<double>("skiff.warmup.snapshot_pause_work"));

    private static long Apply(KvStateMachine kv, long index, LogCommand command) =>
        kv.Apply(index, 1, command, out _) is LogResult.SessionOpened opened ? opened.session : 0;

    /// <summary>The smallest store FASTER runs well with: what is compiled does not depend on the sizes.</summary>
    private static readonly KvOptions ScratchOptions = new()
    {
        IndexSizeBytes = 1L << 16,
        PageSizeBits = 16,
        MemorySizeBits = 18,
        SegmentSizeBits = 18,
        MinFreeDiskBytes = 1L << 20,
    };

    /// <summary>Scratch directories of processes that died during their warm-up: any older than an hour (a live
    /// warm-up takes well under a second).</summary>
    private static void DeleteLeftovers(string parent)
    {
        foreach (var old in Directory.EnumerateDirectories(parent, Prefix + "*"))
            try
            {
                if (DateTime.UtcNow - Directory.GetLastWriteTimeUtc(old) > TimeSpan.FromHours(1))
                    Directory.Delete(old, recursive: true);
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
    }
}
