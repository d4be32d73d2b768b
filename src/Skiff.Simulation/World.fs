/// What every part of a simulated run shares: the settings, the one source of randomness, the network, the nodes,
/// the invariant checker, the trace and the two clocks. The parts that act on it (Interpreter, Workload, Operator
/// and the run in Simulator.fs) each own their own state; only this is common.
namespace Skiff.Simulation

open System.Collections.Generic
open Skiff.Core

type internal World<'S>(reducer: Reducer<'S>, settings: Settings, seed: uint64) =
    let prng = Prng(seed)
    let net = Network(prng)
    let inv = Invariants()
    let nodes = ResizeArray<Node<'S>>()
    let slotOf = Dictionary<NodeId, int>()
    let tracer = Tracer(settings.Trace)
    let mutable nextRid = 0L

    member _.Reducer = reducer
    member _.Settings = settings
    /// Decides everything random in the run, so that the same seed gives the same run.
    member _.Prng = prng
    member _.Net = net
    member _.Invariants = inv
    member _.Tracer = tracer
    /// Every node ever created, by slot.
    member _.Nodes = nodes
    /// The slot of each node id.
    member _.SlotOf = slotOf
    /// The simulated tick.
    member val Now = 0L with get, set
    /// A logical clock that orders the history: it advances at every reducer step and every client invocation
    /// and completion, so that invocation and completion times of different operations never tie.
    member val Clock = 0L with get, set
    /// Writes take 0 .. DiskMax ticks to become durable (Fault.SlowDisk).
    member val DiskMax = 0 with get, set

    /// A violation has been found: the run stops doing anything.
    member _.Failed = inv.Violation.IsSome

    /// Adds a trace line (built only when tracing is on).
    member this.Log(f: unit -> string) = tracer.Log(this.Now, inv.Step, f)

    /// A fresh request id.
    member _.NewRid() : RequestId =
        nextRid <- nextRid + 1L
        nextRid

    /// "n1" for a known node, the raw id otherwise.
    member _.SlotName(id: NodeId) =
        match slotOf.TryGetValue id with
        | true, s -> Slot.name s
        | _ -> string id

    /// A slot named by a fault, taken modulo the number of nodes so that every schedule is valid.
    member _.Wrap(k: int) = ((k % nodes.Count) + nodes.Count) % nodes.Count

    /// Creates the next node (not started).
    member _.AddNode(bootstrap: Configuration) : Node<'S> =
        let slotIndex = nodes.Count
        let node = Node<'S>(slotIndex, bootstrap)
        nodes.Add node
        slotOf[node.Id] <- slotIndex
        node

    /// The first running node that believes it leads, if any.
    member _.Leader() : Node<'S> option =
        nodes
        |> Seq.tryFind (fun n ->
            n.Alive
            && (match n.State with
                | ValueSome s -> reducer.Role s = Role.Leader
                | _ -> false))
