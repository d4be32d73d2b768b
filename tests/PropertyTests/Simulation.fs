/// The simulation properties: random fault schedules against the real reducer (safety invariants after every step,
/// liveness after healing, linearizability of the client history), the broken variants that prove the properties
/// have teeth. The tools that replay a failure and soak are in SimulationTools.fs.
///
/// Replaying: every failure prints `dotnet fsi build.fsx replay '<schedule>'`, which replays exactly that schedule
/// with a trace. The random tests print their seed: `SKIFF_SEED=n` runs them again on the same schedules.
module Skiff.PropertyTests.Simulation

open System
open System.Diagnostics
open Expecto
open FsCheck
open FsCheck.FSharp
open Skiff.Core
open Skiff.Simulation
open Skiff.Simulation.Simulator
open Skiff.PropertyTests.SimulationSupport

/// The settings every simulation test uses.
let settings = Simulator.defaultSettings

/// The real reducer with simulation-friendly options.
let reducer = Simulator.raft Simulator.simulationOptions

/// Faults per schedule in the default run.
let maxSteps = 12

/// A failed run and the command that replays it with a trace.
let report (result: RunResult) =
    sprintf "%s\nreplay with: dotnet fsi build.fsx replay '%s'" (Simulator.describe result) (Schedule.format result.Schedule)

let private runOne (schedule: Schedule) = Simulator.run reducer settings schedule

/// FsCheck's seed: SKIFF_SEED if set, else fresh.
let fsCheckSeed () =
    match Environment.GetEnvironmentVariable "SKIFF_SEED" with
    | null
    | "" -> uint64 (Random.Shared.NextInt64())
    | s -> UInt64.Parse s

/// FsCheck's settings for `count` cases replayed from `seed` (see fsCheckSeed), quiet when they pass.
let seededConfig (count: int) (seed: uint64) =
    Config.QuickThrowOnFailure
        .WithMaxTest(count)
        .WithQuietOnSuccess(true)
        .WithReplay(Some { Rnd = Rnd(seed, 0x9E3779B97F4A7C15UL); Size = None })

/// The settings of the exactly-once simulations: clients open sessions and retry every write after every fault.
let sessionSettings = { settings with Sessions = true }

/// `count` random schedules of up to `steps` faults on clusters of `nodes`, shrinking any failure.
let private randomSchedulesIn (settings: Settings) (reducer: Reducer<State>) (name: string) (steps: int) (nodes: int) (count: int) =
    testCase name
    <| fun () ->
        let seed = fsCheckSeed ()
        let watch = Stopwatch.StartNew()
        let arb =
            Arb.fromGenShrink (
                Schedules.genSchedule steps |> Gen.map (fun s -> { s with Nodes = nodes; Steps = s.Steps }),
                Schedules.shrink
            )
        let mutable last = None
        let mutable total = []
        let property =
            Prop.forAll arb (fun schedule ->
                let result = Simulator.run reducer settings schedule
                total <- result.Stats :: total
                match result.Violation with
                | Some _ ->
                    last <- Some result
                    failwith (report result)
                | None -> ())
        try
            Check.One(seededConfig count seed, property)
            let sum f = total |> List.sumBy f
            printfn
                "%s: %d schedules in %.1f s (%.0f/s, SKIFF_SEED=%d): %d ops returned, %d timed out, %d crashes, %d snapshots installed, %d membership changes, leader after heal <= %d ticks, converged <= %d ticks, %d histories too hard to check"
                name
                count
                watch.Elapsed.TotalSeconds
                (float count / watch.Elapsed.TotalSeconds)
                seed
                (sum (fun s -> s.Completed))
                (sum (fun s -> s.TimedOut))
                (sum (fun s -> s.Crashes))
                (sum (fun s -> s.SnapshotsInstalled))
                (sum (fun s -> s.ConfigChanges))
                (total |> List.map (fun s -> s.LeaderAfterHeal) |> List.max)
                (total |> List.map (fun s -> s.ConvergedAfterHeal) |> List.max)
                (total |> List.filter (fun s -> s.Unchecked) |> List.length)
        with e ->
            let shrunk =
                match last with
                | Some r -> report r
                | None -> ""
            failtestf "%s failed (SKIFF_SEED=%d)\nshrunk to:\n%s\n\n%s" name seed shrunk e.Message

let private randomSchedulesWith = randomSchedulesIn settings
let private randomSchedules = randomSchedulesWith reducer

/// The reducer without Pre-Vote and CheckQuorum (both optional in Options).
let plainReducer = Simulator.raft { Simulator.simulationOptions with PreVote = false; CheckQuorum = false }

