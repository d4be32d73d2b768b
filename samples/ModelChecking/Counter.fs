/// A counter that clients increment with compare-and-swap on one key, model-checked on a simulated cluster.
module ModelChecking.Counter

open System.Text
open Skiff.Simulation
open Skiff.Simulation.ModelChecker

/// What a client does with the counter.
type Op =
    | Increment
    | Read

/// What it sees: the counter's value (after an increment, the value it set).
type Out = Value of int64

let private key = "counter"
let private decode (v: byte[] option) = v |> Option.map (Encoding.ASCII.GetString >> int64) |> Option.defaultValue 0L
let private encode (n: int64) = Some(Encoding.ASCII.GetBytes(string n))

/// Increment: read, swap in the value + 1 if nobody changed it meanwhile, else try again.
let rec increment () : Program<Out> =
    program {
        let! current = Program.get key
        let next = decode current + 1L
        let! swapped = Program.compareAndSwap key current (encode next)
        if swapped then return Value next else return! increment ()
    }

/// A broken increment: read, then put the value + 1. Two concurrent increments can both set 1.
let incrementWithPut () : Program<Out> =
    program {
        let! current = Program.get key
        let next = decode current + 1L
        do! Program.put key (encode next).Value
        return Value next
    }

/// The workload: clients increment twice as often as they read.
let workload (increment: unit -> Program<Out>) : ClientWorkload<Op, Out> =
    { NextOp = fun random _ -> if random.Next 3 = 0 then Read else Increment
      Run =
        function
        | Increment -> increment ()
        | Read -> program { let! v = Program.get key in return Value(decode v) } }

/// The sequential model: what a counter does, one operation at a time.
let model: Model<int64, Op, Out> =
    { Init = 0L
      Step =
        fun n op ->
            match op with
            | Increment -> n + 1L, Value(n + 1L)
            | Read -> n, Value n }

/// Runs the workload on a simulated 3- or 5-node cluster under `schedule` and checks it against the model.
let check (increment: unit -> Program<Out>) (schedule: Schedule) : ModelCheck.Result<Op, Out> =
    let reducer = Simulator.raft Simulator.simulationOptions
    ModelCheck.run reducer Simulator.defaultSettings (workload increment) model schedule
