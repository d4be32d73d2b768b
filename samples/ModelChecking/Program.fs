/// Model-checks the counter (Counter.fs) on random fault schedules with FsCheck: `dotnet run --project
/// samples/ModelChecking -- [schedules] [seed]`. Prints the seed (pass it again to replay the same schedules) and,
/// on a failure, the shrunk schedule and the smallest non-linearizable part of the history. Exit code 1 on failure.
module ModelChecking.Program

open System
open FsCheck
open FsCheck.FSharp
open Skiff.Simulation

/// Checks `count` random schedules from `seed`; the report of the first failure (shrunk by FsCheck), or None.
let checkSchedules (increment: unit -> Program<Counter.Out>) (count: int) (seed: uint64) : string option =
    let mutable failure = None
    let property =
        Prop.forAll (Schedules.arbitrary 12) (fun schedule ->
            let result = Counter.check increment schedule
            if result.Failure.IsSome then
                failure <- Some(ModelCheck.describe result)
            result.Failure.IsNone)
    let config = Config.Quick.WithMaxTest(count).WithQuietOnSuccess(true).WithReplay(Some { Rnd = Rnd(seed, 1UL); Size = None })
    // FsCheck shrinks a failing schedule before it reports; `failure` then holds the last (shrunk) one.
    Check.One(config, property)
    failure

[<EntryPoint>]
let main argv =
    let count = if argv.Length > 0 then int argv[0] else 200
    let seed = if argv.Length > 1 then UInt64.Parse argv[1] else uint64 (Random.Shared.NextInt64())
    printfn "model-checking the counter on %d schedules, seed %d" count seed
    match checkSchedules Counter.increment count seed with
    | Some report ->
        printfn "FAILED\n%s" report
        1
    | None ->
        printfn "passed"
        0
