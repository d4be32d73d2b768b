/// The simulation tools of the PropertyTests program (not tests): `--soak` runs many random schedules, `--replay`
/// runs one schedule again with a full trace, or finds the first failure of a soak from its seed.
///
/// Environment knobs shared by both: SKIFF_PLAIN=1 (the reducer without Pre-Vote and CheckQuorum),
/// SKIFF_SOAK_SESSIONS=1 (clients in sessions retrying every write), SKIFF_SOAK_STEPS=n (schedules of up to n faults).
module Skiff.PropertyTests.SimulationTools

open System
open System.Diagnostics
open Skiff.Simulation
open Skiff.PropertyTests.Simulation

let private env (name: string) = Environment.GetEnvironmentVariable name

let private chosenReducer () = if env "SKIFF_PLAIN" = "1" then plainReducer else reducer

let private chosenSettings () = if env "SKIFF_SOAK_SESSIONS" = "1" then sessionSettings else settings

/// The replay flags that choose the same reducer and clients as this soak or replay (steps do not matter to a replay
/// of a schedule's text).
let private flags () =
    (if env "SKIFF_PLAIN" = "1" then " --plain" else "") + (if env "SKIFF_SOAK_SESSIONS" = "1" then " --sessions" else "")

/// `report` with the flags that replay the run the same way.
let private replayable (result: RunResult) = report result + flags ()

let private steps () =
    match env "SKIFF_SOAK_STEPS" with
    | null
    | "" -> maxSteps
    | n -> int n

/// The soak's schedules from `seed`, in batches of 100 drawn from seed, seed + 1, ... so that a replay from the seed
/// regenerates them without keeping them.
let private soakSchedules (steps: int) (seed: uint64) : Schedule seq =
    Seq.initInfinite id |> Seq.collect (fun batch -> Schedules.sample steps (seed + uint64 batch) 100)

/// Soak mode: runs random schedules until stopped (or `count` of them), printing throughput every 10 s and the
/// first violation with its replay line. Returns the exit code.
let soak (count: int option) : int =
    let seed = fsCheckSeed ()
    let steps = steps ()
    printfn
        "soak: seed %d, up to %d faults, %s, %s"
        seed
        steps
        (if env "SKIFF_PLAIN" = "1" then
             "without Pre-Vote and CheckQuorum"
         else
             "with Pre-Vote and CheckQuorum")
        (match count with
         | Some n -> sprintf "%d schedules" n
         | None -> "until stopped")
    let watch = Stopwatch.StartNew()
    let mutable lastPrint = 0.0
    let mutable ran = 0
    let mutable failure = None
    let mutable violations = 0
    // SKIFF_SOAK_ALL=1: print every violation and keep going (for triage), instead of stopping at the first.
    let keepGoing = env "SKIFF_SOAK_ALL" = "1"
    // SKIFF_SOAK_EXCLUDE=disk,remove: leave these kinds of fault out (to look past a known bug while triaging).
    let excluded =
        match env "SKIFF_SOAK_EXCLUDE" with
        | null -> Set.empty
        | text -> text.Split(',', StringSplitOptions.RemoveEmptyEntries) |> Set.ofArray
    let keep (step: ScheduleStep) = not (excluded.Contains((ScheduleText.fault step.Fault).Split(':')[0]))
    let soakReducer = chosenReducer ()
    let settings = chosenSettings ()
    let schedules =
        soakSchedules steps seed
        |> Seq.map (fun s -> { s with Steps = List.filter keep s.Steps })
        |> Seq.takeWhile (fun _ ->
            failure.IsNone
            && (match count with
                | Some n -> ran < n
                | None -> true))
    for s in schedules do
        let r = Simulator.run soakReducer settings s
        ran <- ran + 1
        match r.Violation with
        | Some v when keepGoing ->
            violations <- violations + 1
            printfn "soak: %s | %s | flags:%s" (Schedule.format s) (string v) (flags ())
        | Some _ -> failure <- Some r
        | None -> ()
        let t = watch.Elapsed.TotalSeconds
        if t - lastPrint >= 10.0 then
            lastPrint <- t
            printfn "soak: %d schedules in %.0f s (%.1f/s)" ran t (float ran / t)
    printfn "soak: %d schedules in %.0f s (%.1f/s)" ran watch.Elapsed.TotalSeconds (float ran / watch.Elapsed.TotalSeconds)
    match failure with
    | Some r ->
        printfn "soak: VIOLATION\n%s" (replayable r)
        1
    | None when violations > 0 ->
        printfn "soak: %d violations" violations
        1
    | None ->
        printfn "soak: no violation"
        0

/// The schedule to replay: a schedule's text, or a soak's seed (its first failing schedule, within `limit`).
let private target (text: string) (limit: int) : Schedule option =
    match UInt64.TryParse text with
    | true, seed ->
        let run s = Simulator.run (chosenReducer ()) (chosenSettings ()) s
        soakSchedules (steps ()) seed |> Seq.truncate limit |> Seq.tryFind (fun s -> (run s).Violation.IsSome)
    | _ -> Some(Schedule.parse text)

/// Replay mode: runs one schedule (or the first failure of the soak seeded `text`, among its first 100,000 schedules)
/// with a full trace and prints it with the report. SKIFF_SHRINK=1 shrinks it first, keeping the same violated
/// property; SKIFF_LIVENESS=leaderTicks,convergeTicks sets other liveness bounds. Exit code 1 if it violates a
/// property, 2 if a seed's soak found nothing.
let replay (text: string) : int =
    let reducer = chosenReducer ()
    let settings =
        match env "SKIFF_LIVENESS" with
        | null
        | "" -> chosenSettings ()
        | bounds ->
            let parts = bounds.Split ','
            { chosenSettings () with LeaderTicks = int parts[0]; LivenessTicks = int parts[1] }
    let run s = Simulator.run reducer settings s
    match target text 100_000 with
    | None ->
        printfn "replay: the soak from seed %s finds no violation in 100,000 schedules" text
        2
    | Some schedule ->
        let schedule =
            match env "SKIFF_SHRINK", (run schedule).Violation with
            | "1", Some v ->
                let shrunk =
                    schedule
                    |> Schedules.shrinkWhile (fun s ->
                        match (run s).Violation with
                        | Some w -> w.Property = v.Property
                        | None -> false)
                printfn "shrunk to: %s" (Schedule.format shrunk)
                shrunk
            | _ -> schedule
        let result = Simulator.run reducer { settings with Trace = true } schedule
        result.Trace |> List.iter (printfn "%s")
        printfn "%s" (replayable result)
        if result.Violation.IsSome then 1 else 0
