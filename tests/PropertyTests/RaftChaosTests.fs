/// Randomised runs of a small cluster under message loss, reordering, partitions, restarts, transfers and
/// membership changes, checking Raft's safety properties and eventual progress. A quick guard for the reducer;
/// the simulator (branch `sim`) does this thoroughly.
module Skiff.PropertyTests.RaftChaosTests

open System
open Expecto
open Skiff.Core
open Skiff.PropertyTests.RaftHarness

let private n1, n2, n3, n4 = nid 1, nid 2, nid 3, nid 4

let private chaosOptions =
    { opts with SnapshotThreshold = 20L; CompactionTail = 5L; WindowSize = 16; MaxEntriesPerAppend = 4; MaxInflight = 3 }

/// Runs one randomised history and returns a list of violations (empty when all is well).
let run (chaosOptions: Options) (seed: int) (steps: int) : string list =
    let rng = Random seed
    let c = Cluster([ n1; n2; n3 ], chaosOptions)
    c.Add(Start.fresh n4 chaosOptions 4444UL Configuration.Empty)
    let all = [ n1; n2; n3; n4 ]
    let pick () = all[rng.Next all.Length]
    let mutable request = 0L
    // For each read: the highest index any node knew committed when the read was issued. ReadIndex must answer
    // with an index at least that high, or a read could miss a write that completed before it started.
    let readFloor = Collections.Generic.Dictionary<RequestId, LogIndex>()
    let next () =
        request <- request + 1L
        request
    for _ in 1..steps do
        let roll = rng.NextDouble()
        let leader = c.Leader
        if roll < 0.45 then
            c.Step(pick (), Event.Tick) |> ignore
        elif roll < 0.70 then
            let target = leader |> Option.defaultWith pick
            c.Step(target, Event.Propose(next (), BitConverter.GetBytes request)) |> ignore
        elif roll < 0.75 then
            let target = leader |> Option.defaultWith pick
            let id = next ()
            readFloor[id] <- all |> List.map (fun n -> Raft.commitIndex (c.State n)) |> List.max
            c.Step(target, Event.Read id) |> ignore
        elif roll < 0.77 then
            c.Isolate(pick ())
        elif roll < 0.80 then
            for id in all do
                c.Heal id
        elif roll < 0.805 then
            c.Restart(pick (), chaosOptions, uint64 (rng.Next()))
        elif roll < 0.81 then
            leader |> Option.iter (fun l -> c.Step(l, Event.TransferLeadership(next (), pick ())) |> ignore)
        elif roll < 0.82 then
            let change = if rng.Next 2 = 0 then ConfigChange.AddServer(n4, "n4") else ConfigChange.RemoveServer n4
            leader |> Option.iter (fun l -> c.Step(l, Event.ChangeConfig(next (), change)) |> ignore)
        c.DeliverRandom(rng, 6, 0.05)
    // Heal everything and let the cluster settle: it must make progress and converge.
    for id in all do
        c.Heal id
    for _ in 1..300 do
        c.TickAll()
    let finalLeader = c.Leader
    let violations = Collections.Generic.List<string>()
    // Election safety: at most one leader per term.
    let leadersByTerm =
        all
        |> List.collect (fun id ->
            (c.Node id).Effects
            |> Seq.choose (function
                | Effect.RoleChanged(Role.Leader, t, _) -> Some(t, id)
                | _ -> None)
            |> List.ofSeq)
        |> List.distinct
        |> List.groupBy fst
    for term, ls in leadersByTerm do
        if ls.Length > 1 then
            violations.Add(sprintf "term %d has leaders %A" term (List.map snd ls))
    // State machine safety: nodes never apply different entries at the same index; each applies in order.
    let applied = all |> List.map (fun id -> id, List.ofSeq (c.Node id).Applied)
    for id, entries in applied do
        entries
        |> List.pairwise
        |> List.iter (fun (a, b) ->
            if b.Index <= a.Index then
                violations.Add(sprintf "%A applied %d after %d" id b.Index a.Index))
    let byIndex = Collections.Generic.Dictionary<LogIndex, Term * NodeId>()
    for id, entries in applied do
        for e in entries do
            match byIndex.TryGetValue e.Index with
            | true, (t, other) when t <> e.Term -> violations.Add(sprintf "index %d: term %d on %A, %d on %A" e.Index t other e.Term id)
            | true, _ -> ()
            | _ -> byIndex[e.Index] <- (e.Term, id)
    // Linearizable reads.
    for id in all do
        for e in (c.Node id).Effects do
            match e with
            | Effect.ReadReady(ids, index) ->
                for r in ids do
                    match readFloor.TryGetValue r with
                    | true, floor when index < floor -> violations.Add(sprintf "read %d ready at %d < committed %d" r index floor)
                    | _ -> ()
            | _ -> ()
    // Progress: a leader exists and every member has applied what it committed.
    match finalLeader with
    | None -> violations.Add "no leader after healing"
    | Some l ->
        let commit = Raft.commitIndex (c.State l)
        let members = (Raft.configuration (c.State l)).Members |> Map.keys |> List.ofSeq
        for id in members do
            let s = c.State id
            if Raft.appliedIndex s < commit then
                violations.Add(
                    sprintf
                        "%A applied %d < leader commit %d (role %A, last %d)"
                        id
                        (Raft.appliedIndex s)
                        commit
                        (Raft.role s)
                        (Raft.lastIndex s)
                )
    if Environment.GetEnvironmentVariable "SKIFF_CHAOS_STATS" = "1" then
        let count f = all |> List.sumBy (fun id -> (c.Node id).Effects |> Seq.filter f |> Seq.length)
        printfn
            "seed %d: leader %A term %d commit %d; snapshots %d installs %d loads %d completed %d readready %d rejects %d members %d"
            seed
            finalLeader
            (finalLeader |> Option.map (fun l -> Raft.term (c.State l)) |> Option.defaultValue 0L)
            (finalLeader |> Option.map (fun l -> Raft.commitIndex (c.State l)) |> Option.defaultValue 0L)
            (count (function
                | Effect.SendSnapshot _ -> true
                | _ -> false))
            (count (function
                | Effect.InstallSnapshot _ -> true
                | _ -> false))
            (count (function
                | Effect.LoadEntries _ -> true
                | _ -> false))
            (count (function
                | Effect.Completed _ -> true
                | _ -> false))
            (count (function
                | Effect.ReadReady _ -> true
                | _ -> false))
            (count (function
                | Effect.Reject _ -> true
                | _ -> false))
            (finalLeader |> Option.map (fun l -> (Raft.configuration (c.State l)).Members.Count) |> Option.defaultValue 0)
    List.ofSeq violations

let tests =
    testList
        "Raft.Chaos"
        [ for seed in 1..25 do
              test (sprintf "random history %d keeps Raft's safety properties and converges" seed) {
                  let violations = run chaosOptions seed 3000
                  Expect.isEmpty violations (sprintf "no violations: %A" (List.truncate 5 violations))
              }
          for seed in 1..5 do
              test (sprintf "random history %d without Pre-Vote and CheckQuorum" seed) {
                  let violations = run { chaosOptions with PreVote = false; CheckQuorum = false } (100 + seed) 3000
                  Expect.isEmpty violations (sprintf "no violations: %A" (List.truncate 5 violations))
              } ]
