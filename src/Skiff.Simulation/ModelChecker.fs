/// A linearizability checker for any sequential model: did each operation of a concurrent history appear to take
/// effect atomically at one instant between its invocation and its completion, in an order the model accepts?
///
/// Users bring the model (ModelChecker.Model: an initial state and a step function), the simulator brings the
/// history. The search is Wing & Gong's with Lowe's memoisation (the one Linearizability.fs uses for the key-value
/// store, without its per-key split): depth first over the operations that may take effect next, never exploring
/// the same (operations done, model state) pair twice. Model states must therefore have structural equality.
module Skiff.Simulation.ModelChecker

open System.Collections.Generic

/// A sequential specification of a workload: what each operation does to the state and returns, one at a time.
type Model<'State, 'Op, 'Out> =
    {
        /// The state before any operation.
        Init: 'State
        /// Applies one operation: the next state and the output its caller must have seen.
        Step: 'State -> 'Op -> 'State * 'Out
    }

/// How an operation ended, as its client saw it.
[<RequireQualifiedAccess>]
type Outcome<'Out> =
    /// It returned `output` at logical time `at`.
    | Returned of at: int64 * output: 'Out
    /// Its outcome is unknown (a step timed out, the run ended first): it may have taken effect at any instant
    /// after its invocation, or never, and its output is unconstrained.
    | Unknown

/// One operation of a history: an interval of logical time during which `Op` was outstanding. Intervals are
/// closed: an operation invoked at the instant another returned counts as concurrent with it.
type Call<'Op, 'Out> =
    {
        /// Who issued it (for reports only).
        Client: int
        /// Logical time of the invocation.
        Invoked: int64
        /// What was asked.
        Op: 'Op
        /// How it ended.
        Outcome: Outcome<'Out>
    }

/// The verdict on a history.
[<RequireQualifiedAccess>]
type Verdict<'Op, 'Out> =
    /// Some order of the operations respects real time and the model.
    | Linearizable
    /// No such order exists. `minimal` is a smallest part of the history (no operation of it can be left out) that
    /// is still not linearizable on its own: usually a handful of calls that show the bug.
    | NotLinearizable of minimal: Call<'Op, 'Out> list
    /// The search exceeded its step budget before reaching a verdict.
    | Unknown

let private returnedAt (call: Call<'Op, 'Out>) =
    match call.Outcome with
    | Outcome.Returned(at, _) -> at
    | Outcome.Unknown -> System.Int64.MaxValue

/// Searches for a linearization of `calls`; None when `budget` search steps did not suffice.
let private search (model: Model<'S, 'Op, 'Out>) (budget: int64) (calls: Call<'Op, 'Out>[]) : bool option =
    let n = calls.Length
    let seen = HashSet<struct (string * 'S)>(HashIdentity.Structural)
    let mutable steps = 0L
    let done' = Array.zeroCreate<bool> n
    // A call may take effect next only if no call still pending returned before it was invoked.
    let canGoNext i =
        not done'[i]
        && (seq { 0 .. n - 1 } |> Seq.forall (fun j -> done'[j] || j = i || returnedAt calls[j] >= calls[i].Invoked))
    // Finished when every call that returned has taken effect (calls of unknown outcome may never have).
    let finished () = seq { 0 .. n - 1 } |> Seq.forall (fun i -> done'[i] || calls[i].Outcome = Outcome.Unknown)
    let key () = System.String(done' |> Array.map (fun d -> if d then '1' else '0'))
    let rec go (state: 'S) : bool =
        steps <- steps + 1L
        if steps > budget then
            false
        elif finished () then
            true
        elif not (seen.Add(struct (key (), state))) then
            false
        else
            seq { 0 .. n - 1 }
            |> Seq.exists (fun i ->
                canGoNext i
                && (let next, out = model.Step state calls[i].Op
                    let fits =
                        match calls[i].Outcome with
                        | Outcome.Returned(_, observed) -> observed = out
                        | Outcome.Unknown -> true
                    fits
                    && (done'[i] <- true
                        let found = go next
                        done'[i] <- false
                        found)))
    let found = go model.Init
    if found then Some true
    elif steps > budget then None
    else Some false

/// Checks a history against a model, spending at most `budget` search steps on each attempt (the verdict and each
/// try while minimising a failure). Calls must be ordered by invocation or not at all: order does not matter.
let check (model: Model<'S, 'Op, 'Out>) (budget: int64) (history: Call<'Op, 'Out> list) : Verdict<'Op, 'Out> =
    let linearizable calls = search model budget (Array.ofList calls)
    match linearizable history with
    | Some true -> Verdict.Linearizable
    | None -> Verdict.Unknown
    | Some false ->
        // Leave out one call at a time while the rest is still not linearizable: what stays is needed to show it.
        let rec minimise (kept: Call<'Op, 'Out> list) (i: int) =
            if i >= kept.Length then
                kept
            else
                let without = List.removeAt i kept
                if linearizable without = Some false then minimise without i else minimise kept (i + 1)
        Verdict.NotLinearizable(minimise history 0)

/// The default budget of `check`: a million search steps.
let defaultBudget: int64 = 1_000_000L