/// Runs schedules drawn from a fixed seed until the variant violates a property on a schedule that the real
/// reducer passes (so a known bug of the real reducer never counts as catching the variant); the number of
/// schedules tried and the variant's failing run, or None.
let findViolationIn (settings: Settings) (run: Settings -> Schedule -> RunResult) (seed: uint64) (budget: int) : (int * RunResult) option =
    let runOne s = Simulator.run reducer settings s
    Schedules.sample maxSteps seed budget
    |> Seq.mapi (fun i s -> i + 1, s)
    |> Seq.tryPick (fun (i, s) ->
        let r = run settings s
        match r.Violation with
        // Liveness failures are left to the main properties: a liveness bug of the real reducer strikes variants
        // at random (their runs diverge), which would prove nothing about the variant.
        | Some v when not v.IsLiveness && (runOne s).Violation.IsNone -> Some(i, r)
        | _ -> None)

/// `findViolationIn` with the default settings.
let findViolation run seed budget = findViolationIn settings run seed budget

/// The budget of schedules within which each broken variant must be caught.
let variantBudget = 1000

let private variantTests =
    variants Simulator.simulationOptions
    |> List.map (fun v ->
        testCase (sprintf "broken variant is caught: %s" v.Name)
        <| fun () ->
            match findViolation v.Run 20261126UL variantBudget with
            | Some(n, r) -> printfn "variant %-36s caught after %3d schedules: %s" v.Name n (string r.Violation.Value)
            | None -> failtestf "variant %s survived %d schedules" v.Name variantBudget)

/// Schedules that once exposed reducer bugs (docs/simulation-findings.md): each must now run clean. A reducer
/// change can make one of them miss its bug, which is why the random properties stay the main check.
let knownSchedules =
    [ "lost append never retransmitted (fixed)",
      "seed=6657205885649986441 nodes=3 [39 delay:5; 38 remove:0; 11 heal; 35 restart:0; 12 loss:8]"
      "self-removing leader deadlock", "seed=8484249247677838234 nodes=3 [8 remove:2; 35 remove:1; 0 partition:0,2]"
      "self-removing leader deadlock, 2", "seed=457560588692552006 nodes=3 [14 remove:2; 14 isolate:3; 0 remove:1]"
      "follower acknowledges entries not yet durable",
      "seed=1325808645824456204 nodes=5 [31 partition:1,3; 5 disk:4; 32 restart:0; 3 heal; 10 isolate:1; 9 heal; 20 crash:4]"
      "term before a retained log tail (interpreter)",
      "seed=7583193944569575695 nodes=3 [23 heal; 6 restart:0; 10 loss:25; 17 isolate:1; 12 restart:2; 37 crash:0; 0 crash:2]"
      "duplicated snapshot offer installed again",
      "seed=1879071196373808932 nodes=3 [27 oneway:0>0; 28 restart:1; 24 disk:4; 24 dup:18; 5 add]"
      "duplicated snapshot offer installed again, 2",
      "seed=1211128565561048433 nodes=5 [30 partition:0,2,3; 8 isolate:1; 31 disk:4; 20 heal]"
      "duplicated snapshot offer strands a follower",
      "seed=9079812377582878207 nodes=3 [10 heal; 22 partition:; 29 add; 18 isolate:2; 8 crash:2; 36 partition:1,2; 38 crash:1; 28 partition:1,2; 23 crash:0; 8 crash:0; 10 transfer:0; 0 restart:1; 17 heal; 29 delay:5; 3 loss:4; 33 crash:1; 7 restart:1; 7 heal; 1 heal; 9 restart:0; 32 partition:0,1; 34 transfer:2; 37 remove:0; 7 partition:1,2; 36 restart:1; 12 heal; 2 restart:0; 16 dup:14; 3 disk:4; 2 crash:1; 7 crash:0]"
      "slow election, stale-log majority (3 nodes)",
      "seed=4292461891479662373 nodes=3 [4 crash:1; 23 dup:21; 12 isolate:1; 6 restart:2; 3 disk:0; 2 partition:1,2; 2 remove:0; 4 delay:4; 7 partition:0; 40 remove:0]"
      "voter behind the configuration that added the candidate (finding 7)",
      "seed=4680132435724317508 nodes=3 [6 partition:2; 15 restart:0; 10 add; 28 remove:1; 32 disk:0; 2 remove:0; 30 oneway:1>1]"
      "slow election, stale-log majority (5 nodes)",
      "seed=9000603822582088797 nodes=5 [5 add; 23 heal; 10 partition:2,3; 9 crash:4; 16 heal; 33 heal; 8 delay:3; 9 heal; 9 remove:4; 2 remove:4; 31 add; 1 partition:2,3,4]"
      "learner renews a lost leader's lease (finding 9)",
      "seed=810422799524839495 nodes=3 [34 remove:2; 15 heal; 6 remove:1; 27 restart:1; 23 heal; 35 add; 5 crash:2; 9 dup:12; 10 partition:0,1; 7 restart:2]" ]

