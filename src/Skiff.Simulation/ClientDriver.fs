namespace Skiff.Simulation

open Skiff.Simulation.Linearizability

/// What the simulated clients ask for when a user's workload drives them (ModelCheck.fs) instead of the built-in
/// random gets, puts, deletes and compare-and-swaps: the next key-value operation of each client's program, and how
/// each one ended.
type internal ClientDriver =
    /// The next operation of `client`, which has none outstanding; None leaves it idle for this tick.
    abstract Next: client: int -> Action option
    /// How `client`'s operation ended (TimedOut also for one that failed for sure: its program stops either way).
    abstract Completed: client: int * completion: Completion -> unit
    /// The run is over: operations still in progress have an unknown outcome.
    abstract Finish: unit -> unit
