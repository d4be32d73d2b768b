/// The fault tests of the default run: proof that a cut cuts, then two one-minute fault runs.
module Skiff.Faults.FaultTests

open System
open System.Threading
open Expecto
open Skiff
open Skiff.Core
open Skiff.Simulation
open Skiff.Simulation.Linearizability
open Skiff.Net.Runtime
open Skiff.Faults.Cluster
open Skiff.Faults.Workload

/// The seed of a run: SKIFF_FAULTS_SEED replays one, otherwise a fresh one (printed by the run).
let seed (offset: int) =
    match Environment.GetEnvironmentVariable "SKIFF_FAULTS_SEED" with
    | null
    | "" -> Random.Shared.Next(1, 1_000_000) + offset
    | s -> int s

let private within ms (f: CancellationToken -> Threading.Tasks.Task<'a>) : Result<'a, string> =
    use cts = new CancellationTokenSource(ms: int)
    try
        Ok(f(cts.Token).GetAwaiter().GetResult())
    with e ->
        Error e.Message

/// A partition must really stop traffic: with members 4 and 5 cut off from 1–3 (leader among 1–3), a write through 5
/// cannot commit, the rules count dropped packets, 5 serves a stale read, and the checker flags that stale read when
/// it is recorded as if it were linearizable; after healing, 5 catches up.
let partitionCuts =
    test "a partition cuts: the minority cannot commit, the checker catches a stale read, healing restores it" {
        if not (Netns.canCut ()) then
            skiptestf "no network cutting here (%A): the partition proof needs root and a network namespace" Netns.mode.Value
        let cluster = Run.startCluster "partition-proof" None []
        try
            let m = cluster.Members
            let leader = Cluster.leader (List.ofArray m) |> Option.map (fun (l, _) -> l.Slot) |> Option.defaultValue 1
            // The minority: two members that are not the leader.
            let minority =
                [ for s in 5..-1..1 do
                      if s <> leader then
                          s ]
                |> List.take 2
            let majority =
                [ for s in 1..5 do
                      if not (List.contains s minority) then
                          s ]
            use viaLeader = new SkiffGrpcClient([ m[leader - 1].Address ])
            use viaMinority = new SkiffGrpcClient([ m[minority.Head - 1].Address ])
            let t0 = now ()
            within 5000 (fun ct -> viaLeader.InsertAsync("k", bytes "before", ct)) |> Result.defaultWith failtest |> ignore
            let t1 = now ()
            // Wait until the minority member has applied "before" (a stale read there sees it).
            waitFor 5000 (fun () ->
                match within 1000 (fun ct -> viaMinority.GetAsync("k", ReadConsistency.Stale, ct)) with
                | Ok v when not (isNull v) && text v = "before" -> Some()
                | _ -> None)
            |> Option.defaultWith (fun () -> failtest "member did not apply the first write")
            Netns.setCuts
                [ for a in minority do
                      for b in majority do
                          yield m[a - 1].Uid, m[b - 1].Uid, m[b - 1].Ip
                          yield m[b - 1].Uid, m[a - 1].Uid, m[a - 1].Ip ]
            cluster.Timeline.Add(sprintf "cut %A from %A" minority majority)
            Thread.Sleep 1000
            let t2 = now ()
            within 5000 (fun ct -> viaLeader.InsertAsync("k", bytes "after", ct))
            |> Result.defaultWith (fun e -> failtestf "the majority could not commit during the partition: %s" e)
            |> ignore
            let t3 = now ()
            let minorityWrite = within 2000 (fun ct -> viaMinority.InsertAsync("m", bytes "minority", ct))
            Expect.isError minorityWrite (sprintf "a write through minority member %d must not commit" minority.Head)
            let minorityRead = within 2000 (fun ct -> viaMinority.GetAsync("k", ReadConsistency.Linearizable, ct))
            Expect.isError minorityRead "a linearizable read through the minority must not be served"
            let t4 = now ()
            let stale = within 2000 (fun ct -> viaMinority.GetAsync("k", ReadConsistency.Stale, ct)) |> Result.defaultWith failtest
            let t5 = now ()
            Expect.equal (text stale) "before" "the cut-off member still holds the old value"
            let dropped = Netns.droppedPackets ()
            Expect.isGreaterThan dropped 0L "the cut rules dropped packets"
            printfn
                "partition proof: minority %A, majority %A (leader %d): majority committed, minority write failed (%s), %d packets dropped"
                minority
                majority
                leader
                (match minorityWrite with
                 | Error e -> e
                 | Ok _ -> "")
                dropped
            // The stale read, recorded as if it were a linearizable read, must be caught by the checker.
            let history =
                [ { Client = 1
                    Invoked = t0
                    Action = Action.Write(Command.Insert("k", bytes "before"))
                    Completion = Completion.Returned(t1, Output.Result CommandResult.Done) }
                  { Client = 1
                    Invoked = t2
                    Action = Action.Write(Command.Insert("k", bytes "after"))
                    Completion = Completion.Returned(t3, Output.Result CommandResult.Done) }
                  { Client = 2; Invoked = t4; Action = Action.Get "k"; Completion = Completion.Returned(t5, Output.Value(Some stale)) } ]
            match check history with
            | NotLinearizable("k", _) -> ()
            | other -> failtestf "the checker did not flag the stale read: %s" (Linearizability.describe other)
            // Heal: the minority catches up.
            Netns.setCuts []
            let caughtUp =
                waitFor 15_000 (fun () ->
                    match within 1000 (fun ct -> viaMinority.GetAsync("k", ReadConsistency.Linearizable, ct)) with
                    | Ok v when not (isNull v) && text v = "after" -> Some()
                    | _ -> None)
            Expect.isSome caughtUp "after healing, the minority serves the majority's write"
            for mm in m do
                Expect.isEmpty mm.Unexpected "no member exited by itself"
        finally
            for mm in cluster.Members do
                mm.Stop()
            Run.resetFirewall ()
            cluster.Dispose()
    }

/// A fault run as a test: fails with the run's report if it found anything.
let faultRun (name: string) (seedOffset: int) (duration: TimeSpan) (profile: Nemesis.Profile) =
    test (sprintf "%s: %.0f s of faults (%s)" name duration.TotalSeconds profile.Name) {
        let verdict =
            Run.execute
                { Name = name
                  Seed = seed seedOffset
                  Duration = duration
                  Profile = profile
                  Workload = Workload.defaults
                  ServeFlags = [] }
        if not verdict.Passed then
            failtest verdict.Report
    }

let tests =
    testSequenced
    <| testList
        "Faults"
        [ partitionCuts
          faultRun "partitions" 0 (TimeSpan.FromSeconds 60.0) Nemesis.partitions
          faultRun "crashes" 1 (TimeSpan.FromSeconds 60.0) Nemesis.crashes ]

/// A run that must FAIL: the harness is shown to catch a real bug. Passes if the run reports one of `expected`.
let mustCatch
    (name: string)
    (seedOffset: int)
    (duration: TimeSpan)
    (profile: Nemesis.Profile)
    (workload: Workload.Options)
    (serveFlags: string list)
    (expected: string list)
    =
    test (sprintf "the harness catches %s" name) {
        let verdict =
            Run.execute
                { Name = "catch-" + name.Replace(' ', '-')
                  Seed = seed seedOffset
                  Duration = duration
                  Profile = profile
                  Workload = workload
                  ServeFlags = serveFlags }
        if not (expected |> List.exists verdict.Report.Contains) then
            failtestf "expected the run to report one of %A, but it did not:\n%s" expected verdict.Report
    }

/// `--catches`: the harness against known bugs. Stale reads: clients read without ReadIndex (each member's own state)
/// during partitions and pauses, recorded as linearizable reads. Duplicated writes: leader kills on a server without
/// the session table (the members run with `serve --unsafe-no-dedup`, a hidden test hook that applies a resent write
/// again).
let catches =
    testSequenced
    <| testList
        "Faults catch bugs"
        [ mustCatch
              "stale reads"
              3
              (TimeSpan.FromSeconds 40.0)
              { Nemesis.partitions with Kinds = [ Nemesis.MajorityMinority; Nemesis.IsolateLeader; Nemesis.PauseLeader ] }
              { Workload.defaults with StaleReads = true }
              []
              [ "NOT LINEARIZABLE" ]
          mustCatch
              "duplicated writes"
              4
              (TimeSpan.FromSeconds 60.0)
              { Nemesis.crashes with Kinds = [ Nemesis.KillLeader ] }
              Workload.defaults
              [ "--unsafe-no-dedup" ]
              [ "DUPLICATE WRITE"; "NOT LINEARIZABLE" ] ]

/// `--minutes N [--profile partitions|crashes|everything]`: one long run (of every fault by default).
let longRun (minutes: float) (profile: Nemesis.Profile) =
    testSequenced <| testList "Faults" [ faultRun "long" 2 (TimeSpan.FromMinutes minutes) profile ]