/// Known schedules for the reducer without Pre-Vote and CheckQuorum.
let knownPlainSchedules =
    [ "no Pre-Vote: removed node collects votes it cannot use",
      "seed=8144627191708321441 nodes=3 [2 heal; 28 delay:3; 6 remove:1; 1 restart:1; 1 disk:0; 2 partition:1,2; 6 dup:15; 4 oneway:1>1; 6 loss:13; 5 partition:0; 10 restart:2; 0 heal; 16 disk:3]"
      "no Pre-Vote: removed leader refused by the voter it needs (finding 8)",
      "seed=5343851847754639691 nodes=3 [35 oneway:1>1; 27 isolate:0; 10 remove:1; 10 heal; 4 add]"
      "no Pre-Vote: a stale voter carries a removed node's terms to the electable candidate (finding 10)",
      "seed=5072408118928407206 nodes=3 [17 isolate:0; 2 crash:0; 6 loss:2; 24 delay:5; 17 heal; 40 heal; 1 heal; 3 isolate:0; 7 dup:22; 4 add; 33 loss:24; 9 crash:0; 36 restart:2; 15 restart:1; 16 remove:2; 35 remove:1; 21 isolate:0; 16 restart:2; 10 transfer:0; 6 heal; 34 remove:2; 13 isolate:0; 4 add; 6 delay:5; 37 crash:0; 37 partition:1; 10 transfer:2; 16 delay:4; 25 crash:0; 1 crash:2; 16 remove:0; 34 restart:1; 6 delay:6; 8 delay:6; 25 heal]" ]

let private regressions =
    (knownSchedules |> List.map (fun (n, t) -> n, t, reducer))
    @ (knownPlainSchedules |> List.map (fun (n, t) -> n, t, plainReducer))
    |> List.map (fun (name, text, reducer) ->
        testCase (sprintf "known schedule: %s" name)
        <| fun () ->
            let r = Simulator.run reducer settings (Schedule.parse text)
            match r.Violation with
            | Some _ -> failtestf "%s" (report r)
            | None -> ())

let private determinism =
    testCase "same schedule, same run"
    <| fun () ->
        // Bit for bit: the full trace (every event and effect of every node) and the client history agree.
        for s in Schedules.sample maxSteps 7UL 5 do
            let traced = { settings with Trace = true }
            let a = Simulator.run reducer traced s
            let b = Simulator.run reducer traced s
            Expect.isGreaterThan a.Trace.Length 100 "the trace records the run"
            Expect.equal a.Trace b.Trace (Schedule.format s)
            Expect.equal a.History b.History (Schedule.format s)
            Expect.equal (a.Stats, a.Violation) (b.Stats, b.Violation) (Schedule.format s)

let private components =
    testList
        "simulator parts"
        [ testCase "KV model: put, delete, compare-and-swap"
          <| fun () ->
              let b (s: string) = Text.Encoding.ASCII.GetBytes s
              let s, r = KvModel.apply KvModel.empty (Command.CompareAndSwap("k", None, Some(b "1")))
              Expect.equal r (CommandResult.Swapped true) "absent matches None"
              let s, r = KvModel.apply s (Command.CompareAndSwap("k", Some(b "2"), Some(b "3")))
              Expect.equal r (CommandResult.Swapped false) "mismatch"
              Expect.equal (KvModel.get s "k") (Some(b "1")) "unchanged"
              let s, _ = KvModel.apply s (Command.CompareAndSwap("k", Some(b "1"), None))
              Expect.equal (KvModel.get s "k") None "swap to None deletes"
              let s, r = KvModel.apply s (Command.Insert("k", b "4"))
              Expect.equal r CommandResult.Done "put"
              let s, _ = KvModel.apply s (Command.Remove "k")
              Expect.isTrue (KvModel.same s KvModel.empty) "delete"
          testCase "log store: write truncates, compaction keeps the tail"
          <| fun () ->
              let e i t = { Index = i; Term = t; Payload = Payload.Noop }
              let log = LogStore()
              Expect.equal (log.Write [ e 1L 1L; e 2L 1L; e 3L 1L ]) (Ok()) "append"
              Expect.equal (log.Write [ e 2L 2L ]) (Ok()) "overwrite"
              Expect.equal log.LastIndex 2L "truncated"
              Expect.equal (log.TermAt 2L) (ValueSome 2L) "new term"
              Expect.isError (log.Write [ e 4L 2L ]) "gap refused"
              log.Compact(1L, 0L)
              Expect.equal (log.BaseIndex, log.BaseTerm, log.LastIndex) (1L, 1L, 2L) "compacted to 1"
              Expect.equal (log.Range(2L, 2L)) (Some [ e 2L 2L ]) "tail kept"
              Expect.equal (log.Range(1L, 2L)) None "compacted entries are gone"
          testCase "network: a partition drops, healing restores"
          <| fun () ->
              let net = Network(Prng 1UL)
              let a, b = Simulator.nodeId 0, Simulator.nodeId 1
              let env = { From = a; To = b; Message = Message.TimeoutNow 1L }
              net.Block(a, b)
              net.Send(0L, env, None)
              Expect.isNone (net.TryReceive 10L) "cut"
              net.HealAll()
              net.Send(10L, env, None)
              Expect.isSome (net.TryReceive 11L) "delivered" ]

