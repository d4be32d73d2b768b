/// Liveness under partial failure (src/Skiff.Core/Liveness.fs): random fault schedules whose last faults stay in
/// force for a long tail, so that the simulator's check (a leader commits within Settings.PartialLivenessTicks
/// while a majority of voters is connected both ways) gets to judge partitions, one-way cuts and crashes that
/// never heal, not only the run after everything healed. The check is off in Simulator.defaultSettings (it needs
/// CheckQuorum, and the plain reducer's tests use those settings), so these tests are where it runs.
///
/// Soak: SKIFF_PARTIAL_SOAK=n runs n schedules per size instead of the default count (SKIFF_SEED fixes the seed,
/// SKIFF_PLAIN=1 uses the reducer without Pre-Vote, CheckQuorum kept). A failure prints the shrunk schedule (to
/// run with Settings.TailTicks = `tail`) and the end of its trace.
module Skiff.PropertyTests.PartialLivenessTests

open System
open System.Diagnostics
open Expecto
open Skiff.Core
open Skiff.Simulation
open Skiff.Simulation.Simulator
open Skiff.PropertyTests.SimulationSupport

/// Ticks the last faults stay in force (longer than the bound, so the check applies on every schedule whose last
/// faults leave a healthy majority).
let tail = 260

/// The bound: a committing leader within 200 ticks (the longest wait seen in 12,000 soaked schedules: 59 ticks with
/// Pre-Vote, 156 without; the election timeout is 10-20 ticks).
let bound = 200

let private settings = { Simulator.defaultSettings with TailTicks = tail; PartialLivenessTicks = bound }

let private seed () =
    match Environment.GetEnvironmentVariable "SKIFF_SEED" with
    | null
    | "" -> uint64 (Random.Shared.NextInt64())
    | s -> UInt64.Parse s

let private count (defaultCount: int) =
    match Environment.GetEnvironmentVariable "SKIFF_PARTIAL_SOAK" with
    | null
    | "" -> defaultCount
    | n -> int n

/// Greedy shrink keeping a violation of the same property.
let private shrink (reducer: Reducer<State>) (schedule: Schedule) (property: string) =
    schedule
    |> Schedules.shrinkWhile (fun s ->
        match (Simulator.run reducer settings s).Violation with
        | Some w -> w.Property = property
        | None -> false)

let private schedules (name: string) (reducer: Reducer<State>) (nodes: int) (steps: int) (n: int) =
    testCase name
    <| fun () ->
        let seed = seed ()
        let n = count n
        let watch = Stopwatch.StartNew()
        let mutable worst = 0
        let mutable checkedTicks = 0L
        let mutable judged = 0
        let failures = ResizeArray()
        for s in Schedules.sample steps seed n do
            if failures.Count = 0 then
                let s = { s with Nodes = nodes }
                let r = Simulator.run reducer settings s
                worst <- max worst r.Stats.PartialLivenessWorst
                checkedTicks <- checkedTicks + r.Stats.PartialLivenessChecked
                if r.Stats.PartialLivenessChecked > 0L then
                    judged <- judged + 1
                match r.Violation with
                | Some v -> failures.Add(s, v)
                | None -> ()
        printfn
            "%s: %d schedules in %.1f s (SKIFF_SEED=%d), %d judged under partial failure (%d ticks), longest wait for a committing leader %d ticks"
            name
            n
            watch.Elapsed.TotalSeconds
            seed
            judged
            checkedTicks
            worst
        if failures.Count > 0 then
            let s, v = failures[0]
            let shrunk = shrink reducer s v.Property
            let r = Simulator.run reducer { settings with Trace = true } shrunk
            let trace = r.Trace |> List.skip (max 0 (r.Trace.Length - 80)) |> String.concat "\n"
            failtestf
                "%s (SKIFF_SEED=%d)\n%s\nshrunk (run with TailTicks = %d): %s\n%s\nlast lines of its trace:\n%s"
                name
                seed
                (string v)
                tail
                (Schedule.format shrunk)
                (string r.Violation)
                trace

/// The reducer with CheckQuorum but without Pre-Vote: the property must hold there too.
let private checkQuorumOnly = Simulator.raft { Simulator.simulationOptions with PreVote = false }

let private plainOrDefault =
    if Environment.GetEnvironmentVariable "SKIFF_PLAIN" = "1" then
        checkQuorumOnly
    else
        Simulator.raft Simulator.simulationOptions

