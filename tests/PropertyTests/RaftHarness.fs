/// A small synchronous harness for the Raft reducer tests: a few reducers, a FIFO of messages and local events
/// (Persisted, EntriesLoaded), in-memory "storage" per node, and switches to isolate nodes or hold writes.
module Skiff.PropertyTests.RaftHarness

open System
open System.Collections.Generic
open Skiff.Core

/// Deterministic node ids: n1, n2, ...
let nid (n: int) : NodeId = Guid(sprintf "00000000-0000-0000-0000-%012d" n)

/// Test options: small, fixed timings.
let opts: Options = { Options.defaults with HeartbeatTicks = 2; ElectionTicksMin = 10; ElectionTicksMax = 20 }

/// A configuration where every given node is a voter.
let votersConfig (ids: NodeId list) : Configuration =
    { Members = ids |> List.map (fun id -> id, { Id = id; Address = string id; Voter = true }) |> Map.ofList }

/// Messages sent in an effect list.
let sends (effects: Effect list) : Envelope list =
    effects
    |> List.choose (function
        | Effect.Send e -> Some e
        | _ -> None)

/// Index of the first effect satisfying `f`, or -1.
let indexOf (f: Effect -> bool) (effects: Effect list) : int = effects |> List.tryFindIndex f |> Option.defaultValue -1

/// Start.ofStore for storage whose log begins right after the snapshot, or at index 1 (the entry before the first
/// one is then the snapshot's, or none), as in most tests. A log that keeps a tail behind the snapshot needs the
/// real base term: build the Stored record by hand.
let startFrom
    id
    options
    seed
    (hard: HardState)
    (snapshot: SnapshotMeta option)
    (entries: Entry list)
    (applied: LogIndex)
    bootstrap
    : Start =
    let baseIndex, baseTerm =
        match snapshot with
        | Some m -> m.Index, m.Term
        | None -> 0L, 0L
    Start.ofStore
        id
        options
        seed
        { HardState = hard
          Snapshot = snapshot
          Entries = entries
          BaseIndex = baseIndex
          BaseTerm = baseTerm
          Applied = applied
          CommitHint = 0L
          Bootstrap = bootstrap }

/// One simulated node: reducer state plus what the interpreter would keep.
type Node =
    {
        mutable State: State
        /// Durable entries by index.
        Storage: SortedDictionary<LogIndex, Entry>
        /// Everything applied, in order.
        Applied: List<Entry>
        /// Every effect ever emitted, in order.
        Effects: List<Effect>
    }

