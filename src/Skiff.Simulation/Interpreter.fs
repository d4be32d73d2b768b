/// The per-node effect interpreter: carries out the effects the reducer emits for one node against its simulated
/// disk, network and state machine, feeds back the events they produce, and reports every observation the
/// invariants need. How effects are carried out is described at the top of Simulator.fs.
namespace Skiff.Simulation

open System.Collections.Generic
open Skiff.Core

/// What the interpreter tells whoever plays the clients and the operator. Calls happen at the exact moment of the
/// effect (ordering matters: the run is deterministic only if every party sees events in the same order).
type internal ClientPort<'S> =
    /// Effect.Accepted: a proposal was appended at (index, term).
    abstract Accepted: node: Node<'S> * rid: RequestId * index: LogIndex * term: Term -> unit
    /// Effect.Reject.
    abstract Rejected: node: Node<'S> * rid: RequestId * why: Rejection -> unit
    /// Effect.ReadReady: the reads may be served once the state machine has applied `index`.
    abstract ReadReady: node: Node<'S> * rids: RequestId list * index: LogIndex -> unit
    /// Effect.Completed.
    abstract Completed: node: Node<'S> * rid: RequestId -> unit
    /// An entry was applied to the node's state machine (`result`: the command's result, for commands).
    abstract Applied: node: Node<'S> * entry: Entry * result: LogResult option -> unit
    /// The node's state machine moved forward (entries applied or a snapshot installed): waiting reads may be due.
    abstract StateAdvanced: node: Node<'S> -> unit

