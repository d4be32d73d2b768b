/// The clients: concurrent workers doing get, put, delete and compare-and-swap on a few keys through random members,
/// recording every operation with its invocation and completion time (µs since the harness started) and its result.
module Skiff.Faults.Workload

open System
open System.Collections.Concurrent
open System.Diagnostics
open System.Text
open System.Threading
open System.Threading.Tasks
open Skiff
open Skiff.Core
open Skiff.Simulation
open Skiff.Simulation.Linearizability
open Skiff.Net.Runtime
open Skiff.Faults.Cluster

/// Did this failed write surely not take effect? The error says so (issue 11): `NotApplied` for a write refused
/// before it was proposed or never delivered; every other failure leaves the outcome unknown (indeterminate).
let surelyNotApplied (e: SkiffException) : bool = e.Outcome = WriteOutcome.NotApplied

/// One recorded operation: the checker's view plus what a person needs to read a timeline.
type Record =
    {
        Op: Operation
        Member: int
        /// The error text for failed operations ("" when it returned).
        Error: string
        /// Completion time even for failed operations (the checker treats those as never returning).
        Ended: int64
    }

let bytes (s: string) = Encoding.UTF8.GetBytes s
let text (b: byte[]) = Encoding.UTF8.GetString b

/// The workload's keys.
let keys = [| "k0"; "k1"; "k2"; "k3"; "k4" |]

type Options =
    {
        Clients: int
        /// Per-operation deadline.
        DeadlineMs: int
        /// Pause between a client's operations (random in [0, ThinkMs]) to keep the load modest on 2 cores.
        ThinkMs: int
        /// Broken on purpose, to show the harness catches stale reads: gets are served by the contacted member's own
        /// state machine (ReadConsistency.Stale, no ReadIndex) but recorded as linearizable reads.
        StaleReads: bool
    }

let defaults = { Clients = 10; DeadlineMs = 2000; ThinkMs = 20; StaleReads = false }

/// Runs the clients until `stop` is cancelled; `targets ()` are the members a client may pick from right now.
/// Returns the history (every operation that was invoked, completed or not).
let run (options: Options) (seed: int) (members: Member[]) (targets: unit -> int[]) (stop: CancellationToken) : Task<Record list> =
    let history = ConcurrentQueue<Record>()
    // One client object per member: a single address each, so an operation goes exactly where it was sent. Writes are
    // in the client's session and resent (to that member) after any failure that may have hidden their outcome, as
    // the library's Client does.
    let clients = members |> Array.map (fun m -> (new SkiffGrpcClient([ m.Address ])).UseSessions())
    let worker (c: int) =
        task {
            let random = Random(seed * 7919 + c)
            let lastSeen = Collections.Generic.Dictionary<string, byte[] option>()
            let mutable n = 0
            while not stop.IsCancellationRequested do
                let candidates = targets ()
                if candidates.Length = 0 then
                    do! Task.Delay 50
                else
                    let slot = candidates[random.Next candidates.Length]
                    let client = clients[slot - 1]
                    let key = keys[random.Next keys.Length]
                    n <- n + 1
                    let fresh = sprintf "c%d-%d" c n
                    let action =
                        match random.Next 10 with
                        | 0
                        | 1
                        | 2
                        | 3 -> Action.Get key
                        | 4
                        | 5
                        | 6 -> Action.Write(Command.Insert(key, bytes fresh))
                        | 7 -> Action.Write(Command.Remove key)
                        | _ ->
                            let expected =
                                match lastSeen.TryGetValue key with
                                | true, v -> v
                                | _ -> None
                            let next = if random.Next 8 = 0 then None else Some(bytes fresh)
                            Action.Write(Command.CompareAndSwap(key, expected, next))
                    use cts = new CancellationTokenSource(options.DeadlineMs)
                    let invoked = now ()
                    let! outcome =
                        task {
                            try
                                match action with
                                | Action.Get k ->
                                    let! v =
                                        client.GetAsync(
                                            k,
                                            (if options.StaleReads then ReadConsistency.Stale else ReadConsistency.Linearizable),
                                            cts.Token
                                        )
                                    let v = if isNull v then None else Some v
                                    lastSeen[k] <- v
                                    return Ok(Output.Value v)
                                | Action.Write(Command.Insert(k, v)) ->
                                    let! _ = client.InsertAsync(k, v, cts.Token)
                                    lastSeen[k] <- Some v
                                    return Ok(Output.Result CommandResult.Done)
                                | Action.Write(Command.Remove k) ->
                                    let! _ = client.RemoveAsync(k, cts.Token)
                                    lastSeen[k] <- None
                                    return Ok(Output.Result CommandResult.Done)
                                | Action.Write(Command.CompareAndSwap(k, e, v)) ->
                                    let! swapped = client.CompareAndSwapAsync(k, Option.toObj e, Option.toObj v, cts.Token)
                                    if swapped then lastSeen[k] <- v else lastSeen.Remove k |> ignore
                                    return Ok(Output.Result(CommandResult.Swapped swapped))
                            with
                            | :? SkiffException as e -> return Error(e.Message, surelyNotApplied e)
                            | :? WriteCancelledException as e ->
                                return Error("deadline passed: " + e.Message, e.Outcome = WriteOutcome.NotApplied)
                            | :? OperationCanceledException -> return Error("deadline passed (cancelled)", false)
                            | e -> return Error(e.GetType().Name + ": " + e.Message, false)
                        }
                    let ended = now ()
                    match outcome with
                    | Ok output ->
                        history.Enqueue
                            { Op = { Client = c; Invoked = invoked; Action = action; Completion = Completion.Returned(ended, output) }
                              Member = slot
                              Error = ""
                              Ended = ended }
                    | Error(message, notApplied) ->
                        // A write that surely did not apply is left out of the history (it is recorded in the
                        // timeline file only through its error); every other failure is indeterminate.
                        if not notApplied then
                            history.Enqueue
                                { Op = { Client = c; Invoked = invoked; Action = action; Completion = Completion.TimedOut }
                                  Member = slot
                                  Error = message
                                  Ended = ended }
                        lastSeen.Remove key |> ignore
                    let think = random.Next(options.ThinkMs + 1)
                    if think > 0 then
                        try
                            do! Task.Delay(think, stop)
                        with _ ->
                            ()
        }
    task {
        let workers = [| for c in 1 .. options.Clients -> Task.Run<unit>(fun () -> worker c) |]
        let! _ = Task.WhenAll workers
        for c in clients do
            c.Dispose()
        return history |> Seq.sortBy (fun r -> r.Op.Invoked) |> List.ofSeq
    }

/// Describes a record for the history file: the checker's line plus the member and any error.
let describe (r: Record) =
    let basic = Operation.describe r.Op
    let basic = basic.Replace(sprintf "client %d " r.Op.Client, sprintf "client %d via member %d " r.Op.Client r.Member)
    if r.Error = "" then
        basic
    else
        sprintf "%s (after %.3f s: %s)" basic (float (r.Ended - r.Op.Invoked) / 1e6) r.Error
