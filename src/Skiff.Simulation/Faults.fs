/// Fault schedules for the deterministic simulator: what goes wrong, and when. A schedule is plain data so that
/// property-based testing can generate and shrink it, and it prints compactly (`Schedule.format`) in a form that
/// `Schedule.parse` reads back, so a failure found once can be replayed exactly.
namespace Skiff.Simulation

open System
open Skiff.Core

/// One fault (or repair). Nodes are named by their slot: 0 .. n-1 for the initial members in creation order,
/// then n, n+1, ... for nodes added later. A slot is taken modulo the number of nodes that exist when the fault
/// fires, so every schedule is valid whatever it shrinks to.
[<RequireQualifiedAccess>]
type Fault =
    /// Split the nodes into two sides that cannot talk: the listed slots against all the others.
    | Partition of side: int list
    /// Cut one node off from every other node, both ways.
    | Isolate of node: int
    /// Drop every message from one node to another (the other direction still works).
    | OneWay of from: int * ``to``: int
    /// Remove every partition and one-way cut.
    | Heal
    /// Crash a node: its volatile state and writes not yet durable are lost.
    | Crash of node: int
    /// Restart a crashed node from its durable store (no effect on a running node).
    | Restart of node: int
    /// Lose this percentage of messages from now on.
    | Loss of percent: int
    /// Duplicate this percentage of messages from now on.
    | Duplicate of percent: int
    /// Deliver each message after 1 .. this many ticks from now on (different delays reorder messages).
    | Delay of maxTicks: int
    /// Make durable writes take 0 .. this many ticks from now on.
    | SlowDisk of maxTicks: int
    /// Start a fresh node and ask the cluster to add it.
    | AddNode
    /// Ask the cluster to remove a node.
    | RemoveNode of node: int
    /// Ask the cluster to give a node a new address (ConfigChange.UpdateServer); the simulated network routes by id,
    /// so the run shows whether the change itself, interleaved with the others, keeps Raft safe.
    | UpdateNode of node: int
    /// Ask a node (the one a client thinks is the leader) to hand leadership to another.
    | Transfer of target: int

/// Text of single faults, as used in the compact schedule form.
module ScheduleText =
    /// One fault as text, e.g. `crash:1`, `partition:0,2`, `oneway:1>2`, `heal`.
    let fault (fault: Fault) : string =
        match fault with
        | Fault.Partition side -> "partition:" + String.Join(",", side)
        | Fault.Isolate n -> sprintf "isolate:%d" n
        | Fault.OneWay(a, b) -> sprintf "oneway:%d>%d" a b
        | Fault.Heal -> "heal"
        | Fault.Crash n -> sprintf "crash:%d" n
        | Fault.Restart n -> sprintf "restart:%d" n
        | Fault.Loss p -> sprintf "loss:%d" p
        | Fault.Duplicate p -> sprintf "dup:%d" p
        | Fault.Delay d -> sprintf "delay:%d" d
        | Fault.SlowDisk d -> sprintf "disk:%d" d
        | Fault.AddNode -> "add"
        | Fault.RemoveNode n -> sprintf "remove:%d" n
        | Fault.UpdateNode n -> sprintf "update:%d" n
        | Fault.Transfer n -> sprintf "transfer:%d" n

/// A fault and how many ticks after the previous one it fires.
type ScheduleStep =
    {
        /// Ticks since the previous step (or the start).
        After: int
        /// What happens.
        Fault: Fault
    }

/// A complete description of a simulated run: together with the simulator options, it determines the run bit for
/// bit. Prints (with %A, as FsCheck does) in the compact form of `Schedule.format`.
[<StructuredFormatDisplay("{Text}")>]
type Schedule =
    {
        /// Seeds the one random generator of the run (network, clients, disk, node seeds).
        Seed: uint64
        /// Initial cluster size (3 or 5 in the tests).
        Nodes: int
        /// The faults, in order.
        Steps: ScheduleStep list
    }

    /// The compact one-line form (see `Schedule.format`).
    member this.Text =
        let steps = this.Steps |> List.map (fun s -> sprintf "%d %s" s.After (ScheduleText.fault s.Fault))
        sprintf "seed=%d nodes=%d [%s]" this.Seed this.Nodes (String.Join("; ", steps))

    /// The compact one-line form.
    override this.ToString() = this.Text

/// Printing and parsing schedules.
[<RequireQualifiedAccess>]
module Schedule =
    /// A compact one-line rendering, e.g. `seed=42 nodes=3 [5 crash:1; 10 partition:0,2; 3 heal]`: each step is
    /// its delay in ticks and its fault. `parse` reads it back.
    let format (schedule: Schedule) : string = schedule.Text

    let private parseFault (text: string) : Fault =
        let name, arg =
            match text.IndexOf ':' with
            | -1 -> text, ""
            | i -> text.Substring(0, i), text.Substring(i + 1)
        let n () = int arg
        match name with
        | "partition" -> Fault.Partition(if arg = "" then [] else arg.Split ',' |> Array.map int |> List.ofArray)
        | "isolate" -> Fault.Isolate(n ())
        | "oneway" ->
            let parts = arg.Split '>'
            Fault.OneWay(int parts[0], int parts[1])
        | "heal" -> Fault.Heal
        | "crash" -> Fault.Crash(n ())
        | "restart" -> Fault.Restart(n ())
        | "loss" -> Fault.Loss(n ())
        | "dup" -> Fault.Duplicate(n ())
        | "delay" -> Fault.Delay(n ())
        | "disk" -> Fault.SlowDisk(n ())
        | "add" -> Fault.AddNode
        | "remove" -> Fault.RemoveNode(n ())
        | "update" -> Fault.UpdateNode(n ())
        | "transfer" -> Fault.Transfer(n ())
        | other -> failwithf "unknown fault %A" other

    /// Reads a schedule printed by `format`. Raises FormatException on malformed text.
    let parse (text: string) : Schedule =
        try
            let text = text.Trim()
            let open' = text.IndexOf '['
            let close = text.LastIndexOf ']'
            let header = text.Substring(0, open').Split(' ', StringSplitOptions.RemoveEmptyEntries)
            let field (name: string) =
                header |> Array.pick (fun h -> if h.StartsWith(name + "=") then Some(h.Substring(name.Length + 1)) else None)
            let body = text.Substring(open' + 1, close - open' - 1)
            let steps =
                body.Split(';', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries)
                |> Array.map (fun s ->
                    let parts = s.Split(' ', StringSplitOptions.RemoveEmptyEntries)
                    { After = int parts[0]; Fault = parseFault parts[1] })
                |> List.ofArray
            { Seed = UInt64.Parse(field "seed"); Nodes = int (field "nodes"); Steps = steps }
        with
        | :? FormatException -> reraise ()
        | e -> raise (FormatException(sprintf "not a schedule: %s (%s)" text e.Message))

    /// The tick at which the last step fires.
    let length (schedule: Schedule) : int = schedule.Steps |> List.sumBy (fun s -> max 0 s.After)