type internal Interpreter<'S>(world: World<'S>, clients: ClientPort<'S>) =
    let reducer = world.Reducer
    let options = world.Settings
    let prng = world.Prng
    let net = world.Net
    let inv = world.Invariants
    let nodes = world.Nodes
    let log f = world.Log f
    let failed () = world.Failed
    let slotName id = world.SlotName id
    let leaderTerms = HashSet<Term>()
    /// Names staged snapshots uniquely across the run.
    let mutable blobCount = 0
    /// Set while the outermost drain feeds a node its events (see drain).
    let mutable draining = false
    let mutable installs = 0
    let mutable crashes = 0

    let rec boot (node: Node<'S>) =
        let snapshotMeta = node.Snapshot |> Option.map fst
        let kv, applied =
            match node.Snapshot with
            | Some(meta, kv) -> kv, meta.Index
            | None -> KvModel.emptyReplica, 0L
        node.Kv <- kv
        node.Applied <- applied
        node.Written.CopyFrom node.Durable
        node.Disk.Clear()
        node.DiskLast <- world.Now
        node.Inbox.Clear()
        node.Staged.Clear()
        node.WaitingReads.Clear()
        node.AcceptedWaits.Clear()
        node.LastRole <- Role.Follower
        node.LastTerm <- node.Hard.Term
        node.WrittenHard <- node.Hard
        node.LastCommit <- 0L
        node.Alive <- true
        let b =
            { Id = node.Id
              Seed = prng.Next()
              HardState = node.Hard
              Snapshot = snapshotMeta
              Entries = node.Durable.Entries
              LogBase = node.Durable.BaseIndex, node.Durable.BaseTerm
              Applied = applied
              CommitHint = node.Durable.CommitHint
              Bootstrap = node.Bootstrap }
        log (fun () ->
            sprintf
                "%s starts (term %d, log %d..%d, applied %d)"
                node.Name
                node.Hard.Term
                (node.Durable.BaseIndex + 1L)
                node.Durable.LastIndex
                applied)
        guard node (fun () -> reducer.Init b) |> ignore

    and guard (node: Node<'S>) (f: unit -> 'S * Effect list) : bool =
        let result =
            try
                Ok(f ())
            with e ->
                Error e
        match result with
        | Ok(state, effects) ->
            if options.Trace && not effects.IsEmpty then
                log (fun () -> sprintf "  %s -> %s" node.Name (effects |> List.map (Show.showEffect slotName) |> String.concat "; "))
            inv.Step <- inv.Step + 1L
            world.Clock <- world.Clock + 1L
            node.State <- ValueSome state
            // The written log mirrors the reducer's in-memory log: update it before observing the new state.
            for effect in effects do
                match effect with
                | Effect.PersistEntries _
                | Effect.InstallSnapshot _
                | Effect.CompactLog _ ->
                    if node.Alive then
                        emit node effect
                | Effect.PersistHardState hard -> checkHardState node hard
                | _ -> ()
            observe node state
            execute node effects
            drain node
            true
        | Error e ->
            inv.Fail(ViolationKind.ReducerException(sprintf "%s: %s" node.Name (e.ToString())))
            false

    // ----- observing

    and observe (node: Node<'S>) (state: 'S) =
        let role = reducer.Role state
        let term = reducer.Term state
        let commit = reducer.CommitIndex state
        if role <> node.LastRole || term <> node.LastTerm then
            log (fun () -> sprintf "%s is %A in term %d (commit %d, last %d)" node.Name role term commit node.Written.LastIndex)
        if role = Role.Leader then
            inv.ObserveLeader(node.Name, term)
            leaderTerms.Add term |> ignore
            if node.LastRole <> Role.Leader || node.LastTerm <> term then
                inv.CheckNewLeader(node.Name, term, node.Written)
        inv.CheckCommitMonotone(node.Name, node.LastCommit, commit)
        if commit > node.LastCommit then
            let leaders =
                [ for n in nodes do
                      match n.State with
                      | ValueSome s when n.Alive && n.Slot <> node.Slot && reducer.Role s = Role.Leader -> n.Name, reducer.Term s, n.Written
                      | _ -> () ]
            inv.ObserveCommit(node.Name, term, node.LastCommit, commit, node.Written, leaders)
            node.LastCommit <- commit
        node.LastRole <- role
        node.LastTerm <- term

    // ----- stepping

    and step (node: Node<'S>) (event: Event) =
        if node.Alive && not (failed ()) then
            match node.State with
            | ValueSome s -> guard node (fun () -> reducer.Step s event) |> ignore
            | ValueNone -> ()

    /// Terms never go back and a vote, once cast in a term, never changes (over the node's whole history: the
    /// reference is the hard state last written, durable or not, and the durable one after a restart).
    and checkHardState (node: Node<'S>) (hard: HardState) =
        let last = node.WrittenHard
        if hard.Term < last.Term then
            inv.Safety(SafetyProperty.ElectionSafety, sprintf "%s persists term %d after term %d" node.Name hard.Term last.Term)
        elif hard.Term = last.Term && last.VotedFor.IsSome && hard.VotedFor <> last.VotedFor then
            inv.Safety(
                SafetyProperty.ElectionSafety,
                sprintf
                    "%s changes its vote in term %d from %s to %s"
                    node.Name
                    hard.Term
                    (slotName last.VotedFor.Value)
                    (match hard.VotedFor with
                     | Some v -> slotName v
                     | None -> "nobody")
            )
        node.WrittenHard <- hard

    and traceStep (node: Node<'S>) (event: Event) =
        if options.Trace && event <> Event.Tick then
            log (fun () -> sprintf "%s <- %s" node.Name (Show.showEvent slotName event))

    and drain (node: Node<'S>) =
        // Feedback events (Persisted, EntriesLoaded, SnapshotTaken) are processed iteratively by the outermost
        // drain; a node that keeps feeding itself is a livelocked reducer.
        if not draining then
            draining <- true
            let mutable budget = 100_000
            while node.Alive && node.Inbox.Count > 0 && not (failed ()) do
                budget <- budget - 1
                if budget = 0 then
                    inv.Liveness(
                        LivenessProperty.EndlessFeedback,
                        100_000,
                        sprintf "%s keeps feeding itself events without end (last: %A)" node.Name (node.Inbox.Peek())
                    )
                let event = node.Inbox.Dequeue()
                // An interpreter may coalesce durability notices: "durable up to i" covers every earlier one.
                let coalesced =
                    match event with
                    | Event.Persisted _ when node.Inbox.Count > 0 ->
                        (match node.Inbox.Peek() with
                         | Event.Persisted _ -> true
                         | _ -> false)
                        && prng.Chance 50
                    | _ -> false
                match node.State with
                | ValueSome _ when coalesced -> log (fun () -> sprintf "%s: %A coalesced into the next" node.Name event)
                | ValueSome s ->
                    traceStep node event
                    guard node (fun () -> reducer.Step s event) |> ignore
                | ValueNone -> ()
            draining <- false

    // ----- effects

    and execute (node: Node<'S>) (effects: Effect list) =
        let commit =
            match node.State with
            | ValueSome s -> reducer.CommitIndex s
            | ValueNone -> 0L
        let mutable persisted = false
        for effect in effects do
            if not (failed ()) && node.Alive then
                match effect with
                | Effect.PersistHardState _
                | Effect.PersistEntries _
                | Effect.InstallSnapshot _ ->
                    persisted <- true
                    let delay = if world.DiskMax > 0 then prng.Below(world.DiskMax + 1) else 0
                    enqueue node (world.Now + int64 delay) effect commit
                | Effect.Send _ when not persisted -> perform node effect 0L
                | _ -> enqueue node world.Now effect 0L

    /// Effects on the written log, at the moment they are emitted (the reducer's in-memory view).
    and emit (node: Node<'S>) (effect: Effect) =
        match effect with
        | Effect.PersistEntries batch ->
            match node.Written.Write batch with
            | Ok() -> inv.ObserveWrite(node.Name, batch, node.Written)
            | Error e -> inv.Contract(sprintf "%s: %s" node.Name e)
        | Effect.InstallSnapshot(_, meta) -> node.Written.Reset(meta.Index, meta.Term)
        | Effect.CompactLog upTo ->
            let term =
                match node.Snapshot with
                | Some(meta, _) when meta.Index = upTo -> meta.Term
                | _ -> 0L
            node.Written.Compact(upTo, term)
        | _ -> ()

    and enqueue (node: Node<'S>) (readyAt: int64) (effect: Effect) (commit: LogIndex) =
        let readyAt = max readyAt node.DiskLast
        if node.Disk.Count = 0 && readyAt <= world.Now then
            perform node effect commit
        else
            node.Disk.Enqueue { ReadyAt = readyAt; Effect = effect; CommitHint = commit }
            node.DiskLast <- readyAt

    and runDisk (node: Node<'S>) =
        let mutable go = true
        while go && node.Alive && not (failed ()) && node.Disk.Count > 0 do
            let item = node.Disk.Peek()
            if item.ReadyAt <= world.Now then
                node.Disk.Dequeue() |> ignore
                perform node item.Effect item.CommitHint
            else
                go <- false
        drain node

    /// `commit`: the node's commit index when the effect was emitted (PersistEntries records it with the entries).
    and perform (node: Node<'S>) (effect: Effect) (commit: LogIndex) =
        match effect with
        | Effect.PersistHardState hard -> node.Hard <- hard
        | Effect.PersistEntries batch ->
            match node.Durable.Write batch with
            | Ok() ->
                node.Durable.NoteCommit commit
                match List.tryLast batch with
                | Some last -> node.Inbox.Enqueue(Event.Persisted(last.Index, last.Term))
                | None -> ()
            | Error e -> inv.Contract(sprintf "%s (durable log): %s" node.Name e)
        | Effect.Send envelope ->
            match envelope.Message with
            | Message.Snapshot _ -> inv.Contract(sprintf "%s sent Message.Snapshot directly" node.Name)
            | _ -> net.Send(world.Now, envelope, None)
        | Effect.Apply entries -> applyEntries node entries
        | Effect.LoadEntries(purpose, from, upTo) ->
            let entries = node.Durable.Range(from, upTo) |> Option.defaultValue []
            node.Inbox.Enqueue(Event.EntriesLoaded(purpose, entries))
        | Effect.Accepted(rid, index, term) ->
            log (fun () -> sprintf "%s accepted request %d at %d/%d" node.Name rid index term)
            clients.Accepted(node, rid, index, term)
        | Effect.Reject(rid, why) -> clients.Rejected(node, rid, why)
        | Effect.ReadReady(rids, index) -> clients.ReadReady(node, rids, index)
        | Effect.Completed rid -> clients.Completed(node, rid)
        | Effect.TakeSnapshot meta ->
            // The effect names the index it expects the state machine to be at once the Apply effects before it
            // are done; they are (the disk queue keeps order), so anything else is an interpreter bug.
            if meta.Index <> node.Applied then
                inv.Contract(sprintf "%s asked to snapshot at %d but has applied %d" node.Name meta.Index node.Applied)
            else
                node.Snapshot <- Some(meta, node.Kv)
                inv.ObserveState(node.Name, meta.Index, node.Kv)
                node.Inbox.Enqueue(Event.SnapshotTaken meta)
        | Effect.CompactLog upTo ->
            let snapIndex = node.Snapshot |> Option.map (fun (m, _) -> m.Index) |> Option.defaultValue 0L
            if upTo > snapIndex then
                inv.Contract(sprintf "%s compacts its log up to %d but its snapshot only covers %d" node.Name upTo snapIndex)
            else
                let term = node.Snapshot |> Option.map (fun (m, _) -> m.Term) |> Option.defaultValue 0L
                node.Durable.Compact(upTo, (if node.Snapshot.IsSome && fst(node.Snapshot.Value).Index = upTo then term else 0L))
        | Effect.SendSnapshot(target, term, meta) ->
            // "Stream the latest snapshot": a TakeSnapshot carried out after this SendSnapshot was emitted (but
            // before it ran) may have replaced the one the reducer named; the newer one is sent, with its own meta,
            // since data and meta must match.
            match node.Snapshot with
            | Some(stored, kv) when stored.Index >= meta.Index ->
                let meta = stored
                blobCount <- blobCount + 1
                let name = sprintf "snap-%d" blobCount
                let envelope =
                    { From = node.Id
                      To = target
                      Message = Message.Snapshot { Term = term; Leader = node.Id; Meta = meta; Staged = name } }
                net.Send(world.Now, envelope, Some kv)
            | stored ->
                inv.Contract(
                    sprintf "%s asked to send snapshot %d/%d but stores %A" node.Name meta.Index meta.Term (stored |> Option.map fst)
                )
        | Effect.InstallSnapshot(staged, meta) ->
            match node.Staged.TryGetValue staged with
            | true, (stagedMeta, kv) ->
                if stagedMeta.Index <> meta.Index || stagedMeta.Term <> meta.Term then
                    inv.Contract(
                        sprintf
                            "%s installs %s as %d/%d but it holds %d/%d"
                            node.Name
                            staged
                            meta.Index
                            meta.Term
                            stagedMeta.Index
                            stagedMeta.Term
                    )
                elif meta.Index < node.Applied then
                    inv.Safety(
                        SafetyProperty.StateMachineSafety,
                        sprintf "%s installs a snapshot at %d, behind its applied index %d" node.Name meta.Index node.Applied
                    )
                else
                    node.Snapshot <- Some(meta, kv)
                    node.Durable.Reset(meta.Index, meta.Term)
                    node.Kv <- kv
                    node.Applied <- meta.Index
                    inv.ObserveState(node.Name, meta.Index, kv)
                    installs <- installs + 1
                    log (fun () -> sprintf "%s installed snapshot %d/%d" node.Name meta.Index meta.Term)
                    clients.StateAdvanced node
            | _ -> inv.Contract(sprintf "%s installs unknown staged snapshot %s" node.Name staged)
        | Effect.RoleChanged _
        | Effect.ConfigurationChanged _ -> ()

    and applyEntries (node: Node<'S>) (entries: Entry list) =
        for e in entries do
            if not (failed ()) then
                if e.Index <> node.Applied + 1L then
                    inv.Safety(SafetyProperty.StateMachineSafety, sprintf "%s applies index %d after %d" node.Name e.Index node.Applied)
                else
                    let mutable result = None
                    match e.Payload with
                    | Payload.Noop
                    | Payload.Config _ -> ()
                    | Payload.Command bytes ->
                        match KvModel.applyLogCommand options.Dedup node.Kv e.Index bytes with
                        | Ok(kv, r, command) ->
                            node.Kv <- kv
                            result <- Some r
                            match command, r with
                            | LogCommand.InSession(stamp, _), LogResult.Applied _ ->
                                inv.ObserveRequestApplied(node.Name, stamp.Session, stamp.Sequence, e.Index)
                            | _ -> ()
                        | Error why -> inv.Contract(sprintf "%s applies an undecodable command at %d: %s" node.Name e.Index why)
                    node.Applied <- e.Index
                    inv.ObserveApply(node.Name, e, node.Kv)
                    clients.Applied(node, e, result)
        clients.StateAdvanced node

    /// Starts (or restarts) a node from its durable store.
    member _.Boot(node: Node<'S>) = boot node

    /// Feeds one event to a running node and carries out what follows.
    member _.Step(node: Node<'S>, event: Event) = step node event

    /// Carries out the node's queued effects that are due by now.
    member _.RunDisk(node: Node<'S>) = runDisk node

    /// Crashes a node: it loses its reducer state, its disk queue (writes not yet durable), its inbox, its waiting
    /// requests and its staged snapshots. Its durable store is kept for the restart.
    member _.Crash(node: Node<'S>) =
        if node.Alive then
            log (fun () -> sprintf "%s crashes" node.Name)
            crashes <- crashes + 1
            node.Alive <- false
            node.State <- ValueNone
            node.Disk.Clear()
            node.Inbox.Clear()
            node.WaitingReads.Clear()
            node.AcceptedWaits.Clear()
            node.Staged.Clear()

    /// Crashes injected so far.
    member _.Crashes = crashes
    /// Snapshots installed from a leader so far.
    member _.Installs = installs
    /// Distinct terms that had a leader.
    member _.LeaderTerms = leaderTerms.Count
