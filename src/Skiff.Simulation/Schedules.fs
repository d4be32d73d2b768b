/// Random fault schedules for property-based testing: an FsCheck generator, a shrinker that keeps the run's seed
/// and cluster size (so a shrunk schedule is the same run with less going wrong), the `Arbitrary` that joins them,
/// and a greedy shrinker for a failure found outside FsCheck (a soak, a replay).
///
/// With FsCheck: `Prop.forAll (Schedules.arbitrary 12) (fun schedule -> ...)`, or register `ScheduleArbitraries`
/// (`Config.Quick.WithArbitrary [ typeof<ScheduleArbitraries> ]`) to get schedules as a property's parameter.
module Skiff.Simulation.Schedules

open System
open FsCheck
open FsCheck.FSharp

/// One fault aimed at slots of a cluster of `nodes` (slots wrap around at run time, see Fault).
let genFault (nodes: int) : Gen<Fault> =
    let node = Gen.choose (0, nodes - 1)
    // Weights: the faults that break Raft most often (partitions, crashes, heals) come up most.
    Gen.frequency
        [ 3, Gen.subListOf [ 0 .. nodes - 1 ] |> Gen.map Fault.Partition
          2, node |> Gen.map Fault.Isolate
          1, Gen.zip node node |> Gen.map Fault.OneWay
          4, Gen.constant Fault.Heal
          3, node |> Gen.map Fault.Crash
          3, node |> Gen.map Fault.Restart
          1, Gen.choose (0, 30) |> Gen.map Fault.Loss
          1, Gen.choose (0, 30) |> Gen.map Fault.Duplicate
          1, Gen.choose (1, 8) |> Gen.map Fault.Delay
          1, Gen.choose (0, 4) |> Gen.map Fault.SlowDisk
          1, Gen.constant Fault.AddNode
          1, node |> Gen.map Fault.RemoveNode
          1, node |> Gen.map Fault.Transfer ]

/// Like `genFault`, with address updates (Fault.UpdateNode) among the membership changes. Kept apart from
/// `genFault` so that the schedules pinned elsewhere by their seed stay the same runs.
let genFaultWithUpdates (nodes: int) : Gen<Fault> =
    Gen.frequency [ 25, genFault nodes; 3, Gen.choose (0, nodes - 1) |> Gen.map Fault.UpdateNode ]

let private genStepOf (fault: Gen<Fault>) : Gen<ScheduleStep> =
    gen {
        let! after = Gen.frequency [ 3, Gen.choose (0, 10); 2, Gen.choose (10, 40) ]
        let! fault = fault
        return { After = after; Fault = fault }
    }

/// One step: a fault after a short (0-10 ticks) or long (10-40 ticks, past an election timeout) wait.
let genStep (nodes: int) : Gen<ScheduleStep> = genStepOf (genFault nodes)

let private genScheduleOf (step: Gen<ScheduleStep>) (nodes: int) (maxSteps: int) : Gen<Schedule> =
    gen {
        let! hi = Gen.choose (0, Int32.MaxValue)
        let! lo = Gen.choose (0, Int32.MaxValue)
        let! count = Gen.choose (0, maxSteps)
        let! steps = Gen.listOfLength count step
        return { Seed = (uint64 hi <<< 32) ||| uint64 lo; Nodes = nodes; Steps = steps }
    }

/// Schedules of up to `maxSteps` faults on a cluster of `nodes`.
let genScheduleOn (nodes: int) (maxSteps: int) : Gen<Schedule> = genScheduleOf (genStep nodes) nodes maxSteps

/// Schedules of up to `maxSteps` faults on a cluster of `nodes`, address updates among them.
let genScheduleWithUpdatesOn (nodes: int) (maxSteps: int) : Gen<Schedule> =
    genScheduleOf (genStepOf (genFaultWithUpdates nodes)) nodes maxSteps

/// Schedules of up to `maxSteps` faults on 3- or 5-node clusters.
let genSchedule (maxSteps: int) : Gen<Schedule> = Gen.elements [ 3; 5 ] |> Gen.bind (fun nodes -> genScheduleOn nodes maxSteps)

/// Smaller variants of a schedule, most promising first: drop halves of the faults, then one fault at a time, then
/// halve one delay. The seed and the cluster size stay.
let shrink (s: Schedule) : Schedule seq =
    seq {
        let steps = Array.ofList s.Steps
        let n = steps.Length
        if n > 1 then
            yield { s with Steps = List.ofArray steps[.. n / 2 - 1] }
            yield { s with Steps = List.ofArray steps[n / 2 ..] }
        for i in 0 .. n - 1 do
            yield { s with Steps = List.ofArray (Array.removeAt i steps) }
        for i in 0 .. n - 1 do
            if steps[i].After > 0 then
                yield { s with Steps = List.ofArray (Array.updateAt i { steps[i] with After = steps[i].After / 2 } steps) }
    }

/// The FsCheck arbitrary: `genSchedule maxSteps` with `shrink`.
let arbitrary (maxSteps: int) : Arbitrary<Schedule> = Arb.fromGenShrink (genSchedule maxSteps, shrink)

/// The FsCheck arbitrary for a fixed cluster size: `genScheduleOn nodes maxSteps` with `shrink`.
let arbitraryOn (nodes: int) (maxSteps: int) : Arbitrary<Schedule> = Arb.fromGenShrink (genScheduleOn nodes maxSteps, shrink)

/// The FsCheck arbitrary of schedules with address updates (`genScheduleWithUpdatesOn` on 3 or 5 nodes) with `shrink`.
let arbitraryWithUpdates (maxSteps: int) : Arbitrary<Schedule> =
    Arb.fromGenShrink (Gen.elements [ 3; 5 ] |> Gen.bind (fun nodes -> genScheduleWithUpdatesOn nodes maxSteps), shrink)

/// `count` schedules of up to `maxSteps` faults drawn deterministically from `seed`: the same arguments give the
/// same schedules, so a soak or a test can be replayed from its seed.
let sample (maxSteps: int) (seed: uint64) (count: int) : Schedule list =
    Gen.sampleWithSeed (Rnd(seed)) 50 count (genSchedule maxSteps) |> List.ofArray

/// Shrinks greedily outside FsCheck: takes the first smaller variant that still `fails` until none does. Use it
/// on a failure found by a soak; `fails` should look for the same violation (e.g. the same Violation.Property).
let shrinkWhile (fails: Schedule -> bool) (schedule: Schedule) : Schedule =
    let rec go s =
        match shrink s |> Seq.tryFind fails with
        | Some smaller -> go smaller
        | None -> s
    go schedule

/// FsCheck arbitraries to register with `Config.WithArbitrary [ typeof<ScheduleArbitraries> ]`: a property that
/// takes a `Schedule` then gets schedules of up to 12 faults on 3 or 5 nodes.
type ScheduleArbitraries =
    /// Schedules of up to 12 faults on 3- or 5-node clusters.
    static member Schedule() : Arbitrary<Schedule> = arbitrary 12
