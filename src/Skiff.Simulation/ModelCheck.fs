/// Model-check how an application uses Skiff: run a user's workload (ClientWorkload: their own operations, each a
/// program of the store's operations) on a simulated cluster under a fault schedule, and check the history of
/// their operations against their sequential model (ModelChecker.Model), as well as every Raft invariant and the
/// store's own linearizability.
///
/// ```fsharp
/// let result = ModelCheck.run (Simulator.raft Simulator.simulationOptions) Simulator.defaultSettings workload model schedule
/// match result.Failure with
/// | Some failure -> failwith (ModelCheck.describe result)
/// | None -> ()
/// ```
module Skiff.Simulation.ModelCheck

open System
open Skiff.Simulation.Linearizability
open Skiff.Simulation.ModelChecker

/// Why a model-checking run failed.
[<RequireQualifiedAccess>]
type CheckFailure<'Op, 'Out> =
    /// The cluster broke a property of its own (Raft safety, liveness, the store's linearizability).
    | Cluster of Violation
    /// The user's operations are not linearizable against their model: `minimal` is a smallest part of the history
    /// that is not, on its own. Either the model is wrong or the programs misuse the store.
    | NotLinearizable of minimal: Call<'Op, 'Out> list

/// The outcome of one model-checking run.
type Result<'Op, 'Out> =
    {
        /// The simulator's run (its schedule, the store-level history, counters, the trace if asked for).
        Run: RunResult
        /// The user-level history: one call per operation of the workload.
        History: Call<'Op, 'Out> list
        /// The checker's verdict on `History`.
        Verdict: Verdict<'Op, 'Out>
        /// The first failure: the cluster's violation, else a non-linearizable user history; None if the run passed.
        /// A history too hard to check within the budget (Verdict.Unknown) is not a failure.
        Failure: CheckFailure<'Op, 'Out> option
    }

/// Where one client stands in its workload.
type private ClientState<'Op, 'Out> =
    | Idle
    | Running of op: 'Op * invoked: int64 * program: Program<'Out>

/// Runs each client's programs one store operation at a time and records the user-level history. Logical time is
/// a counter advanced at every invocation and completion: the simulator reports them in real-time order.
type private Driver<'Op, 'Out>(workload: ClientWorkload<'Op, 'Out>, clients: int, seed: uint64) =
    let random = Random(int (seed ^^^ (seed >>> 32)))
    let states = Array.create clients Idle
    let history = ResizeArray<Call<'Op, 'Out>>()
    let mutable clock = 0L
    let tick () =
        clock <- clock + 1L
        clock
    let record client op invoked outcome =
        history.Add { Client = client; Invoked = invoked; Op = op; Outcome = outcome }
        states[client] <- Idle
    /// Continues `client`'s operation with `program`: the next store operation, if any.
    let continueWith client op invoked program =
        match program with
        | Program.Return output ->
            record client op invoked (Outcome.Returned(tick (), output))
            None
        | Program.Call(action, _) ->
            states[client] <- Running(op, invoked, program)
            Some action

    member _.History = List.ofSeq history

    interface ClientDriver with
        member _.Next(client) =
            match states[client] with
            | Idle ->
                let op = workload.NextOp random client
                continueWith client op (tick ()) (workload.Run op)
            | Running(_, _, Program.Call(action, _)) -> Some action
            | Running(op, invoked, program) -> continueWith client op invoked program

        member _.Completed(client, completion) =
            match states[client], completion with
            | Running(op, invoked, Program.Call(_, next)), Completion.Returned(_, output) ->
                tick () |> ignore
                continueWith client op invoked (next output) |> ignore
            | Running(op, invoked, _), _ -> record client op invoked Outcome.Unknown
            | Idle, _ -> ()

        member _.Finish() =
            for client in 0 .. clients - 1 do
                match states[client] with
                | Running(op, invoked, _) -> record client op invoked Outcome.Unknown
                | Idle -> ()

/// Runs `workload` on the simulated cluster of `reducer` under `schedule` (Settings.Clients clients, each with one
/// operation at a time), then checks the user-level history against `model`. Deterministic: the same arguments
/// give the same result.
let run
    (reducer: Reducer<'S>)
    (settings: Settings)
    (workload: ClientWorkload<'Op, 'Out>)
    (model: Model<'State, 'Op, 'Out>)
    (schedule: Schedule)
    : Result<'Op, 'Out> =
    let driver = Driver<'Op, 'Out>(workload, settings.Clients, schedule.Seed)
    let result = Simulator.runDriven reducer settings driver schedule
    let history = driver.History
    let verdict = ModelChecker.check model ModelChecker.defaultBudget history
    let failure =
        match result.Violation, verdict with
        | Some v, _ -> Some(CheckFailure.Cluster v)
        | None, Verdict.NotLinearizable minimal -> Some(CheckFailure.NotLinearizable minimal)
        | None, _ -> None
    { Run = result; History = history; Verdict = verdict; Failure = failure }

/// One call as a line, e.g. `client 1 [4, 9] Increment -> Incremented 3`.
let describeCall (call: Call<'Op, 'Out>) : string =
    match call.Outcome with
    | Outcome.Returned(at, output) -> sprintf "client %d [%d, %d] %A -> %A" call.Client call.Invoked at call.Op output
    | Outcome.Unknown -> sprintf "client %d [%d, ?] %A -> unknown" call.Client call.Invoked call.Op

/// A report of a run: the schedule to replay, and the failure with its evidence.
let describe (result: Result<'Op, 'Out>) : string =
    let failure =
        match result.Failure with
        | None -> [ "no failure" ]
        | Some(CheckFailure.Cluster v) -> [ "cluster violation: " + string v ]
        | Some(CheckFailure.NotLinearizable minimal) ->
            "not linearizable against the model; a smallest such part of the history:"
            :: (minimal |> List.map (fun c -> "  " + describeCall c))
    ("schedule: " + Schedule.format result.Run.Schedule) :: failure |> String.concat Environment.NewLine
