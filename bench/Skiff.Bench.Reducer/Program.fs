/// Reducer micro-benchmarks.
///   dotnet run -c Release --project bench/Skiff.Bench.Reducer -- --quick     (Stopwatch loops, a few seconds)
///   dotnet run -c Release --project bench/Skiff.Bench.Reducer                (BenchmarkDotNet, all benchmarks)
///   dotnet run -c Release --project bench/Skiff.Bench.Reducer -- --job short (BenchmarkDotNet, short job)
///   ... -- --job short --filter '*LeaderPropose*'                             (one benchmark class)
/// Every mode ends with one line per benchmark:
///   reducer <name> batch=<n> events_s=<events per second> alloc_b_per_event=<bytes> cycle_us=<µs per cycle>
module Skiff.Bench.Reducer.Program

open System
open System.Diagnostics
open BenchmarkDotNet.Running
open BenchmarkDotNet.Configs
open Skiff.Core
open Driver
open Benchmarks

/// One benchmark case: a fresh subject, and a cycle to run on it; returns the driver to count events on.
type Case =
    {
        Name: string
        Batch: int
        /// Builds the subject and returns (driver, one cycle).
        Make: unit -> Driver * (unit -> unit)
    }

let cases: Case list =
    let leaderCase name batch =
        { Name = name
          Batch = batch
          Make =
            fun () ->
                let d = leader warmEntries
                let mutable reqId = 1_000_000L
                let r = ref reqId
                d,
                fun () ->
                    let mutable id = r.Value
                    leaderCycle d batch &id
                    r.Value <- id }
    [ leaderCase "leader_propose" 1
      leaderCase "leader_propose" 64
      for batch in [ 1; 64 ] do
          { Name = "follower_append"
            Batch = batch
            Make =
              fun () ->
                  let f = Follower(warmEntries)
                  f.Warm()
                  f.Driver, fun () -> followerCycle f batch }
      { Name = "read_index"
        Batch = 64
        Make =
          fun () ->
              let d = leader warmEntries
              let r = ref 1_000_000L
              d,
              fun () ->
                  let mutable id = r.Value
                  readCycle d 64 &id
                  r.Value <- id } ]

/// Events per cycle, measured on a warm subject (the BenchmarkDotNet numbers are per cycle).
let eventsPerCycle (c: Case) : float =
    let d, cycle = c.Make()
    for _ in 1..200 do
        cycle ()
    let e0 = d.Events
    for _ in 1..1000 do
        cycle ()
    float (d.Events - e0) / 1000.0

let line (c: Case) (eventsPerSec: float) (allocPerEvent: float) (cycleUs: float) =
    printfn "reducer %s batch=%d events_s=%.0f alloc_b_per_event=%.0f cycle_us=%.2f" c.Name c.Batch eventsPerSec allocPerEvent cycleUs

/// Stopwatch mode: warm up, then run cycles for `seconds` per case.
let quick (seconds: float) =
    for c in cases do
        let d, cycle = c.Make()
        for _ in 1..2000 do
            cycle ()
        GC.Collect()
        d.ResetStepBytes()
        let e0 = d.Events
        let a0 = GC.GetAllocatedBytesForCurrentThread()
        let sw = Stopwatch.StartNew()
        let mutable cycles = 0
        while sw.Elapsed.TotalSeconds < seconds do
            for _ in 1..50 do
                cycle ()
            cycles <- cycles + 50
        sw.Stop()
        let events = float (d.Events - e0)
        let alloc = float (GC.GetAllocatedBytesForCurrentThread() - a0)
        line c (events / sw.Elapsed.TotalSeconds) (alloc / events) (sw.Elapsed.TotalMilliseconds * 1000.0 / float cycles)
        // Where a cycle's bytes go: per event kind, bytes allocated inside Raft.step per event and per cycle.
        for KeyValue(kind, (n, b)) in d.StepBytes |> Seq.sortBy (fun kv -> kv.Key) do
            printfn
                "  step %s: %.2f per cycle, %.0f B per event, %.0f B per cycle"
                kind
                (float n / float cycles)
                (float b / float n)
                (float b / float cycles)

[<EntryPoint>]
let main argv =
    match List.ofArray argv with
    | "--types" :: rest ->
        // Where the bytes go, by type (allocation sampling): one case per name given, or all.
        for c in cases |> List.filter (fun c -> rest.IsEmpty || List.contains $"{c.Name}/{c.Batch}" rest) do
            let _, cycle = c.Make()
            AllocTypes.run $"{c.Name} batch={c.Batch}" 3.0 cycle
        0
    | "--quick" :: rest ->
        let seconds = rest |> List.tryHead |> Option.map float |> Option.defaultValue 1.0
        quick seconds
        0
    | _ ->
        let switcher = BenchmarkSwitcher.FromAssembly(typeof<LeaderPropose>.Assembly)
        // BenchmarkDotNet rebuilds this project (F#, with Skiff.Core) per job; its default 2-minute build timeout is
        // too short on a busy shared box. Artifacts go under bin/, not into the working tree.
        let config =
            ManualConfig
                .Create(DefaultConfig.Instance)
                .WithBuildTimeout(TimeSpan.FromMinutes 10.0)
                .WithArtifactsPath(IO.Path.Combine(AppContext.BaseDirectory, "BenchmarkDotNet.Artifacts"))
        // RunAll ignores --filter; Run honours it (but prompts for a choice when no filter is given).
        let summaries =
            if argv |> Array.exists (fun a -> a = "--filter" || a.StartsWith "--filter=") then
                switcher.Run(argv, config) |> Seq.toArray
            else
                switcher.RunAll(config, argv) |> Seq.toArray
        for summary in summaries do
            for report in summary.Reports do
                let bc = report.BenchmarkCase
                let typeName = bc.Descriptor.Type.Name
                let batch =
                    bc.Parameters.Items
                    |> Seq.tryFind (fun p -> p.Name = "Batch")
                    |> Option.map (fun p -> unbox<int> p.Value)
                    |> Option.defaultValue 64
                let name =
                    match typeName with
                    | "LeaderPropose" -> "leader_propose"
                    | "FollowerAppend" -> "follower_append"
                    | _ -> "read_index"
                match cases |> List.tryFind (fun c -> c.Name = name && c.Batch = batch), Option.ofObj report.ResultStatistics with
                | Some c, Some stats ->
                    let epc = eventsPerCycle c
                    let ns = stats.Mean
                    let alloc = report.GcStats.GetBytesAllocatedPerOperation(bc)
                    let allocPerOp = if alloc.HasValue then float alloc.Value else nan
                    line c (epc * 1e9 / ns) (allocPerOp / epc) (ns / 1000.0)
                | _ -> ()
        0
