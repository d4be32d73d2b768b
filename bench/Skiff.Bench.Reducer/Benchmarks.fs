/// The reducer's hot cycles. Each benchmark method is one whole cycle; `Cycle*` methods are shared with the
/// --quick Stopwatch mode so that both modes measure the same thing.
module Skiff.Bench.Reducer.Benchmarks

open BenchmarkDotNet.Attributes
open Skiff.Core
open Driver

/// Warm-up history: enough for the 4096-entry window to be full and trimming, and for a snapshot+compaction.
let warmEntries = 12_000

/// Leader: `batch` Propose events, then everything they cause (appends to 2 followers, their acks, the leader's
/// Persisted, commit, Apply, heartbeats of the commit index) until quiet.
let leaderCycle (d: Driver) (batch: int) (reqId: int64 byref) =
    for _ in 1..batch do
        reqId <- reqId + 1L
        d.Enqueue(Event.Propose(reqId, command))
    d.Drain()

/// Follower: one AppendEntries carrying `batch` entries, its PersistEntries/AppendReply and its Persisted.
let followerCycle (f: Follower) (batch: int) = f.Append batch

/// ReadIndex: `reads` Read events arriving together, then the heartbeat rounds that confirm them, until all are
/// answered with ReadReady.
let readCycle (d: Driver) (reads: int) (reqId: int64 byref) =
    for _ in 1..reads do
        reqId <- reqId + 1L
        d.Enqueue(Event.Read reqId)
    d.Drain()

[<MemoryDiagnoser>]
type LeaderPropose() =
    let mutable d = Unchecked.defaultof<Driver>
    let mutable reqId = 1_000_000L

    [<Params(1, 64)>]
    member val Batch = 1 with get, set

    [<GlobalSetup>]
    member _.Setup() = d <- leader warmEntries

    [<Benchmark>]
    member this.Cycle() = leaderCycle d this.Batch &reqId

[<MemoryDiagnoser>]
type FollowerAppend() =
    let mutable f = Unchecked.defaultof<Follower>

    [<Params(1, 64)>]
    member val Batch = 1 with get, set

    [<GlobalSetup>]
    member _.Setup() =
        f <- Follower(warmEntries)
        f.Warm()

    [<Benchmark>]
    member this.Cycle() = followerCycle f this.Batch

[<MemoryDiagnoser>]
type ReadIndex() =
    let mutable d = Unchecked.defaultof<Driver>
    let mutable reqId = 1_000_000L

    [<GlobalSetup>]
    member _.Setup() = d <- leader warmEntries

    [<Benchmark>]
    member _.Cycle() = readCycle d 64 &reqId
