/// Drives one reducer with synthetic peers and a synthetic disk, so that a benchmark measures `Raft.step` and
/// (almost) nothing else: every event the node would see in a healthy 3-node cluster is produced here, at once,
/// in a FIFO, and every effect is answered the way a fast interpreter would.
module Skiff.Bench.Reducer.Driver

open System
open System.Collections.Generic
open Skiff.Core

let nid (n: int) : NodeId = Guid(sprintf "00000000-0000-0000-0000-%012d" n)

let leaderId = nid 1
let followerIds = [ nid 2; nid 3 ]

let config: Configuration =
    { Members = (leaderId :: followerIds) |> List.map (fun id -> id, { Id = id; Address = string id; Voter = true }) |> Map.ofList }

/// A 100-byte command (shared: the reducer never looks inside).
let command: byte[] = Array.init 100 byte

/// One node plus the queue of events waiting for it, answered by synthetic peers and disk.
type Driver(id: NodeId) =
    let queue = Queue<Event>()
    let mutable state: State = Unchecked.defaultof<State>
    let mutable events = 0L
    let mutable applied = 0L
    let mutable readsReady = 0L
    // Bytes allocated inside Raft.step, by event kind (the effects' handling here is not counted).
    let stepBytes = Dictionary<string, int64 * int64>()

    member _.State
        with get () = state
        and set v = state <- v

    /// Events stepped so far.
    member _.Events = events
    /// Entries handed to the state machine so far.
    member _.Applied = applied
    /// Reads answered so far.
    member _.ReadsReady = readsReady

    /// Answers effects as a healthy cluster would: followers acknowledge every append at once, grant votes;
    /// the disk completes every write at once; snapshots are taken at once.
    member this.Handle(effects: Effect list) =
        for e in effects do
            match e with
            | Effect.Send env ->
                match env.Message with
                | Message.Append m ->
                    let last = m.PrevLogIndex + int64 (List.length m.Entries)
                    queue.Enqueue(
                        Event.Receive
                            { From = env.To
                              To = id
                              Message =
                                Message.AppendReply
                                    { Term = m.Term
                                      Success = true
                                      MatchIndex = last
                                      ConflictIndex = 0L
                                      ConflictTerm = None
                                      Round = m.Round } }
                    )
                | Message.Vote v ->
                    queue.Enqueue(
                        Event.Receive
                            { From = env.To; To = id; Message = Message.VoteReply { Term = v.Term; Granted = true; PreVote = v.PreVote } }
                    )
                | _ -> () // replies to a leader (follower benchmark): the leader is synthetic
            | Effect.PersistEntries es when not es.IsEmpty ->
                let last = List.last es
                queue.Enqueue(Event.Persisted(last.Index, last.Term))
            | Effect.TakeSnapshot meta -> queue.Enqueue(Event.SnapshotTaken meta)
            | Effect.Apply es -> applied <- applied + int64 (List.length es)
            | Effect.ReadReady(ids, _) -> readsReady <- readsReady + int64 (List.length ids)
            | _ -> ()

    /// Event kind -> (events stepped, bytes allocated inside Raft.step) since the last ResetStepBytes.
    member _.StepBytes = stepBytes
    member _.ResetStepBytes() = stepBytes.Clear()

    /// Steps one event and handles its effects.
    member this.Step(ev: Event) =
        let a0 = GC.GetAllocatedBytesForCurrentThread()
        let s, effects = Raft.step state ev
        let bytes = GC.GetAllocatedBytesForCurrentThread() - a0
        let kind =
            match ev with
            | Event.Receive env ->
                match env.Message with
                | Message.Append _ -> "Append"
                | Message.AppendReply _ -> "AppendReply"
                | _ -> "Receive"
            | Event.Propose _ -> "Propose"
            | Event.Persisted _ -> "Persisted"
            | Event.Read _ -> "Read"
            | Event.Tick -> "Tick"
            | _ -> "Other"
        let n, b =
            match stepBytes.TryGetValue kind with
            | true, v -> v
            | _ -> 0L, 0L
        stepBytes[kind] <- (n + 1L, b + bytes)
        state <- s
        events <- events + 1L
        this.Handle effects

    /// Steps `ev`, then everything it causes, until the queue is empty.
    member this.Run(ev: Event) =
        this.Step ev
        this.Drain()

    member this.Drain() =
        while queue.Count > 0 do
            this.Step(queue.Dequeue())

    member _.Enqueue(ev: Event) = queue.Enqueue ev

/// A leader of a 3-node cluster, elected, with `warm` entries already committed and applied (so the in-memory
/// window is full and trimming, as on a busy node).
let leader (warm: int) : Driver =
    let d = Driver(leaderId)
    let s, effects = Raft.init (Start.fresh leaderId Options.defaults 42UL config)
    d.State <- s
    d.Handle effects
    d.Drain()
    let mutable guard = 0
    while d.State.Role <> Role.Leader && guard < 1000 do
        d.Run Event.Tick
        guard <- guard + 1
    if d.State.Role <> Role.Leader then
        failwith "bench: no leader"
    for k in 1..warm do
        d.Enqueue(Event.Propose(int64 k, command))
        if k % 64 = 0 then
            d.Drain()
    d.Drain()
    d

/// A follower of a 3-node cluster following `leaderId` in term 1, with `warm` entries already appended.
type Follower(warm: int) =
    let d = Driver(followerIds.Head)
    let mutable next = 1L
    let mutable round = 0L
    do
        let s, effects = Raft.init (Start.fresh followerIds.Head Options.defaults 7UL config)
        d.State <- s
        d.Handle effects
        d.Drain()

    member _.Driver = d

    /// One AppendEntries from the leader carrying `batch` new entries (commit index trailing by one batch), then
    /// the follower's own Persisted: the follower's whole per-append cycle.
    member _.Append(batch: int) =
        let prev = next - 1L
        let entries = [ for k in 0 .. batch - 1 -> { Index = next + int64 k; Term = 1L; Payload = Payload.Command command } ]
        round <- round + 1L
        let m =
            { Term = 1L
              Leader = leaderId
              PrevLogIndex = prev
              PrevLogTerm = (if prev = 0L then 0L else 1L)
              Entries = entries
              LeaderCommit = prev
              Round = round }
        next <- next + int64 batch
        d.Run(Event.Receive { From = leaderId; To = d.State.Id; Message = Message.Append m })

    member this.Warm() =
        for _ in 1 .. warm / 64 do
            this.Append 64
