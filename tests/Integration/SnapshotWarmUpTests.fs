/// The snapshot warm-up (Storage/SnapshotWarmUp.cs): a node's first snapshot must not compile the snapshot path on
/// the applying thread. Compiled code is per process, so the measurement runs in a fresh child process
/// (`Integration.dll --snapshot-jit-probe <dir> warm|cold`), which counts the methods the JIT compiles on its own
/// thread while the snapshot starts and finishes, with the warm-up and, to show the count sees it, without.
module Skiff.Integration.SnapshotWarmUpTests

open System
open System.Diagnostics
open System.IO
open System.Runtime
open System.Threading
open Expecto
open Skiff.Core
open Skiff.Net.Runtime
open Skiff.Net.Storage
open Skiff.Integration.StorageSupport

/// The child: opens a data directory as a node does (NodeStorageBinding, which starts the warm-up unless `cold`),
/// waits for the warm-up, applies a session and writes through the state machine port as the applier does, then
/// takes a snapshot through the snapshot port and prints what the JIT compiled on this thread meanwhile.
let runProbe (dir: string) (mode: string) : int =
    let options = SkiffServerOptions(DataDirectory = dir, WarmUpSnapshots = (mode = "warm"))
    use binding = new NodeStorageBinding(options)
    let warmed =
        match SnapshotWarmUp.Current with
        | null -> "none"
        | task -> if task.Wait(TimeSpan.FromMinutes 2.0) then string task.Result else "unfinished"
    let sm = binding.StateMachine
    let session =
        match sm.Apply(1L, 1L, LogCommand.OpenSession(1L, 60_000L, "")) with
        | LogResult.SessionOpened id, _ -> id
        | other, _ -> failwithf "opening a session gave %A" other
    for i in 2L .. 300L do
        let stamp = { Session = session; Sequence = i; Acknowledged = i; Time = 1L }
        sm.Apply(i, 1L, LogCommand.InSession(stamp, Command.Insert(sprintf "k/%d" (i % 50L), Array.create 100 (byte i))))
        |> ignore
    let snapshots = binding.Snapshots
    use ready = new ManualResetEventSlim()
    let count () = JitInfo.GetCompiledMethodCount(currentThread = true)
    let jitTime () = JitInfo.GetCompilationTime(currentThread = true)
    // A node has used its metrics long before its first snapshot (every write records its fsync's latency).
    RuntimeMetrics.SnapshotPause |> ignore
    let c0, t0, started = count (), jitTime (), Stopwatch.GetTimestamp()
    snapshots.Begin(1L, Configuration.Empty, Action ready.Set) |> ignore
    let c1, t1, began = count (), jitTime (), Stopwatch.GetElapsedTime started
    ready.Wait()
    let c2, t2, finishing = count (), jitTime (), Stopwatch.GetTimestamp()
    snapshots.Finish() |> ignore
    let c3, t3, finished = count (), jitTime (), Stopwatch.GetElapsedTime finishing
    printfn
        "PROBE warmup=%s methods=%d jit_ms=%.2f pause_ms=%.2f"
        warmed
        (c1 - c0 + c3 - c2)
        (t1 - t0 + t3 - t2).TotalMilliseconds
        (began + finished).TotalMilliseconds
    0

/// What the test checks of a probe (its whole line, with the JIT time and the pause, is printed).
type private Probe = { Warmup: string; Methods: int }

let private probe (mode: string) : Probe =
    use tmp = new TempDir "warmup-probe"
    let line = runChildProbe [ "--snapshot-jit-probe"; tmp.Sub "node"; mode ]
    printfn "snapshot warm-up, %s: %s" mode line
    { Warmup = probeField line "warmup"; Methods = int (probeField line "methods") }

let tests =
    testList
        "snapshot warm-up"
        [ testCase "a node's first snapshot compiles (next to) nothing on the applying thread once the warm-up has run"
          <| fun () ->
              let cold = probe "cold"
              let warm = probe "warm"
              Expect.equal cold.Warmup "none" "the cold probe must not warm up"
              Expect.equal warm.Warmup "True" "opening the data directory starts the warm-up, and it succeeds"
              // Without the warm-up the first snapshot compiles dozens of methods on the applying thread: the probe
              // sees them, so a warm-up that stopped working would fail the second expectation.
              Expect.isGreaterThan cold.Methods 20 "the first snapshot without the warm-up compiles its path"
              Expect.isLessThanOrEqual warm.Methods 2 "the first snapshot after the warm-up compiles (next to) nothing"

          testCase "the warm-up deletes its scratch store, and those of processes that died during theirs"
          <| fun () ->
              use tmp = new TempDir "warmup-scratch"
              let stale = tmp.Sub "skiff-snapshot-warmup-1-dead"
              let fresh = tmp.Sub "skiff-snapshot-warmup-2-live"
              for d in [ stale; fresh ] do
                  Directory.CreateDirectory(Path.Combine(d, "kv")) |> ignore
              Directory.SetLastWriteTimeUtc(stale, DateTime.UtcNow.AddHours -2.0)
              let scratch = tmp.Sub "skiff-snapshot-warmup-3-this"
              SnapshotWarmUp.Run scratch
              Expect.isFalse (Directory.Exists scratch) "its own scratch store is deleted"
              Expect.isFalse (Directory.Exists stale) "a scratch store over an hour old is deleted"
              Expect.isTrue (Directory.Exists fresh) "a recent one (another process warming up) is left alone" ]