let private scheduleText =
    testCase "schedules print and parse back"
    <| fun () ->
        for s in Schedules.sample maxSteps 11UL 50 do
            Expect.equal (Schedule.parse (Schedule.format s)) s "round trip"

let private quietCluster =
    testCase "a fault-free cluster elects a leader, serves clients and converges"
    <| fun () ->
        for nodes in [ 3; 5 ] do
            let r = runOne { Seed = 1UL; Nodes = nodes; Steps = [ { After = 100; Fault = Fault.Heal } ] }
            Expect.isNone r.Violation (report r)
            Expect.isGreaterThan r.Stats.Completed 20 (sprintf "clients got answers: %A" r.Stats)

/// Exactly-once writes: clients in sessions retry every write after every fault (lost replies, crashed or deposed
/// leaders, partitions), and each write must take effect once, with the history still linearizable; without the
/// state machine's session table the same clients apply writes twice, and the invariant catches it.
let private exactlyOnce =
    let retrying = randomSchedulesIn sessionSettings reducer
    [ retrying "sessions: retried writes apply once, 3 nodes" maxSteps 3 1000
      retrying "sessions: retried writes apply once, 5 nodes" maxSteps 5 1000
      retrying "sessions: retried writes apply once, long schedules, 3 nodes" 40 3 200
      // Sessions that expire while clients are busy: expiry is decided by log time, so every member must agree on
      // it (the invariants compare session tables at each index) and an expired session's retry is indeterminate.
      randomSchedulesIn
          { sessionSettings with SessionTimeout = 25; OpPercent = 10 }
          reducer
          "sessions: expiring sessions stay consistent, 3 nodes"
          maxSteps
          3
          500
      testCase "sessions: clients really retry and repeat (the tests exercise the dedup table)"
      <| fun () ->
          // A run with crashes and loss must see retries that the table answers; otherwise the properties above
          // would pass without testing anything.
          let repeated =
              Schedules.sample maxSteps 7UL 200
              |> Seq.sumBy (fun s ->
                  let r = Simulator.run reducer { sessionSettings with Trace = true } s
                  r.Trace |> List.filter (fun line -> line.Contains "sending request") |> List.length)
          Expect.isGreaterThan repeated 50 "writes were sent again after faults"
      testCase "broken variant is caught: no session table (a retried write applies twice)"
      <| fun () ->
          let broken settings schedule = Simulator.run reducer { settings with Dedup = false } schedule
          match findViolationIn sessionSettings broken 20261206UL variantBudget with
          | Some(n, r) -> printfn "variant no-dedup caught after %3d schedules: %s" n (string r.Violation.Value)
          | None -> failtestf "the variant without a session table survived %d schedules" variantBudget ]

/// Every simulation test.
let tests: Test =
    testList
        "simulation"
        [ components
          scheduleText
          determinism
          quietCluster
          yield! regressions
          randomSchedules "random schedules, 3 nodes" maxSteps 3 3000
          randomSchedules "random schedules, 5 nodes" maxSteps 5 3000
          randomSchedules "random long schedules, 3 nodes" 40 3 500
          randomSchedules "random long schedules, 5 nodes" 40 5 500
          randomSchedulesWith plainReducer "random schedules without Pre-Vote and CheckQuorum, 3 nodes" maxSteps 3 500
          randomSchedulesWith plainReducer "random schedules without Pre-Vote and CheckQuorum, 5 nodes" maxSteps 5 500
          yield! variantTests
          yield! exactlyOnce ]
