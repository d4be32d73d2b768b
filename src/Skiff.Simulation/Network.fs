namespace Skiff.Simulation

open System.Collections.Generic
open Skiff.Core

/// The simulator's one source of randomness: SplitMix64, chosen because its output is fixed by its definition
/// (System.Random's seeded sequence is an implementation detail of the runtime).
type Prng(seed: uint64) =
    let mutable state = seed

    /// The next 64 random bits (Skiff.Core's SplitMix64: one generator for the reducer and the simulator).
    member _.Next() : uint64 =
        let value, next = Rng.next state
        state <- next
        value

    /// A uniform integer in [0, bound) (0 when bound ≤ 0).
    member this.Below(bound: int) : int = if bound <= 0 then 0 else int (this.Next() % uint64 bound)

    /// True with the given probability in percent.
    member this.Chance(percent: int) : bool = percent > 0 && this.Below 100 < percent

/// A message in flight, with the simulator's bookkeeping.
type InFlight =
    {
        /// The tick at which it arrives.
        DeliverAt: int64
        /// Send order, which breaks ties between messages arriving at the same tick.
        Sequence: int64
        /// The message.
        Envelope: Envelope
        /// For Message.Snapshot: the streamed snapshot (state machine contents) that is staged on arrival.
        Attachment: KvModel.Replica option
    }

/// The simulated network: loses, duplicates, delays and reorders messages, and honours partitions, all decided
/// by the run's Prng. Messages are held in a priority queue ordered by (arrival tick, send order).
type Network(prng: Prng) =
    let queue = PriorityQueue<InFlight, struct (int64 * int64)>()
    let blocked = HashSet<struct (NodeId * NodeId)>()
    let mutable sequence = 0L

    /// Percentage of messages lost.
    member val LossPercent = 0 with get, set
    /// Percentage of messages delivered twice.
    member val DuplicatePercent = 0 with get, set
    /// Messages arrive 1 .. MaxDelay ticks after they are sent.
    member val MaxDelay = 1 with get, set
    /// Messages sent so far.
    member val Sent = 0L with get, set
    /// Messages dropped so far (loss or partition).
    member val Dropped = 0L with get, set

    /// Stops messages from `from` reaching `to` (one way).
    member _.Block(from: NodeId, ``to``: NodeId) = blocked.Add(struct (from, ``to``)) |> ignore

    /// Removes every cut.
    member _.HealAll() = blocked.Clear()

    /// Whether messages from `from` currently reach `to`.
    member _.Connected(from: NodeId, ``to``: NodeId) = not (blocked.Contains(struct (from, ``to``)))

    /// Sends a message at tick `now`: it may be lost, duplicated, and is delayed by a random number of ticks.
    member this.Send(now: int64, envelope: Envelope, attachment: KvModel.Replica option) =
        this.Sent <- this.Sent + 1L
        if prng.Chance this.LossPercent then
            this.Dropped <- this.Dropped + 1L
        else
            let copies = if prng.Chance this.DuplicatePercent then 2 else 1
            for _ in 1..copies do
                let delay = 1 + prng.Below(max 1 this.MaxDelay)
                sequence <- sequence + 1L
                let m = { DeliverAt = now + int64 delay; Sequence = sequence; Envelope = envelope; Attachment = attachment }
                queue.Enqueue(m, struct (m.DeliverAt, m.Sequence))

    /// The next message due at or before `now` whose link is connected at delivery time; messages on cut links
    /// are dropped as they fall due.
    member this.TryReceive(now: int64) : InFlight option =
        let mutable result = None
        let mutable searching = true
        while searching do
            match queue.TryPeek() with
            | true, m, _ when m.DeliverAt <= now ->
                queue.Dequeue() |> ignore
                if this.Connected(m.Envelope.From, m.Envelope.To) then
                    result <- Some m
                    searching <- false
                else
                    this.Dropped <- this.Dropped + 1L
            | _ -> searching <- false
        result

    /// Messages in flight.
    member _.InFlight = queue.Count
