/// Generators, shrinkers and deliberately broken reducer variants for the simulation properties.
module Skiff.PropertyTests.SimulationSupport

open System
open FsCheck
open FsCheck.FSharp
open Skiff.Core
open Skiff.Simulation
open Skiff.Simulation.Simulator

// ---------------------------------------------------------------------------------------------------------------
// Generating schedules

let private genFault (nodes: int) : Gen<Fault> =
    let node = Gen.choose (0, nodes - 1)
    Gen.frequency
        [ 3, Gen.subListOf [ 0 .. nodes - 1 ] |> Gen.map Fault.Partition
          2, node |> Gen.map Fault.Isolate
          1, Gen.zip node node |> Gen.map Fault.OneWay
          4, Gen.constant Fault.Heal
          3, node |> Gen.map Fault.Crash
          3, node |> Gen.map Fault.Restart
          1, Gen.choose (0, 30) |> Gen.map Fault.Loss
          1, Gen.choose (0, 30) |> Gen.map Fault.Duplicate
          1, Gen.choose (1, 8) |> Gen.map Fault.Delay
          1, Gen.choose (0, 4) |> Gen.map Fault.SlowDisk
          1, Gen.constant Fault.AddNode
          1, node |> Gen.map Fault.RemoveNode
          1, node |> Gen.map Fault.Transfer ]

let private genStep (nodes: int) : Gen<ScheduleStep> =
    gen {
        let! after = Gen.frequency [ 3, Gen.choose (0, 10); 2, Gen.choose (10, 40) ]
        let! fault = genFault nodes
        return { After = after; Fault = fault }
    }

/// Schedules of up to `maxSteps` faults on 3- or 5-node clusters.
let genSchedule (maxSteps: int) : Gen<Schedule> =
    gen {
        let! nodes = Gen.elements [ 3; 5 ]
        let! hi = Gen.choose (0, Int32.MaxValue)
        let! lo = Gen.choose (0, Int32.MaxValue)
        let! count = Gen.choose (0, maxSteps)
        let! steps = Gen.listOfLength count (genStep nodes)
        return { Seed = (uint64 hi <<< 32) ||| uint64 lo; Nodes = nodes; Steps = steps }
    }

/// Shrinks a schedule: drop faults (halves first, then one at a time), then shorten delays. The seed and the
/// cluster size stay, so that the shrunk run is the same run with less going wrong.
let shrinkSchedule (s: Schedule) : Schedule seq =
    seq {
        let steps = Array.ofList s.Steps
        let n = steps.Length
        if n > 1 then
            yield { s with Steps = List.ofArray steps[.. n / 2 - 1] }
            yield { s with Steps = List.ofArray steps[n / 2 ..] }
        for i in 0 .. n - 1 do
            yield { s with Steps = List.ofArray (Array.removeAt i steps) }
        for i in 0 .. n - 1 do
            if steps[i].After > 0 then
                yield { s with Steps = List.ofArray (Array.updateAt i { steps[i] with After = steps[i].After / 2 } steps) }
    }

/// The FsCheck arbitrary for schedules.
let arbSchedule (maxSteps: int) : Arbitrary<Schedule> = Arb.fromGenShrink (genSchedule maxSteps, shrinkSchedule)

/// `count` schedules drawn deterministically from `seed`.
let sampleSchedules (maxSteps: int) (seed: uint64) (count: int) : Schedule list =
    Gen.sampleWithSeed (Rnd(seed)) 50 count (genSchedule maxSteps) |> List.ofArray

// ---------------------------------------------------------------------------------------------------------------
// Deliberately broken variants, each built by wrapping the real reducer's functions

