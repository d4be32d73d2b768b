/// The deterministic cluster simulator: an interpreter of the reducer's effects for a whole cluster in one process,
/// with a simulated network, per-node durable storage, clients and an operator, driven by a fault schedule. The
/// same reducer, options and schedule give the same run, bit for bit: one seeded Prng decides everything, nothing
/// depends on time or on hash-table iteration order.
///
/// How effects are carried out (docs/architecture.md): each node has a FIFO "disk" queue. Persist effects
/// (PersistHardState, PersistEntries, InstallSnapshot) become durable after 0 .. SlowDisk ticks, in order; every
/// other effect waits in the queue behind them, except a Send with no persist before it in its own effect list,
/// which leaves at once. PersistEntries is answered with Event.Persisted, LoadEntries (from the durable log) with
/// Event.EntriesLoaded, TakeSnapshot with Event.SnapshotTaken; those events are fed back right after the step.
/// A crash loses the reducer state, the queue (so writes not yet durable), the state machine and staged snapshots;
/// a restart rebuilds the node with `Reducer.Init` from its durable store, the state machine from its snapshot.
module Skiff.Core.Simulator

open System
open System.Collections.Generic
open Skiff.Core.Linearizability

/// What a node's durable store holds, handed to the reducer when the node starts or restarts.
type Boot =
    { /// The node's id.
      Id: NodeId
      /// A seed for the node's own randomness (different at every start).
      Seed: uint64
      /// The durable term and vote.
      HardState: HardState
      /// The durable snapshot, if any.
      Snapshot: SnapshotMeta option
      /// The durable log, in order: the entries after the compaction point (which may lie before the snapshot
      /// index when a tail is kept behind the snapshot).
      Entries: Entry list
      /// The index just before `Entries` (the compaction point) and the term of the entry there; (0, 0) for a log
      /// that was never compacted.
      LogBase: LogIndex * Term
      /// The index the state machine has applied at start (the snapshot's, or 0).
      Applied: LogIndex
      /// The configuration before any log: the initial members for the first nodes, empty for a joining node.
      Bootstrap: Configuration }