/// A hand-written case: leader n1 hears no one but n2 hears it (n2 -> n1 cut), n1 and n3 are cut both ways, and the
/// cut never heals. n2 and n3 are a healthy majority; CheckQuorum deposes n1 and one of them leads.
let private oneWayCase =
    testCase "a leader that can send but not hear is replaced within the bound"
    <| fun () ->
        for text in
            [ "seed=1 nodes=3 [40 oneway:1>0; 0 oneway:0>2; 0 oneway:2>0]"
              "seed=2 nodes=5 [40 oneway:1>0; 0 oneway:2>0; 0 oneway:3>0; 0 oneway:4>0]" ] do
            let s = Schedule.parse text
            let r = Simulator.run (Simulator.raft Simulator.simulationOptions) settings s
            Expect.isNone r.Violation (sprintf "%s: %A" text r.Violation)
            Expect.isGreaterThan r.Stats.PartialLivenessChecked 100L "the check applied on the tail"

/// The check has teeth: without CheckQuorum a leader that can send but not hear is never replaced (etcd behaves
/// the same, which is why the property is stated with CheckQuorum).
let private teeth =
    testCase "the check catches a reducer without CheckQuorum"
    <| fun () ->
        let noQuorumCheck = Simulator.raft { Simulator.simulationOptions with CheckQuorum = false }
        let real = Simulator.raft Simulator.simulationOptions
        // n1 hears no one from tick 40 on; on the seeds where it leads by then, it leads for ever without
        // CheckQuorum.
        let runs =
            [ for seed in 1..20 ->
                  let s = Schedule.parse (sprintf "seed=%d nodes=3 [40 oneway:1>0; 0 oneway:2>0]" seed)
                  (Simulator.run noQuorumCheck settings s).Violation, (Simulator.run real settings s).Violation ]
        let caught =
            runs
            |> List.filter (fun (v, _) ->
                match v with
                | Some { Kind = ViolationKind.LivenessTimeout(LivenessProperty.PartialFailure, _, _) } -> true
                | _ -> false)
        Expect.isNonEmpty caught "caught on some seed"
        Expect.isTrue (runs |> List.forall (snd >> Option.isNone)) (sprintf "the real reducer passes: %A" (runs |> List.choose snd))

/// Finding 5 (docs/simulation-findings.md): elections after healing were slow when stale-log nodes were a
/// majority: each of their campaigns moved the up-to-date voters to the new term and restarted their election
/// timers, so the electable nodes rarely campaigned first. Bounds well under the 100+ ticks the finding measured.
let private finding5 =
    testCase "finding 5: a stale-log majority does not hold back the up-to-date nodes' elections"
    <| fun () ->
        let cases =
            [ Simulator.raft Simulator.simulationOptions,
              "seed=4292461891479662373 nodes=3 [4 crash:1; 23 dup:21; 12 isolate:1; 6 restart:2; 3 disk:0; 2 partition:1,2; 2 remove:0; 4 delay:4; 7 partition:0; 40 remove:0]"
              Simulator.raft Simulator.simulationOptions,
              "seed=9000603822582088797 nodes=5 [5 add; 23 heal; 10 partition:2,3; 9 crash:4; 16 heal; 33 heal; 8 delay:3; 9 heal; 9 remove:4; 2 remove:4; 31 add; 1 partition:2,3,4]" ]
        for reducer, text in cases do
            let r = Simulator.run reducer Simulator.defaultSettings (Schedule.parse text)
            printfn "finding 5: leader %d ticks after healing: %s" r.Stats.LeaderAfterHeal text
            Expect.isNone r.Violation text
            // Before the fix: 106 and 51 ticks (110 when the finding was written); now 47 and 21.
            Expect.isLessThanOrEqual r.Stats.LeaderAfterHeal 60 text

let tests =
    testList
        "simulation: liveness under partial failure"
        [ oneWayCase
          finding5
          teeth
          schedules "partial failure, 3 nodes" plainOrDefault 3 12 600
          schedules "partial failure, 5 nodes" plainOrDefault 5 12 600
          schedules "partial failure without Pre-Vote (CheckQuorum on), 3 nodes" checkQuorumOnly 3 12 300
          schedules "partial failure, long schedules, 3 nodes" plainOrDefault 3 40 150 ]
