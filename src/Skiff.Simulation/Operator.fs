/// The simulated operator: asks the cluster for one membership change at a time (Fault.AddNode, Fault.RemoveNode,
/// Fault.UpdateNode), retrying at other nodes until a node completes it, rejects it as invalid, or its deadline
/// passes.
namespace Skiff.Simulation

open Skiff.Core

/// A membership change the operator is trying to make.
type internal ConfigOp = { Change: ConfigChange; Deadline: int64; mutable Target: int; mutable Rid: RequestId; mutable RetryAt: int64 }


/// The operator of one run. `step` hands an event to a node (the interpreter).
type internal Operator<'S>(world: World<'S>, step: Node<'S> -> Event -> unit) =
    let prng = world.Prng
    let nodes = world.Nodes
    let slotOf = world.SlotOf
    let log f = world.Log f
    let mutable configOp: ConfigOp option = None
    let mutable changes = 0
    let mutable updates = 0

    /// Effect.Reject for the operator's change: follow the hint, give up on an invalid change, else try elsewhere.
    let onReject (node: Node<'S>) rid why =
        match configOp with
        | Some op when op.Rid = rid ->
            log (fun () -> sprintf "operator: %A rejected by %s: %A" op.Change node.Name why)
            match why with
            | Rejection.NotLeader(Some hint) when slotOf.ContainsKey hint ->
                op.Target <- slotOf[hint]
                op.RetryAt <- world.Now + 1L
            | Rejection.Invalid _ -> configOp <- None
            | _ ->
                op.Target <- prng.Below nodes.Count
                op.RetryAt <- world.Now + 5L
            op.Rid <- 0L
        | _ -> ()

    let onCompleted (node: Node<'S>) rid =
        match configOp with
        | Some op when op.Rid = rid ->
            log (fun () -> sprintf "operator: %A completed by %s" op.Change node.Name)
            changes <- changes + 1
            match op.Change with
            | ConfigChange.UpdateServer _ -> updates <- updates + 1
            | _ -> ()
            configOp <- None
        | _ -> ()

    let runOperator () =
        match configOp with
        | Some op when op.Deadline <= world.Now ->
            log (fun () -> sprintf "operator: %A timed out" op.Change)
            configOp <- None
        | Some op when op.Rid = 0L && op.RetryAt <= world.Now ->
            let node = nodes[op.Target]
            if node.Alive then
                op.Rid <- world.NewRid()
                step node (Event.ChangeConfig(op.Rid, op.Change))
            else
                op.Target <- prng.Below nodes.Count
                op.RetryAt <- world.Now + 2L
        | _ -> ()

    /// Whether a change is under way (only one at a time).
    member _.Busy = configOp.IsSome

    /// Starts asking for `change` at a random node; it must be given up within 100 ticks.
    member _.Begin(change: ConfigChange) =
        configOp <- Some { Change = change; Deadline = world.Now + 100L; Target = prng.Below nodes.Count; Rid = 0L; RetryAt = world.Now }

    /// Sends the change (again) when it is due, or gives it up at its deadline.
    member _.Run() = runOperator ()

    member _.Rejected(node: Node<'S>, rid: RequestId, why: Rejection) = onReject node rid why
    member _.Completed(node: Node<'S>, rid: RequestId) = onCompleted node rid

    /// Membership changes completed.
    member _.Changes = changes

    /// Address updates (ConfigChange.UpdateServer) completed, counted in Changes too.
    member _.Updates = updates