/// A reducer as the simulator drives it: how to start a node, how to step it, and the queries the invariants need.
/// Tests wrap these functions to build deliberately broken variants.
type Reducer<'S> =
    { /// Starts a node from its durable store.
      Init: Boot -> 'S * Effect list
      /// Feeds one event.
      Step: 'S -> Event -> 'S * Effect list
      /// The node's role.
      Role: 'S -> Role
      /// The node's current term.
      Term: 'S -> Term
      /// The leader the node knows of.
      Leader: 'S -> NodeId option
      /// The node's commit index.
      CommitIndex: 'S -> LogIndex
      /// The configuration in force on the node.
      Configuration: 'S -> Configuration }

/// Knobs of a run that are not part of the fault schedule.
type Settings =
    { /// Clients issuing operations (each has at most one outstanding).
      Clients: int
      /// Distinct keys the clients use (few keys make conflicts likely).
      Keys: int
      /// Chance in percent that an idle client starts an operation at a tick.
      OpPercent: int
      /// Ticks a client waits for an answer before recording its operation as timed out.
      ClientTimeout: int
      /// Ticks the run continues after the last scheduled fault, faults still in force.
      TailTicks: int
      /// After the faults are healed, ticks within which a leader must be elected.
      LeaderTicks: int
      /// After the faults are healed, ticks within which every member must converge on the leader's log and state.
      LivenessTicks: int
      /// While a majority of voters is connected both ways on a good network, ticks within which a leader must
      /// commit in its term (Liveness.fs, PartialLiveness); 0 turns the check off. It needs CheckQuorum.
      PartialLivenessTicks: int
      /// Chance in percent that a node misses a tick (clock drift).
      TickSkipPercent: int
      /// AddNode is ignored once this many nodes exist.
      MaxNodes: int
      /// Record a human-readable trace of the run.
      Trace: bool
      /// Clients open a session and retry every write (same session and number) after any fault until its
      /// deadline, as the runtime's clients do: each write must take effect at most once.
      Sessions: bool
      /// The state machine answers a repeated session request from its results (false: the broken variant that
      /// applies it again, for showing that the "request applied twice" invariant catches it).
      Dedup: bool
      /// A session expires after this many ticks without a request (log time is the tick).
      SessionTimeout: int
      /// With sessions, ticks a client waits for the answer to a proposal before sending it again elsewhere.
      ResendTicks: int }

/// Sensible defaults for property tests.
let defaultSettings: Settings =
    { Clients = 3
      Keys = 2
      OpPercent = 30
      ClientTimeout = 40
      TailTicks = 30
      LeaderTicks = 200
      LivenessTicks = 400
      // Off by default: the property needs CheckQuorum, and the reducer without it runs with these settings.
      // tests/PropertyTests/PartialLivenessTests.fs turns it on (200).
      PartialLivenessTicks = 0
      TickSkipPercent = 10
      MaxNodes = 7
      Trace = false
      Sessions = false
      Dedup = true
      SessionTimeout = 1_000_000
      ResendTicks = 12 }

/// Counters describing a run.
type Stats =
    { /// Ticks simulated.
      Ticks: int64
      /// Reducer steps taken.
      Steps: int64
      /// Messages sent.
      Messages: int64
      /// Messages lost or cut by partitions.
      Dropped: int64
      /// Client operations that returned.
      Completed: int
      /// Client operations that timed out.
      TimedOut: int
      /// Distinct terms that had a leader.
      Leaders: int
      /// Crashes injected.
      Crashes: int
      /// Snapshots installed from a leader.
      SnapshotsInstalled: int
      /// Membership changes completed.
      ConfigChanges: int
      /// Ticks from healing until a leader was known (0 if the run stopped earlier).
      LeaderAfterHeal: int
      /// Ticks from healing until every member converged (0 if the run stopped earlier).
      ConvergedAfterHeal: int
      /// The linearizability checker ran out of its step budget on this history (no verdict).
      Unchecked: bool
      /// The highest index committed anywhere.
      Committed: LogIndex
      /// The longest wait from a healthy majority forming to a leader committing (PartialLiveness).
      PartialLivenessWorst: int
      /// Ticks on which the partial-failure liveness check applied.
      PartialLivenessChecked: int64 }

/// The outcome of one run.
type RunResult =
    { /// The schedule that was run.
      Schedule: Schedule
      /// The first property violated, if any.
      Violation: Violation option
      /// The client history given to the linearizability checker.
      History: Operation list
      /// Counters.
      Stats: Stats
      /// The trace, if Settings.Trace was set.
      Trace: string list }

/// Stable node ids: slot k gets 00000000-0000-0000-0000-<k+1>.
let nodeId (slot: int) : NodeId = Guid(sprintf "00000000-0000-0000-0000-%012d" (slot + 1))

/// The short name used in descriptions: "n1" for slot 0.
let nodeName (slot: int) : string = sprintf "n%d" (slot + 1)

// ---------------------------------------------------------------------------------------------------------------
// Compact rendering for traces

let private showMessage (m: Message) =
    match m with
    | Message.Vote v -> sprintf "%s t%d last %d/%d%s" (if v.PreVote then "PreVote" else "Vote") v.Term v.LastLogIndex v.LastLogTerm (if v.Transfer then " transfer" else "")
    | Message.VoteReply v -> sprintf "%sReply t%d %b" (if v.PreVote then "PreVote" else "Vote") v.Term v.Granted
    | Message.Append a ->
        let range = match a.Entries with [] -> "" | es -> sprintf " [%d..%d]" es.Head.Index (List.last es).Index
        sprintf "Append t%d prev %d/%d%s commit %d r%d" a.Term a.PrevLogIndex a.PrevLogTerm range a.LeaderCommit a.Round
    | Message.AppendReply r ->
        if r.Success then sprintf "AppendOk t%d match %d r%d" r.Term r.MatchIndex r.Round
        else sprintf "AppendNo t%d conflict %d/%A r%d" r.Term r.ConflictIndex r.ConflictTerm r.Round
    | Message.Snapshot s -> sprintf "Snapshot t%d %d/%d" s.Term s.Meta.Index s.Meta.Term
    | Message.SnapshotReply r -> sprintf "SnapshotReply t%d %d" r.Term r.MatchIndex
    | Message.TimeoutNow t -> sprintf "TimeoutNow t%d" t

let private range (es: Entry list) =
    match es with
    | [] -> "[]"
    | es -> sprintf "[%d..%d]" es.Head.Index (List.last es).Index

let private showEvent (name: NodeId -> string) (e: Event) =
    match e with
    | Event.Tick -> "Tick"
    | Event.Receive env -> sprintf "Receive %s from %s" (showMessage env.Message) (name env.From)
    | Event.Propose(id, _) -> sprintf "Propose #%d" id
    | Event.Read id -> sprintf "Read #%d" id
    | Event.ChangeConfig(id, c) -> sprintf "ChangeConfig #%d %A" id c
    | Event.TransferLeadership(id, t) -> sprintf "Transfer #%d to %s" id (name t)
    | Event.Persisted(i, t) -> sprintf "Persisted %d/%d" i t
    | Event.EntriesLoaded(p, es) -> sprintf "EntriesLoaded %A %s" p (range es)
    | Event.SnapshotTaken m -> sprintf "SnapshotTaken %d/%d" m.Index m.Term

let private showEffect (name: NodeId -> string) (e: Effect) =
    match e with
    | Effect.PersistHardState h -> sprintf "PersistHardState t%d %s" h.Term (match h.VotedFor with Some v -> name v | None -> "-")
    | Effect.PersistEntries es -> "PersistEntries " + range es
    | Effect.Send env -> sprintf "Send %s to %s" (showMessage env.Message) (name env.To)
    | Effect.Apply es -> "Apply " + range es
    | Effect.LoadEntries(p, a, b) -> sprintf "LoadEntries %A %d..%d" p a b
    | Effect.Accepted(id, i, t) -> sprintf "Accepted #%d %d/%d" id i t
    | Effect.Reject(id, r) -> sprintf "Reject #%d %A" id r
    | Effect.ReadReady(ids, i) -> sprintf "ReadReady %A %d" ids i
    | Effect.Completed id -> sprintf "Completed #%d" id
    | Effect.TakeSnapshot i -> sprintf "TakeSnapshot %d" i
    | Effect.CompactLog i -> sprintf "CompactLog %d" i
    | Effect.SendSnapshot(t, term, m) -> sprintf "SendSnapshot to %s t%d %d/%d" (name t) term m.Index m.Term
    | Effect.InstallSnapshot(st, m) -> sprintf "InstallSnapshot %s %d/%d" st m.Index m.Term
    | Effect.RoleChanged(r, t, l) -> sprintf "RoleChanged %A t%d %s" r t (match l with Some x -> name x | None -> "-")
    | Effect.ConfigurationChanged c -> sprintf "ConfigurationChanged %d members" c.Members.Count

// ---------------------------------------------------------------------------------------------------------------
// Internal state

type private DiskItem = { ReadyAt: int64; Effect: Effect }

type private Node<'S>(slot: int, bootstrap: Configuration) =
    member val Slot = slot
    member val Id = nodeId slot
    member val Name = nodeName slot
    member val Bootstrap = bootstrap
    member val State: 'S voption = ValueNone with get, set
    member val Alive = false with get, set
    // durable
    member val Hard: HardState = { Term = 0L; VotedFor = None } with get, set
    member val WrittenHard: HardState = { Term = 0L; VotedFor = None } with get, set
    member val Durable = LogStore()
    member val Snapshot: (SnapshotMeta * KvModel.Replica) option = None with get, set
    // volatile
    member val Written = LogStore()
    member val Disk = Queue<DiskItem>()
    member val DiskLast = 0L with get, set
    member val Inbox = Queue<Event>()
    member val Kv = KvModel.emptyReplica with get, set
    member val Applied = 0L with get, set
    member val AppliedTerm = 0L with get, set
    member val AppliedConfig = bootstrap with get, set
    member val Staged = Dictionary<string, SnapshotMeta * KvModel.Replica>()
    member val WaitingReads = ResizeArray<struct (RequestId * LogIndex)>()
    member val AcceptedWaits = ResizeArray<struct (RequestId * LogIndex * Term)>()
    member val LastRole = Role.Follower with get, set
    member val LastTerm = 0L with get, set
    member val LastCommit = 0L with get, set

[<RequireQualifiedAccess>]
type private Phase =
    | Sending
    | AwaitApply of node: int * index: LogIndex * term: Term
    | AwaitRead of node: int

type private ClientOp =
    { Action: Action
      Invoked: int64
      Deadline: int64
      /// The request's number in the client's session (0: outside any session).
      Sequence: int64
      /// Opens the client's session instead of performing `Action` (kept out of the history).
      OpensSession: bool
      mutable Target: int
      mutable Rid: RequestId
      mutable RetryAt: int64
      /// With sessions: when an accepted proposal still unanswered is sent again elsewhere.
      mutable ResendAt: int64
      mutable Phase: Phase }

type private Client =
    { Index: int
      mutable Op: ClientOp option
      mutable Written: int
      /// The client's session (0: none yet, or it expired).
      mutable Session: int64
      mutable NextSequence: int64 }

type private ConfigOp =
    { Change: ConfigChange
      Deadline: int64
      mutable Target: int
      mutable Rid: RequestId
      mutable RetryAt: int64 }

// ---------------------------------------------------------------------------------------------------------------
// The run

type private Run<'S>(reducer: Reducer<'S>, options: Settings, schedule: Schedule) =
    let prng = Prng(schedule.Seed)
    let net = Network(prng)
    let inv = Invariants()
    let nodes = ResizeArray<Node<'S>>()
    let slotOf = Dictionary<NodeId, int>()
    let clients = [| for i in 0 .. options.Clients - 1 -> { Index = i; Op = None; Written = 0; Session = 0L; NextSequence = 1L } |]
    let history = ResizeArray<Operation>()
    let trace = ResizeArray<string>()
    let blobs = Dictionary<string, KvModel.Replica>()
    let mutable blobCount = 0
    let mutable configOp: ConfigOp option = None
    let mutable nextRid = 0L
    let mutable now = 0L
    let mutable clock = 0L
    let mutable diskMax = 0
    let mutable clientsOn = true
    let mutable draining = false
    let mutable crashes = 0
    let mutable installs = 0
    let mutable changes = 0
    let mutable leaderAfterHeal = 0
    let mutable convergedAfterHeal = 0
    let mutable unchecked = false
    let mutable completed = 0
    let mutable timedOut = 0
    let leaderTerms = HashSet<Term>()
    let keys = [| for k in 0 .. options.Keys - 1 -> sprintf "k%d" k |]

    let log (f: unit -> string) = if options.Trace then trace.Add(sprintf "[t%d s%d] %s" now inv.Step (f ()))

    let failed () = inv.Violation.IsSome

    let newRid () =
        nextRid <- nextRid + 1L
        nextRid

    let slotName (id: NodeId) =
        match slotOf.TryGetValue id with
        | true, s -> nodeName s
        | _ -> string id

    // ----- booting

    let rec boot (node: Node<'S>) =
        let snapshotMeta = node.Snapshot |> Option.map fst
        let kv, applied, appliedTerm, config =
            match node.Snapshot with
            | Some(meta, kv) -> kv, meta.Index, meta.Term, meta.Configuration
            | None -> KvModel.emptyReplica, 0L, 0L, node.Bootstrap
        node.Kv <- kv
        node.Applied <- applied
        node.AppliedTerm <- appliedTerm
        node.AppliedConfig <- config
        node.Written.CopyFrom node.Durable
        node.Disk.Clear()
        node.DiskLast <- now
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
              Bootstrap = node.Bootstrap }
        log (fun () -> sprintf "%s starts (term %d, log %d..%d, applied %d)" node.Name node.Hard.Term (node.Durable.BaseIndex + 1L) node.Durable.LastIndex applied)
        guard node (fun () -> reducer.Init b) |> ignore

    and guard (node: Node<'S>) (f: unit -> 'S * Effect list) : bool =
        let result =
            try Ok(f ())
            with e -> Error e
        match result with
        | Ok(state, effects) ->
            if options.Trace && not effects.IsEmpty then
                log (fun () -> sprintf "  %s -> %s" node.Name (effects |> List.map (showEffect slotName) |> String.concat "; "))
            inv.Step <- inv.Step + 1L
            clock <- clock + 1L
            node.State <- ValueSome state
            // The written log mirrors the reducer's in-memory log: update it before observing the new state.
            for effect in effects do
                match effect with
                | Effect.PersistEntries _
                | Effect.InstallSnapshot _
                | Effect.CompactLog _ -> if node.Alive then emit node effect
                | Effect.PersistHardState hard -> checkHardState node hard
                | _ -> ()
            observe node state
            execute node effects
            drain node
            true
        | Error e ->
            inv.Fail("reducer exception", sprintf "%s: %s" node.Name (e.ToString()))
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
            if node.LastRole <> Role.Leader || node.LastTerm <> term then inv.CheckNewLeader(node.Name, term, node.Written)
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
            inv.Fail("election safety", sprintf "%s persists term %d after term %d" node.Name hard.Term last.Term)
        elif hard.Term = last.Term && last.VotedFor.IsSome && hard.VotedFor <> last.VotedFor then
            inv.Fail(
                "election safety",
                sprintf "%s changes its vote in term %d from %s to %s" node.Name hard.Term (slotName last.VotedFor.Value)
                    (match hard.VotedFor with Some v -> slotName v | None -> "nobody")
            )
        node.WrittenHard <- hard

    and traceStep (node: Node<'S>) (event: Event) =
        if options.Trace && event <> Event.Tick then log (fun () -> sprintf "%s <- %s" node.Name (showEvent slotName event))

    and drain (node: Node<'S>) =
        // Feedback events (Persisted, EntriesLoaded, SnapshotTaken) are processed iteratively by the outermost
        // drain; a node that keeps feeding itself is a livelocked reducer.
        if not draining then
            draining <- true
            let mutable budget = 100_000
            while node.Alive && node.Inbox.Count > 0 && not (failed ()) do
                budget <- budget - 1
                if budget = 0 then
                    inv.Fail("liveness", sprintf "%s keeps feeding itself events without end (last: %A)" node.Name (node.Inbox.Peek()))
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
        let mutable persisted = false
        for effect in effects do
            if not (failed ()) && node.Alive then
                match effect with
                | Effect.PersistHardState _
                | Effect.PersistEntries _
                | Effect.InstallSnapshot _ ->
                    persisted <- true
                    let delay = if diskMax > 0 then prng.Below(diskMax + 1) else 0
                    enqueue node (now + int64 delay) effect
                | Effect.Send _ when not persisted -> perform node effect
                | _ -> enqueue node now effect

    /// Effects on the written log, at the moment they are emitted (the reducer's in-memory view).
    and emit (node: Node<'S>) (effect: Effect) =
        match effect with
        | Effect.PersistEntries batch ->
            match node.Written.Write batch with
            | Ok() -> inv.ObserveWrite(node.Name, batch, node.Written)
            | Error e -> inv.Fail("interpreter contract", sprintf "%s: %s" node.Name e)
        | Effect.InstallSnapshot(_, meta) -> node.Written.Reset(meta.Index, meta.Term)
        | Effect.CompactLog upTo ->
            let term =
                match node.Snapshot with
                | Some(meta, _) when meta.Index = upTo -> meta.Term
                | _ -> 0L
            node.Written.Compact(upTo, term)
        | _ -> ()

    and enqueue (node: Node<'S>) (readyAt: int64) (effect: Effect) =
        let readyAt = max readyAt node.DiskLast
        if node.Disk.Count = 0 && readyAt <= now then perform node effect
        else
            node.Disk.Enqueue { ReadyAt = readyAt; Effect = effect }
            node.DiskLast <- readyAt

    and runDisk (node: Node<'S>) =
        let mutable go = true
        while go && node.Alive && not (failed ()) && node.Disk.Count > 0 do
            let item = node.Disk.Peek()
            if item.ReadyAt <= now then
                node.Disk.Dequeue() |> ignore
                perform node item.Effect
            else go <- false
        drain node

    and perform (node: Node<'S>) (effect: Effect) =
        match effect with
        | Effect.PersistHardState hard -> node.Hard <- hard
        | Effect.PersistEntries batch ->
            match node.Durable.Write batch with
            | Ok() ->
                match List.tryLast batch with
                | Some last -> node.Inbox.Enqueue(Event.Persisted(last.Index, last.Term))
                | None -> ()
            | Error e -> inv.Fail("interpreter contract", sprintf "%s (durable log): %s" node.Name e)
        | Effect.Send envelope ->
            match envelope.Message with
            | Message.Snapshot _ -> inv.Fail("interpreter contract", sprintf "%s sent Message.Snapshot directly" node.Name)
            | _ -> net.Send(now, envelope, None)
        | Effect.Apply entries -> applyEntries node entries
        | Effect.LoadEntries(purpose, from, upTo) ->
            let entries = node.Durable.Range(from, upTo) |> Option.defaultValue []
            node.Inbox.Enqueue(Event.EntriesLoaded(purpose, entries))
        | Effect.Accepted(rid, index, term) ->
            log (fun () -> sprintf "%s accepted request %d at %d/%d" node.Name rid index term)
            onAccepted node rid index term
        | Effect.Reject(rid, why) -> onReject node rid why
        | Effect.ReadReady(rids, index) -> onReadReady node rids index
        | Effect.Completed rid -> onCompleted node rid
        | Effect.TakeSnapshot _ ->
            let meta =
                { Index = node.Applied
                  Term = node.AppliedTerm
                  Configuration = node.AppliedConfig }
            node.Snapshot <- Some(meta, node.Kv)
            inv.ObserveState(node.Name, meta.Index, node.Kv)
            node.Inbox.Enqueue(Event.SnapshotTaken meta)
        | Effect.CompactLog upTo ->
            let snapIndex = node.Snapshot |> Option.map (fun (m, _) -> m.Index) |> Option.defaultValue 0L
            if upTo > snapIndex then
                inv.Fail("interpreter contract", sprintf "%s compacts its log up to %d but its snapshot only covers %d" node.Name upTo snapIndex)
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
                net.Send(now, envelope, Some kv)
            | stored ->
                inv.Fail("interpreter contract", sprintf "%s asked to send snapshot %d/%d but stores %A" node.Name meta.Index meta.Term (stored |> Option.map fst))
        | Effect.InstallSnapshot(staged, meta) ->
            match node.Staged.TryGetValue staged with
            | true, (stagedMeta, kv) ->
                if stagedMeta.Index <> meta.Index || stagedMeta.Term <> meta.Term then
                    inv.Fail("interpreter contract", sprintf "%s installs %s as %d/%d but it holds %d/%d" node.Name staged meta.Index meta.Term stagedMeta.Index stagedMeta.Term)
                elif meta.Index < node.Applied then
                    inv.Fail("state machine safety", sprintf "%s installs a snapshot at %d, behind its applied index %d" node.Name meta.Index node.Applied)
                else
                    node.Snapshot <- Some(meta, kv)
                    node.Durable.Reset(meta.Index, meta.Term)
                    node.Kv <- kv
                    node.Applied <- meta.Index
                    node.AppliedTerm <- meta.Term
                    node.AppliedConfig <- meta.Configuration
                    inv.ObserveState(node.Name, meta.Index, kv)
                    installs <- installs + 1
                    log (fun () -> sprintf "%s installed snapshot %d/%d" node.Name meta.Index meta.Term)
                    serveReads node
            | _ -> inv.Fail("interpreter contract", sprintf "%s installs unknown staged snapshot %s" node.Name staged)
        | Effect.RoleChanged _
        | Effect.ConfigurationChanged _ -> ()

    and applyEntries (node: Node<'S>) (entries: Entry list) =
        for e in entries do
            if not (failed ()) then
                if e.Index <> node.Applied + 1L then
                    inv.Fail("state machine safety", sprintf "%s applies index %d after %d" node.Name e.Index node.Applied)
                else
                    let mutable result = None
                    match e.Payload with
                    | Payload.Noop -> ()
                    | Payload.Config c -> node.AppliedConfig <- c
                    | Payload.Command bytes ->
                        match KvModel.applyLogCommand options.Dedup node.Kv e.Index bytes with
                        | Ok(kv, r, command) ->
                            node.Kv <- kv
                            result <- Some r
                            match command, r with
                            | LogCommand.InSession(stamp, _), LogResult.Applied _ ->
                                inv.ObserveRequestApplied(node.Name, stamp.Session, stamp.Sequence, e.Index)
                            | _ -> ()
                        | Error why -> inv.Fail("interpreter contract", sprintf "%s applies an undecodable command at %d: %s" node.Name e.Index why)
                    node.Applied <- e.Index
                    node.AppliedTerm <- e.Term
                    inv.ObserveApply(node.Name, e, node.Kv)
                    resolveWrites node e result
        serveReads node

    // ----- clients

    and clientOf (rid: RequestId) =
        clients |> Array.tryFind (fun c -> match c.Op with Some op -> op.Rid = rid | None -> false)

    and finish (client: Client) (completion: Completion) =
        match client.Op with
        | Some op ->
            clock <- clock + 1L
            let completion =
                match completion with
                | Completion.Returned(_, output) -> Completion.Returned(clock, output)
                | c -> c
            match completion with
            | Completion.TimedOut -> timedOut <- timedOut + 1
            | _ -> completed <- completed + 1
            let entry = { Client = client.Index; Invoked = op.Invoked; Action = op.Action; Completion = completion }
            if op.OpensSession then log (fun () -> sprintf "client %d: opening a session: %A" client.Index completion)
            else
                log (fun () -> "client: " + Operation.describe entry)
                history.Add entry
            client.Op <- None
        | None -> ()

    and abandon (client: Client) =
        // The operation definitely did not take effect: it is left out of the history.
        log (fun () -> sprintf "client %d: operation failed definitely" client.Index)
        client.Op <- None

    /// With sessions a write is sent again (same session and number) wherever it may have been lost.
    and retries (op: ClientOp) = op.Sequence > 0L || op.OpensSession

    and resend (client: Client) (delay: int) =
        let op = client.Op.Value
        log (fun () -> sprintf "client %d: sending request %d again" client.Index op.Sequence)
        op.Target <- prng.Below nodes.Count
        op.Phase <- Phase.Sending
        op.Rid <- 0L
        op.RetryAt <- now + int64 delay

    and onAccepted (node: Node<'S>) rid index term =
        match clientOf rid with
        | Some c when c.Op.Value.Target = node.Slot ->
            c.Op.Value.Phase <- Phase.AwaitApply(node.Slot, index, term)
            c.Op.Value.ResendAt <- now + int64 options.ResendTicks
            if node.Applied >= index then () // the outcome is unknown: it waits for the timeout
            else node.AcceptedWaits.Add(struct (rid, index, term))
        | _ -> ()

    and resolveWrites (node: Node<'S>) (entry: Entry) (result: LogResult option) =
        if node.AcceptedWaits.Count > 0 then
            let due = node.AcceptedWaits |> Seq.filter (fun struct (_, i, _) -> i = entry.Index) |> List.ofSeq
            node.AcceptedWaits.RemoveAll(fun struct (_, i, _) -> i <= entry.Index) |> ignore
            for struct (rid, _, term) in due do
                match clientOf rid with
                | Some c ->
                    if term = entry.Term then
                        inv.ObserveAcknowledged(entry.Index, term)
                        match result with
                        | Some(LogResult.SessionOpened id) when c.Op.Value.OpensSession ->
                            log (fun () -> sprintf "client %d: session %d opened" c.Index id)
                            c.Session <- id
                            c.Op <- None
                        | Some r ->
                            match Sessions.resultOf r with
                            | Some done' -> finish c (Completion.Returned(0L, Output.Result done'))
                            | None ->
                                // The session is gone: whether an earlier attempt took effect is unknown.
                                c.Session <- 0L
                                finish c Completion.TimedOut
                        | None -> inv.Fail("interpreter contract", sprintf "%s: the entry at %d accepted for a write is not a command" node.Name entry.Index)
                    elif retries c.Op.Value then resend c 1
                    else abandon c
                | None -> ()

    and onReadReady (node: Node<'S>) rids index =
        for rid in rids do
            match clientOf rid with
            | Some c when c.Op.Value.Target = node.Slot ->
                c.Op.Value.Phase <- Phase.AwaitRead node.Slot
                node.WaitingReads.Add(struct (rid, index))
            | _ -> ()
        serveReads node

    and serveReads (node: Node<'S>) =
        if node.WaitingReads.Count > 0 then
            let ready = node.WaitingReads |> Seq.filter (fun struct (_, i) -> i <= node.Applied) |> List.ofSeq
            node.WaitingReads.RemoveAll(fun struct (_, i) -> i <= node.Applied) |> ignore
            for struct (rid, _) in ready do
                match clientOf rid with
                | Some c ->
                    match c.Op.Value.Action with
                    | Action.Get key -> finish c (Completion.Returned(0L, Output.Value(KvModel.get node.Kv.Data key)))
                    | _ -> ()
                | None -> ()

    and onReject (node: Node<'S>) rid why =
        match clientOf rid with
        | Some c when c.Op.Value.Target = node.Slot ->
            let op = c.Op.Value
            let retry target delay =
                op.Target <- target
                op.Phase <- Phase.Sending
                op.Rid <- 0L
                op.RetryAt <- now + int64 delay
            match why, op.Action with
            | Rejection.NotLeader(Some hint), _ when slotOf.ContainsKey hint -> retry slotOf[hint] 1
            | Rejection.NotLeader _, _ -> retry (prng.Below nodes.Count) 3
            | (Rejection.TransferInProgress | Rejection.ConfigChangeInProgress | Rejection.Overloaded), _ -> retry op.Target 3
            | Rejection.LeadershipLost, Action.Get _ -> retry (prng.Below nodes.Count) 2
            | Rejection.LeadershipLost, _ when retries op -> resend c 2
            | Rejection.LeadershipLost, _ -> finish c Completion.TimedOut
            | (Rejection.Invalid _ | Rejection.TransferTimedOut | Rejection.TransferOutcomeUnknown), _ -> abandon c
        | _ ->
            match configOp with
            | Some op when op.Rid = rid ->
                log (fun () -> sprintf "operator: %A rejected by %s: %A" op.Change node.Name why)
                match why with
                | Rejection.NotLeader(Some hint) when slotOf.ContainsKey hint ->
                    op.Target <- slotOf[hint]
                    op.RetryAt <- now + 1L
                | Rejection.Invalid _ -> configOp <- None
                | _ ->
                    op.Target <- prng.Below nodes.Count
                    op.RetryAt <- now + 5L
                op.Rid <- 0L
            | _ -> ()

    and onCompleted (node: Node<'S>) rid =
        match configOp with
        | Some op when op.Rid = rid ->
            log (fun () -> sprintf "operator: %A completed by %s" op.Change node.Name)
            changes <- changes + 1
            configOp <- None
        | _ -> ()

    // ----- requests

    let sendClient (client: Client) =
        match client.Op with
        | Some op when op.Phase = Phase.Sending && op.RetryAt <= now ->
            let node = nodes[op.Target]
            if not node.Alive then
                // Connection refused: try another node a little later.
                op.Target <- prng.Below nodes.Count
                op.RetryAt <- now + 2L
            else
                let rid = newRid ()
                op.Rid <- rid
                op.RetryAt <- Int64.MaxValue
                match op.Action with
                | Action.Get _ -> step node (Event.Read rid)
                | Action.Write command ->
                    let logCommand =
                        if op.OpensSession then LogCommand.OpenSession(now, int64 options.SessionTimeout)
                        elif op.Sequence > 0L then
                            let stamp = { Session = client.Session; Sequence = op.Sequence; Acknowledged = op.Sequence; Time = now }
                            LogCommand.InSession(stamp, command)
                        else LogCommand.Plain command
                    step node (Event.Propose(rid, LogCommandCodec.encode logCommand))
        | _ -> ()

    let startOp (client: Client) (action: Action) (sequence: int64) (opensSession: bool) =
        let op =
            { Action = action
              Invoked = clock
              Deadline = now + int64 options.ClientTimeout
              Sequence = sequence
              OpensSession = opensSession
              Target = prng.Below nodes.Count
              Rid = 0L
              RetryAt = now
              ResendAt = Int64.MaxValue
              Phase = Phase.Sending }
        client.Op <- Some op
        sendClient client

    let newOp (client: Client) =
        let key = keys[prng.Below keys.Length]
        let value () =
            client.Written <- client.Written + 1
            Text.Encoding.ASCII.GetBytes(sprintf "c%dv%d" client.Index client.Written)
        let recent () =
            // A value some client may have written to the key: makes compare-and-swap succeed sometimes.
            if prng.Chance 30 then None
            else
                let c = prng.Below clients.Length
                let n = clients[c].Written
                if n = 0 then None else Some(Text.Encoding.ASCII.GetBytes(sprintf "c%dv%d" c (max 1 (n - prng.Below 2))))
        let action =
            match prng.Below 10 with
            | 0 | 1 | 2 | 3 -> Action.Get key
            | 4 | 5 | 6 -> Action.Write(Command.Put(key, value ()))
            | 7 -> Action.Write(Command.Delete key)
            | _ ->
                let expected = recent ()
                Action.Write(Command.CompareAndSwap(key, expected, (if prng.Chance 20 then None else Some(value ()))))
        let sequence =
            match action with
            | Action.Write _ when options.Sessions && client.Session > 0L ->
                client.NextSequence <- client.NextSequence + 1L
                client.NextSequence - 1L
            | _ -> 0L
        clock <- clock + 1L
        startOp client action sequence false

    let openSession (client: Client) = startOp client (Action.Write(Command.Delete "session")) 0L true

    let runClients () =
        for client in clients do
            if not (failed ()) then
                match client.Op with
                | Some op when op.Deadline <= now ->
                    match op.Action with
                    | Action.Get _ -> finish client Completion.TimedOut
                    | Action.Write _ -> finish client Completion.TimedOut
                | Some op when retries op && op.ResendAt <= now && (match op.Phase with Phase.AwaitApply _ -> true | _ -> false) ->
                    resend client 0
                    sendClient client
                | Some _ -> sendClient client
                | None ->
                    if clientsOn && prng.Chance options.OpPercent then
                        if options.Sessions && client.Session = 0L then openSession client else newOp client

    let runOperator () =
        match configOp with
        | Some op when op.Deadline <= now ->
            log (fun () -> sprintf "operator: %A timed out" op.Change)
            configOp <- None
        | Some op when op.Rid = 0L && op.RetryAt <= now ->
            let node = nodes[op.Target]
            if node.Alive then
                op.Rid <- newRid ()
                step node (Event.ChangeConfig(op.Rid, op.Change))
            else
                op.Target <- prng.Below nodes.Count
                op.RetryAt <- now + 2L
        | _ -> ()

    // ----- faults

    let slot (k: int) = ((k % nodes.Count) + nodes.Count) % nodes.Count

    let crash (node: Node<'S>) =
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

    let addNode (bootstrap: Configuration) =
        let slotIndex = nodes.Count
        let node = Node<'S>(slotIndex, bootstrap)
        nodes.Add node
        slotOf[node.Id] <- slotIndex
        node

    let leaderSlot () =
        nodes |> Seq.tryFind (fun n -> n.Alive && (match n.State with ValueSome s -> reducer.Role s = Role.Leader | _ -> false))

    let applyFault (fault: Fault) =
        log (fun () -> sprintf "fault: %A" fault)
        match fault with
        | Fault.Partition side ->
            let left = side |> List.map slot |> Set.ofList
            for a in nodes do
                for b in nodes do
                    if left.Contains a.Slot <> left.Contains b.Slot then net.Block(a.Id, b.Id)
        | Fault.Isolate k ->
            let x = nodes[slot k]
            for n in nodes do
                if n.Slot <> x.Slot then
                    net.Block(x.Id, n.Id)
                    net.Block(n.Id, x.Id)
        | Fault.OneWay(a, b) -> net.Block(nodes[slot a].Id, nodes[slot b].Id)
        | Fault.Heal -> net.HealAll()
        | Fault.Crash k -> crash nodes[slot k]
        | Fault.Restart k ->
            let n = nodes[slot k]
            if not n.Alive then boot n
        | Fault.Loss p -> net.LossPercent <- max 0 (min 60 p)
        | Fault.Duplicate p -> net.DuplicatePercent <- max 0 (min 60 p)
        | Fault.Delay d -> net.MaxDelay <- max 1 (min 20 d)
        | Fault.SlowDisk d -> diskMax <- max 0 (min 10 d)
        | Fault.AddNode ->
            if nodes.Count < options.MaxNodes && configOp.IsNone then
                let node = addNode Configuration.Empty
                boot node
                configOp <-
                    Some
                        { Change = ConfigChange.AddServer(node.Id, node.Name)
                          Deadline = now + 100L
                          Target = prng.Below nodes.Count
                          Rid = 0L
                          RetryAt = now }
        | Fault.RemoveNode k ->
            if configOp.IsNone then
                let n = nodes[slot k]
                configOp <-
                    Some
                        { Change = ConfigChange.RemoveServer n.Id
                          Deadline = now + 100L
                          Target = prng.Below nodes.Count
                          Rid = 0L
                          RetryAt = now }
        | Fault.Transfer k ->
            match leaderSlot () with
            | Some leader -> step leader (Event.TransferLeadership(newRid (), nodes[slot k].Id))
            | None -> ()

    // ----- time

    let partial = PartialLiveness(max 1 options.PartialLivenessTicks)

    let checkPartialLiveness () =
        let view =
            [| for n in nodes ->
                   match n.State with
                   | ValueSome s when n.Alive ->
                       { Id = n.Id
                         Alive = true
                         Config = reducer.Configuration s
                         CommittingLeader =
                           reducer.Role s = Role.Leader && n.Written.TermAt(reducer.CommitIndex s) = ValueSome(reducer.Term s) }
                   | _ -> { Id = n.Id; Alive = false; Config = Configuration.Empty; CommittingLeader = false } |]
        // A network as good as after healing (Execute): lossless, short delays, fast disks.
        let good = net.LossPercent = 0 && net.MaxDelay <= 3 && diskMax <= 2
        match partial.Observe(now, good, view, fun a b -> net.Connected(nodes[a].Id, nodes[b].Id)) with
        | Some d ->
            let roles =
                [ for n in nodes ->
                      match n.State with
                      | ValueSome s when n.Alive -> sprintf "%s %A term %d commit %d" n.Name (reducer.Role s) (reducer.Term s) (reducer.CommitIndex s)
                      | _ -> sprintf "%s down" n.Name ]
            inv.Fail("liveness", sprintf "under partial failure: %s: %s" d (String.concat "; " roles))
        | None -> ()

    let tick () =
        now <- now + 1L
        inv.Tick <- now
        // 1. messages due
        let mutable go = true
        while go && not (failed ()) do
            match net.TryReceive now with
            | Some m ->
                match slotOf.TryGetValue m.Envelope.To with
                | true, s ->
                    let node = nodes[s]
                    if node.Alive then
                        match m.Envelope.Message, m.Attachment with
                        | Message.Snapshot request, Some kv -> node.Staged[request.Staged] <- (request.Meta, kv)
                        | _ -> ()
                        step node (Event.Receive m.Envelope)
                | _ -> ()
            | None -> go <- false
        // 2. disks
        for node in nodes do
            if not (failed ()) then runDisk node
        // 3. clients and operator
        runClients ()
        runOperator ()
        // 4. clocks
        for node in nodes do
            if not (failed ()) && node.Alive && not (prng.Chance options.TickSkipPercent) then step node Event.Tick
        // 5. liveness under partial failure
        if options.PartialLivenessTicks > 0 && not (failed ()) then checkPartialLiveness ()

    let describeNodes () =
        [ for n in nodes ->
              match n.State with
              | ValueSome s when n.Alive ->
                  sprintf "%s %A term %d commit %d last %d applied %d" n.Name (reducer.Role s) (reducer.Term s) (reducer.CommitIndex s) n.Written.LastIndex n.Applied
              | _ -> sprintf "%s down" n.Name ]
        |> String.concat "; "

    let converged () =
        match leaderSlot () with
        | None -> false
        | Some leader ->
            let state = leader.State.Value
            let last = leader.Written.LastIndex
            let members = (reducer.Configuration state).Members
            reducer.CommitIndex state = last
            && leader.Applied = last
            && nodes
               |> Seq.forall (fun n ->
                   not (members.ContainsKey n.Id)
                   || (n.Alive && n.Applied = last && KvModel.same n.Kv.Data leader.Kv.Data && n.Kv.Sessions = leader.Kv.Sessions))

    member _.Execute() : RunResult =
        let initial = { Members = Map.ofList [ for s in 0 .. schedule.Nodes - 1 -> nodeId s, { Id = nodeId s; Address = nodeName s; Voter = true } ] }
        for _ in 1 .. schedule.Nodes do
            addNode initial |> ignore
        for node in nodes do
            if not (failed ()) then boot node
        // Faults, at their ticks.
        let mutable pending = schedule.Steps
        let mutable wait = match pending with s :: _ -> max 0 s.After | [] -> 0
        let mutable tail = options.TailTicks
        while not (failed ()) && (not pending.IsEmpty || tail > 0) do
            while not (failed ()) && not pending.IsEmpty && wait = 0 do
                applyFault pending.Head.Fault
                pending <- pending.Tail
                wait <- match pending with s :: _ -> max 0 s.After | [] -> 0
            if pending.IsEmpty then tail <- tail - 1
            else wait <- wait - 1
            if not (failed ()) then tick ()
        // Heal everything; a leader must emerge and every member converge.
        if not (failed ()) then
            log (fun () -> "healing")
            net.HealAll()
            net.LossPercent <- 0
            net.DuplicatePercent <- 0
            net.MaxDelay <- min net.MaxDelay 3
            diskMax <- min diskMax 2
            clientsOn <- false
            for node in nodes do
                if not node.Alive && not (failed ()) then boot node
            let healedAt = now
            let mutable leaderSeen = false
            let mutable done' = false
            while not (failed ()) && not done' do
                if not leaderSeen && (leaderSlot ()).IsSome then
                    leaderSeen <- true
                    leaderAfterHeal <- int (now - healedAt)
                if converged () then
                    done' <- true
                    convergedAfterHeal <- int (now - healedAt)
                elif not leaderSeen && now - healedAt >= int64 options.LeaderTicks then
                    inv.Fail("liveness", sprintf "no leader %d ticks after healing: %s" options.LeaderTicks (describeNodes ()))
                elif now - healedAt >= int64 options.LivenessTicks then
                    inv.Fail("liveness", sprintf "%d ticks after healing, no leader with every member caught up: %s" options.LivenessTicks (describeNodes ()))
                else tick ()
            // An acknowledged write is never lost: the converged state includes every one.
            if not (failed ()) then
                match leaderSlot () with
                | Some leader when inv.MaxAcknowledged > leader.Applied ->
                    inv.Fail("acknowledged write lost", sprintf "writes were acknowledged up to index %d but the converged cluster has applied only %d" inv.MaxAcknowledged leader.Applied)
                | _ -> ()
        // Outstanding operations have an unknown outcome.
        for c in clients do
            finish c Completion.TimedOut
        let history = List.ofSeq history
        if not (failed ()) then
            match Linearizability.check history with
            | NotLinearizable _ as verdict -> inv.Fail("linearizability", Linearizability.describe verdict)
            | Unknown _ -> unchecked <- true
            | Linearizable -> ()
        { Schedule = schedule
          Violation = inv.Violation
          History = history
          Stats =
            { Ticks = now
              Steps = inv.Step
              Messages = net.Sent
              Dropped = net.Dropped
              Completed = completed
              TimedOut = timedOut
              Leaders = leaderTerms.Count
              Crashes = crashes
              SnapshotsInstalled = installs
              ConfigChanges = changes
              LeaderAfterHeal = leaderAfterHeal
              ConvergedAfterHeal = convergedAfterHeal
              Unchecked = unchecked
              Committed = inv.MaxCommitted
              PartialLivenessWorst = partial.Worst
              PartialLivenessChecked = partial.AppliedTicks }
          Trace = List.ofSeq trace }

/// Runs one schedule to completion (or to the first violation) and checks the client history for
/// linearizability. Deterministic: the same reducer, settings and schedule give the same result.
let run (reducer: Reducer<'S>) (settings: Settings) (schedule: Schedule) : RunResult =
    Run<'S>(reducer, settings, schedule).Execute()

/// Reducer options that make a short simulated run exercise everything: fast elections and heartbeats, a small
/// in-memory window (LoadEntries), frequent snapshots and compaction, small appends, quick learner promotion.
let simulationOptions: Options =
    { Options.defaults with
        HeartbeatTicks = 2
        ElectionTicksMin = 10
        ElectionTicksMax = 20
        MaxInflight = 4
        MaxEntriesPerAppend = 8
        WindowSize = 16
        SnapshotThreshold = 20L
        CompactionTail = 5L
        PromotionLag = 4L }

/// Skiff's Raft reducer (Raft.init / Raft.step) as the simulator drives it, with the given reducer options.
let raft (options: Options) : Reducer<State> =
    { Init =
        fun boot ->
            let start =
                Start.ofStorage boot.Id options boot.Seed boot.HardState boot.Snapshot boot.Entries boot.Applied boot.Bootstrap
            // Start.ofStorage derives term boundaries from the entries only; when the log keeps a tail behind the
            // snapshot, the term of the entry before the first one must be given too (see Start.TermBoundaries).
            let baseIndex, baseTerm = boot.LogBase
            let snapshotIndex = boot.Snapshot |> Option.map (fun m -> m.Index) |> Option.defaultValue 0L
            let start =
                if baseIndex > 0L && baseIndex <> snapshotIndex && not boot.Entries.IsEmpty then
                    { start with TermBoundaries = start.TermBoundaries @ [ baseIndex, baseTerm ] }
                else start
            Raft.init start
      Step = Raft.step
      Role = Raft.role
      Term = Raft.term
      Leader = Raft.leader
      CommitIndex = Raft.commitIndex
      Configuration = Raft.configuration }

/// A multi-line report of a run: the schedule (replayable with Schedule.parse), the violation, the counters.
let describe (result: RunResult) : string =
    [ yield "schedule: " + Schedule.format result.Schedule
      match result.Violation with
      | Some v -> yield "VIOLATION " + string v
      | None -> yield "no violation"
      yield sprintf "stats: %A" result.Stats ]
    |> String.concat Environment.NewLine
