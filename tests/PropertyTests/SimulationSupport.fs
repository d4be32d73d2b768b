/// Deliberately broken reducer variants for the simulation properties (the schedules come from
/// Skiff.Simulation.Schedules).
module Skiff.PropertyTests.SimulationSupport

open System
open FsCheck
open FsCheck.FSharp
open Skiff.Core
open Skiff.Simulation
open Skiff.Simulation.Simulator

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
/// Trusts its whole stored log as committed on restart: a storage that records the last index as the commit hint.
let trustsStoredLog (r: Reducer<'S>) : Reducer<'S * unit> =
    lift
        r
        (fun boot ->
            let last = boot.Entries |> List.tryLast |> Option.map (fun e -> e.Index) |> Option.defaultValue 0L
            let s, fx = r.Init { boot with CommitHint = last }
            (s, ()), fx)
        (fun (s, ()) event ->
            let s, fx = r.Step s event
            (s, ()), fx)

let variants (options: Options) : Variant list =
    let real = Simulator.raft options
    [ { Name = "votes forgotten after granting"; Run = fun st sc -> Simulator.run (forgetsVotes real) st sc }
      { Name = "leader commits without a majority"; Run = fun st sc -> Simulator.run (commitsWithoutMajority real) st sc }
      { Name = "log up-to-date check skipped"; Run = fun st sc -> Simulator.run (skipsUpToDateCheck real) st sc }
      { Name = "reads served without ReadIndex"; Run = fun st sc -> Simulator.run (readsWithoutReadIndex real) st sc }
      { Name = "amnesia on restart"; Run = fun st sc -> Simulator.run (amnesiaOnRestart real) st sc }
      { Name = "apply before commit"; Run = fun st sc -> Simulator.run (appliesBeforeCommit real) st sc }
      { Name = "restart trusts the stored log as committed"; Run = fun st sc -> Simulator.run (trustsStoredLog real) st sc } ]