/// A synchronous cluster of reducers.
type Cluster(ids: NodeId list, options: Options, ?config: Configuration) =
    let config = defaultArg config (votersConfig ids)
    let nodes = Dictionary<NodeId, Node>()
    let queue = List<NodeId * Event>()
    let hard = Dictionary<NodeId, HardState>()
    let isolated = HashSet<NodeId>()
    let holdPersist = HashSet<NodeId>()
    let held = Dictionary<NodeId, List<Event>>()
    let mutable dropFilter: Envelope -> bool = fun _ -> false

    let rec handle (id: NodeId) (effects: Effect list) =
        let node = nodes[id]
        for e in effects do
            node.Effects.Add e
            match e with
            | Effect.PersistHardState h -> hard[id] <- h
            | Effect.Send env ->
                if not (isolated.Contains env.From || isolated.Contains env.To || dropFilter env) && nodes.ContainsKey env.To then
                    queue.Add(env.To, Event.Receive env)
            | Effect.PersistEntries entries ->
                match entries with
                | [] -> ()
                | first :: _ ->
                    for k in List.ofSeq node.Storage.Keys do
                        if k >= first.Index then
                            node.Storage.Remove k |> ignore
                    for en in entries do
                        node.Storage[en.Index] <- en
                    let last = List.last entries
                    let ev = Event.Persisted(last.Index, last.Term)
                    if holdPersist.Contains id then held[id].Add ev else queue.Add(id, ev)
            | Effect.Apply entries -> node.Applied.AddRange entries
            | Effect.LoadEntries(purpose, from, upTo) ->
                let loaded =
                    [ for i in from..upTo do
                          match node.Storage.TryGetValue i with
                          | true, en -> yield en
                          | _ -> () ]
                queue.Add(id, Event.EntriesLoaded(purpose, loaded))
            | Effect.CompactLog upTo ->
                for k in List.ofSeq node.Storage.Keys do
                    if k <= upTo then
                        node.Storage.Remove k |> ignore
            | Effect.InstallSnapshot(_, meta) ->
                node.Storage.Clear()
                // The state machine is replaced: mark the snapshot's index as applied (a repeated install of the
                // same snapshot changes nothing).
                if node.Applied.Count = 0 || node.Applied[node.Applied.Count - 1].Index < meta.Index then
                    node.Applied.Add { Index = meta.Index; Term = meta.Term; Payload = Payload.Noop }
            | Effect.TakeSnapshot meta -> queue.Add(id, Event.SnapshotTaken meta)
            | Effect.SendSnapshot(target, term, meta) ->
                let request = { Term = term; Leader = id; Meta = meta; Staged = "staged" }
                let env = { From = id; To = target; Message = Message.Snapshot request }
                if not (isolated.Contains id || isolated.Contains target || dropFilter env) && nodes.ContainsKey target then
                    queue.Add(target, Event.Receive env)
            | _ -> ()

    do
        ids
        |> List.iteri (fun k id ->
            let s, effects = Raft.init (Start.fresh id options (uint64 (k + 1) * 7919UL) config)
            nodes[id] <- { State = s; Storage = SortedDictionary(); Applied = List(); Effects = List() }
            held[id] <- List()
            handle id effects)

    /// The node with this id.
    member _.Node(id: NodeId) = nodes[id]
    /// The reducer state of this node.
    member _.State(id: NodeId) = nodes[id].State
    /// Adds a node (e.g. a joiner) with its own Start.
    member _.Add(start: Start) =
        let s, effects = Raft.init start
        nodes[start.Id] <- { State = s; Storage = SortedDictionary(); Applied = List(); Effects = List() }
        held[start.Id] <- List()
        handle start.Id effects
    /// Feeds one event to a node and queues what follows; returns its effects.
    member _.Step(id: NodeId, ev: Event) : Effect list =
        let node = nodes[id]
        let s, effects = Raft.step node.State ev
        node.State <- s
        handle id effects
        effects
    /// Delivers queued messages and local events until nothing is left (bounded).
    member this.Deliver() =
        let mutable budget = 100000
        while queue.Count > 0 && budget > 0 do
            budget <- budget - 1
            let id, ev = queue[0]
            queue.RemoveAt 0
            match ev with
            | Event.Receive env when isolated.Contains env.To || isolated.Contains env.From -> ()
            | _ -> this.Step(id, ev) |> ignore
    /// Delivers up to `n` queued items picked at random (reordering), dropping each message with probability `loss`.
    member this.DeliverRandom(rng: Random, n: int, loss: float) =
        let mutable k = 0
        while queue.Count > 0 && k < n do
            k <- k + 1
            let i = rng.Next queue.Count
            let id, ev = queue[i]
            queue.RemoveAt i
            match ev with
            | Event.Receive env when isolated.Contains env.To || isolated.Contains env.From -> ()
            | Event.Receive _ when rng.NextDouble() < loss -> ()
            | _ -> this.Step(id, ev) |> ignore
    /// Number of queued messages and local events.
    member _.Pending = queue.Count
    /// Restarts a node from its "storage": durable hard state, stored entries, snapshot, applied index.
    member _.Restart(id: NodeId, options: Options, seed: uint64) =
        let node = nodes[id]
        let old = node.State
        // Local events of the old incarnation are lost with it; messages in the network are kept.
        queue.RemoveAll(fun (target, ev) ->
            target = id
            && (match ev with
                | Event.Receive _ -> false
                | _ -> true))
        |> ignore
        let snapshot = if (Raft.snapshot old).Index > 0L then Some(Raft.snapshot old) else None
        let entries = List.ofSeq node.Storage.Values
        let applied = if node.Applied.Count = 0 then 0L else node.Applied[node.Applied.Count - 1].Index
        let applied = max applied (snapshot |> Option.map (fun m -> m.Index) |> Option.defaultValue 0L)
        let hs =
            match hard.TryGetValue id with
            | true, h -> h
            | _ -> { Term = 0L; VotedFor = None }
        let start = startFrom id options seed hs snapshot entries applied config
        let s, effects = Raft.init start
        node.State <- s
        handle id effects
    member this.TickAll() =
        for id in ids do
            if nodes.ContainsKey id then
                this.Step(id, Event.Tick) |> ignore
                this.Deliver()
    /// Ticks one node `n` times, delivering after each.
    member this.Tick(id: NodeId, n: int) =
        for _ in 1..n do
            this.Step(id, Event.Tick) |> ignore
            this.Deliver()
    /// Ticks the given node until it is leader (delivering everything), at most 200 ticks.
    member this.Elect(id: NodeId) =
        let mutable k = 0
        while nodes[id].State.Role <> Role.Leader && k < 200 do
            this.Step(id, Event.Tick) |> ignore
            this.Deliver()
            k <- k + 1
        if nodes[id].State.Role <> Role.Leader then
            failwithf "node did not become leader: %A" nodes[id].State.Role
    /// Cuts a node off from everyone (messages to and from it are dropped).
    member _.Isolate(id: NodeId) = isolated.Add id |> ignore
    /// Reconnects a node.
    member _.Heal(id: NodeId) = isolated.Remove id |> ignore
    /// Drops messages matching the filter.
    member _.DropWhere(f: Envelope -> bool) = dropFilter <- f
    /// Holds back Persisted events of a node until Release.
    member _.HoldPersist(id: NodeId) = holdPersist.Add id |> ignore
    /// Releases held Persisted events.
    member _.Release(id: NodeId) =
        holdPersist.Remove id |> ignore
        for ev in held[id] do
            queue.Add(id, ev)
        held[id].Clear()
    /// The ids of all nodes.
    member _.Ids = List.ofSeq nodes.Keys
    /// The current leader, if exactly one node thinks it leads in the highest term.
    member _.Leader =
        nodes.Values
        |> Seq.filter (fun n -> n.State.Role = Role.Leader)
        |> Seq.sortByDescending (fun n -> n.State.Term)
        |> Seq.tryHead
        |> Option.map (fun n -> n.State.Id)