let private lift
    (r: Reducer<'S>)
    (init: Boot -> ('S * 'X) * Effect list)
    (step: 'S * 'X -> Event -> ('S * 'X) * Effect list)
    : Reducer<'S * 'X> =
    { Init = init
      Step = step
      Role = fst >> r.Role
      Term = fst >> r.Term
      Leader = fst >> r.Leader
      CommitIndex = fst >> r.CommitIndex
      Configuration = fst >> r.Configuration }

/// Forgets a granted vote: asked again in a term it already voted in, the node grants any other candidate too.
let forgetsVotes (r: Reducer<'S>) : Reducer<'S * Map<Term, NodeId>> =
    lift r (fun boot -> let s, fx = r.Init boot in (s, Map.empty), fx) (fun (s, granted) event ->
        match event with
        | Event.Receive({ Message = Message.Vote req } as env) when
            not req.PreVote && granted.ContainsKey req.Term && granted[req.Term] <> req.Candidate
            ->
            let reply = { Term = req.Term; Granted = true; PreVote = false }
            (s, granted), [ Effect.Send { From = env.To; To = env.From; Message = Message.VoteReply reply } ]
        | _ ->
            let s', fx = r.Step s event
            let granted =
                fx
                |> List.fold
                    (fun (g: Map<Term, NodeId>) e ->
                        match e with
                        | Effect.Send { To = c; Message = Message.VoteReply v } when v.Granted && not v.PreVote -> Map.add v.Term c g
                        | _ -> g)
                    granted
            (s', granted), fx)

/// Commits without a majority: whenever the leader appends, it is told at once that every peer (and its own disk)
/// has stored the entries.
let commitsWithoutMajority (r: Reducer<'S>) : Reducer<'S * int64> =
    lift r (fun boot -> let s, fx = r.Init boot in (s, 0L), fx) (fun (s, round) event ->
        let s, fx = r.Step s event
        let round =
            fx
            |> List.fold
                (fun acc e ->
                    match e with
                    | Effect.Send { Message = Message.Append a } -> max acc a.Round
                    | _ -> acc)
                round
        let appended =
            fx
            |> List.tryPick (function
                | Effect.PersistEntries es when not es.IsEmpty -> Some(List.last es)
                | _ -> None)
        match appended with
        | Some last when r.Role s = Role.Leader ->
            let self = defaultArg (r.Leader s) Guid.Empty
            let fakes =
                [ yield Event.Persisted(last.Index, last.Term)
                  for KeyValue(peer, _) in (r.Configuration s).Members do
                      if peer <> self then
                          let reply =
                              { Term = r.Term s
                                Success = true
                                MatchIndex = last.Index
                                ConflictIndex = 0L
                                ConflictTerm = None
                                Round = round }
                          yield Event.Receive { From = peer; To = self; Message = Message.AppendReply reply } ]
            let s, more = fakes |> List.fold (fun (s, acc) ev -> let s, fx = r.Step s ev in s, acc @ fx) (s, [])
            (s, round), fx @ more
        | _ -> (s, round), fx)

/// Skips the log up-to-date check of elections: every vote request claims an unbeatable log.
let skipsUpToDateCheck (r: Reducer<'S>) : Reducer<'S * unit> =
    lift r (fun boot -> let s, fx = r.Init boot in (s, ()), fx) (fun (s, ()) event ->
        let event =
            match event with
            | Event.Receive({ Message = Message.Vote req } as env) ->
                Event.Receive
                    { env with Message = Message.Vote { req with LastLogIndex = Int64.MaxValue / 4L; LastLogTerm = Int64.MaxValue / 4L } }
            | e -> e
        let s, fx = r.Step s event
        (s, ()), fx)

/// Serves reads without ReadIndex: a node that believes it leads answers a read at once from its state machine.
let readsWithoutReadIndex (r: Reducer<'S>) : Reducer<'S * unit> =
    lift r (fun boot -> let s, fx = r.Init boot in (s, ()), fx) (fun (s, ()) event ->
        match event with
        | Event.Read rid when r.Role s = Role.Leader -> (s, ()), [ Effect.ReadReady([ rid ], 0L) ]
        | _ ->
            let s, fx = r.Step s event
            (s, ()), fx)

/// Restarts with amnesia: forgets its durable term, vote and log (keeping only its snapshot).
let amnesiaOnRestart (r: Reducer<'S>) : Reducer<'S * unit> =
    lift
        r
        (fun boot ->
            let s, fx = r.Init { boot with HardState = { Term = 0L; VotedFor = None }; Entries = [] }
            (s, ()), fx)
        (fun (s, ()) event ->
            let s, fx = r.Step s event
            (s, ()), fx)

/// Applies entries as soon as they are appended, before they commit.
let appliesBeforeCommit (r: Reducer<'S>) : Reducer<'S * LogIndex> =
    lift r (fun boot -> let s, fx = r.Init boot in (s, boot.Applied), fx) (fun (s, applied) event ->
        let s, fx = r.Step s event
        let mutable applied = applied
        let fx =
            fx
            |> List.collect (fun e ->
                match e with
                | Effect.PersistEntries es ->
                    let early = es |> List.filter (fun x -> x.Index > applied)
                    match early with
                    | first :: _ when first.Index = applied + 1L ->
                        applied <- (List.last early).Index
                        [ e; Effect.Apply early ]
                    | _ -> [ e ]
                | Effect.Apply es ->
                    match es |> List.filter (fun x -> x.Index > applied) with
                    | [] -> []
                    | rest ->
                        applied <- (List.last rest).Index
                        [ Effect.Apply rest ]
                | e -> [ e ])
        (s, applied), fx)

/// A broken variant and its name, with the reducer type hidden so variants can sit in one list.
type Variant = { Name: string; Run: Settings -> Schedule -> RunResult }

/// Every broken variant of the real reducer.
let variants (options: Options) : Variant list =
    let real = Simulator.raft options
    [ { Name = "votes forgotten after granting"; Run = fun st sc -> Simulator.run (forgetsVotes real) st sc }
      { Name = "leader commits without a majority"; Run = fun st sc -> Simulator.run (commitsWithoutMajority real) st sc }
      { Name = "log up-to-date check skipped"; Run = fun st sc -> Simulator.run (skipsUpToDateCheck real) st sc }
      { Name = "reads served without ReadIndex"; Run = fun st sc -> Simulator.run (readsWithoutReadIndex real) st sc }
      { Name = "amnesia on restart"; Run = fun st sc -> Simulator.run (amnesiaOnRestart real) st sc }
      { Name = "apply before commit"; Run = fun st sc -> Simulator.run (appliesBeforeCommit real) st sc } ]
