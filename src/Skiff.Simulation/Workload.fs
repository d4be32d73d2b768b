/// The simulated clients: each issues gets, puts, deletes and compare-and-swaps on a few keys, at most one at a
/// time, sends it to some node, follows leader hints, retries, and records what it saw in the history that the
/// linearizability checker reads. With Settings.Sessions, writes go in sessions and are retried until their
/// deadline, as the runtime's clients do.
namespace Skiff.Simulation

open System
open Skiff.Core
open Skiff.Simulation.Linearizability

/// Where a client's operation stands: being sent (again), or accepted and waiting for the node's state machine.
[<RequireQualifiedAccess>]
type internal Phase =
    | Sending
    | AwaitApply of node: int * index: LogIndex * term: Term
    | AwaitRead of node: int

/// A client's outstanding operation. The mutable fields track the current attempt (which node, which request id).
type internal ClientOp =
    {
        Action: Action
        Invoked: int64
        Deadline: int64
        /// The request's number in the client's session (0: outside any session).
        Sequence: int64
        /// Opens the client's session instead of performing `Action` (kept out of the history).
        OpensSession: bool
        mutable Target: int
        mutable Rid: RequestId
        mutable RetryAt: int64
        /// With sessions: when an accepted proposal still unanswered is sent again elsewhere.
        mutable ResendAt: int64
        mutable Phase: Phase
    }

/// One simulated client: at most one operation at a time, and its session when Settings.Sessions is on.
type internal Client =
    {
        Index: int
        mutable Op: ClientOp option
        mutable Written: int
        /// The client's session (0: none yet, or it expired).
        mutable Session: int64
        mutable NextSequence: int64
    }

/// The clients of one run. `step` hands an event to a node (the interpreter); the interpreter reports back
/// through the members below (see ClientPort).
/// With a `driver`, the clients run a user's programs (ModelCheck.fs) instead of random operations.
type internal Workload<'S>(world: World<'S>, step: Node<'S> -> Event -> unit, driver: ClientDriver option) =
    let options = world.Settings
    let prng = world.Prng
    let nodes = world.Nodes
    let slotOf = world.SlotOf
    let log f = world.Log f
    let inv = world.Invariants
    let failed () = world.Failed
    let clients =
        [| for i in 0 .. options.Clients - 1 -> { Index = i; Op = None; Written = 0; Session = 0L; NextSequence = 1L } |]
    let history = ResizeArray<Operation>()
    let keys = [| for k in 0 .. options.Keys - 1 -> sprintf "k%d" k |]
    /// Cleared after healing: clients stop starting operations so that the cluster can converge.
    let mutable clientsOn = true
    let mutable completed = 0
    let mutable timedOut = 0

    let clientOf (rid: RequestId) =
        clients
        |> Array.tryFind (fun c ->
            match c.Op with
            | Some op -> op.Rid = rid
            | None -> false)

    let finish (client: Client) (completion: Completion) =
        match client.Op with
        | Some op ->
            world.Clock <- world.Clock + 1L
            let completion =
                match completion with
                | Completion.Returned(_, output) -> Completion.Returned(world.Clock, output)
                | c -> c
            match completion with
            | Completion.TimedOut -> timedOut <- timedOut + 1
            | _ -> completed <- completed + 1
            let entry = { Client = client.Index; Invoked = op.Invoked; Action = op.Action; Completion = completion }
            if op.OpensSession then
                log (fun () -> sprintf "client %d: opening a session: %A" client.Index completion)
            else
                log (fun () -> "client: " + Operation.describe entry)
                history.Add entry
            client.Op <- None
            if not op.OpensSession then
                driver |> Option.iter (fun d -> d.Completed(client.Index, completion))
        | None -> ()

    let abandon (client: Client) =
        // The operation definitely did not take effect: it is left out of the history.
        log (fun () -> sprintf "client %d: operation failed definitely" client.Index)
        client.Op <- None
        // A user's program stops here: whether its earlier steps took effect is for its model to judge.
        driver |> Option.iter (fun d -> d.Completed(client.Index, Completion.TimedOut))

    /// With sessions a write is sent again (same session and number) wherever it may have been lost.
    let retries (op: ClientOp) = op.Sequence > 0L || op.OpensSession

    let resend (client: Client) (delay: int) =
        let op = client.Op.Value
        log (fun () -> sprintf "client %d: sending request %d again" client.Index op.Sequence)
        op.Target <- prng.Below nodes.Count
        op.Phase <- Phase.Sending
        op.Rid <- 0L
        op.RetryAt <- world.Now + int64 delay

    let serveReads (node: Node<'S>) =
        if node.WaitingReads.Count > 0 then
            let ready = node.WaitingReads |> Seq.filter (fun struct (_, i) -> i <= node.Applied) |> List.ofSeq
            node.WaitingReads.RemoveAll(fun struct (_, i) -> i <= node.Applied) |> ignore
            for struct (rid, _) in ready do
                match clientOf rid with
                | Some c ->
                    match c.Op.Value.Action with
                    | Action.Get key -> finish c (Completion.Returned(0L, Output.Value(KvModel.get node.Kv.Data key)))
                    | _ -> ()
                | None -> ()

    let onAccepted (node: Node<'S>) rid index term =
        match clientOf rid with
        | Some c when c.Op.Value.Target = node.Slot ->
            c.Op.Value.Phase <- Phase.AwaitApply(node.Slot, index, term)
            c.Op.Value.ResendAt <- world.Now + int64 options.ResendTicks
            if node.Applied >= index then
                () // the outcome is unknown: it waits for the timeout
            else
                node.AcceptedWaits.Add(struct (rid, index, term))
        | _ -> ()

    let resolveWrites (node: Node<'S>) (entry: Entry) (result: LogResult option) =
        if node.AcceptedWaits.Count > 0 then
            let due = node.AcceptedWaits |> Seq.filter (fun struct (_, i, _) -> i = entry.Index) |> List.ofSeq
            node.AcceptedWaits.RemoveAll(fun struct (_, i, _) -> i <= entry.Index) |> ignore
            for struct (rid, _, term) in due do
                match clientOf rid with
                | Some c ->
                    if term = entry.Term then
                        inv.ObserveAcknowledged(entry.Index, term)
                        match result with
                        | Some(LogResult.SessionOpened id) when c.Op.Value.OpensSession ->
                            log (fun () -> sprintf "client %d: session %d opened" c.Index id)
                            c.Session <- id
                            c.Op <- None
                        | Some r ->
                            match Sessions.resultOf r with
                            | Some done' -> finish c (Completion.Returned(0L, Output.Result done'))
                            | None ->
                                // The session is gone: whether an earlier attempt took effect is unknown.
                                c.Session <- 0L
                                finish c Completion.TimedOut
                        | None -> inv.Contract(sprintf "%s: the entry at %d accepted for a write is not a command" node.Name entry.Index)
                    elif retries c.Op.Value then
                        resend c 1
                    else
                        abandon c
                | None -> ()

    let onReadReady (node: Node<'S>) rids index =
        for rid in rids do
            match clientOf rid with
            | Some c when c.Op.Value.Target = node.Slot ->
                c.Op.Value.Phase <- Phase.AwaitRead node.Slot
                node.WaitingReads.Add(struct (rid, index))
            | _ -> ()
        serveReads node

    /// Effect.Reject for a client's request; false if the request is not a client's (it may be the operator's).
    let onReject (node: Node<'S>) rid why =
        match clientOf rid with
        | Some c when c.Op.Value.Target = node.Slot ->
            let op = c.Op.Value
            let retry target delay =
                op.Target <- target
                op.Phase <- Phase.Sending
                op.Rid <- 0L
                op.RetryAt <- world.Now + int64 delay
            match why, op.Action with
            | Rejection.NotLeader(Some hint), _ when slotOf.ContainsKey hint -> retry slotOf[hint] 1
            | Rejection.NotLeader _, _ -> retry (prng.Below nodes.Count) 3
            | (Rejection.TransferInProgress | Rejection.ConfigChangeInProgress | Rejection.Overloaded), _ -> retry op.Target 3
            | Rejection.LeadershipLost, Action.Get _ -> retry (prng.Below nodes.Count) 2
            | Rejection.LeadershipLost, _ when retries op -> resend c 2
            | Rejection.LeadershipLost, _ -> finish c Completion.TimedOut
            | (Rejection.Invalid _ | Rejection.TransferTimedOut | Rejection.TransferOutcomeUnknown), _ -> abandon c
            true
        | _ -> false

    let sendClient (client: Client) =
        match client.Op with
        | Some op when op.Phase = Phase.Sending && op.RetryAt <= world.Now ->
            let node = nodes[op.Target]
            if not node.Alive then
                // Connection refused: try another node a little later.
                op.Target <- prng.Below nodes.Count
                op.RetryAt <- world.Now + 2L
            else
                let rid = world.NewRid()
                op.Rid <- rid
                op.RetryAt <- Int64.MaxValue
                match op.Action with
                | Action.Get _ -> step node (Event.Read rid)
                | Action.Write command ->
                    let logCommand =
                        if op.OpensSession then
                            LogCommand.OpenSession(world.Now, int64 options.SessionTimeout, "")
                        elif op.Sequence > 0L then
                            let stamp = { Session = client.Session; Sequence = op.Sequence; Acknowledged = op.Sequence; Time = world.Now }
                            LogCommand.InSession(stamp, command)
                        else
                            LogCommand.Plain command
                    step node (Event.Propose(rid, LogCommandCodec.encode logCommand))
        | _ -> ()

    let startOp (client: Client) (action: Action) (sequence: int64) (opensSession: bool) =
        let op =
            { Action = action
              Invoked = world.Clock
              Deadline = world.Now + int64 options.ClientTimeout
              Sequence = sequence
              OpensSession = opensSession
              Target = prng.Below nodes.Count
              Rid = 0L
              RetryAt = world.Now
              ResendAt = Int64.MaxValue
              Phase = Phase.Sending }
        client.Op <- Some op
        sendClient client

    let randomAction (client: Client) =
        let key = keys[prng.Below keys.Length]
        let value () =
            client.Written <- client.Written + 1
            Text.Encoding.ASCII.GetBytes(sprintf "c%dv%d" client.Index client.Written)
        let recent () =
            // A value some client may have written to the key: makes compare-and-swap succeed sometimes.
            if prng.Chance 30 then
                None
            else
                let c = prng.Below clients.Length
                let n = clients[c].Written
                if n = 0 then
                    None
                else
                    Some(Text.Encoding.ASCII.GetBytes(sprintf "c%dv%d" c (max 1 (n - prng.Below 2))))
        let action =
            match prng.Below 10 with
            | 0
            | 1
            | 2
            | 3 -> Action.Get key
            | 4
            | 5
            | 6 -> Action.Write(Command.Insert(key, value ()))
            | 7 -> Action.Write(Command.Remove key)
            | _ ->
                let expected = recent ()
                Action.Write(Command.CompareAndSwap(key, expected, (if prng.Chance 20 then None else Some(value ()))))
        action

    let startAction (client: Client) (action: Action) =
        let sequence =
            match action with
            | Action.Write _ when options.Sessions && client.Session > 0L ->
                client.NextSequence <- client.NextSequence + 1L
                client.NextSequence - 1L
            | _ -> 0L
        world.Clock <- world.Clock + 1L
        startOp client action sequence false

    let newOp (client: Client) =
        let action =
            match driver with
            | Some d -> d.Next client.Index
            | None -> Some(randomAction client)
        match action with
        | Some action -> startAction client action
        | None -> ()

    let openSession (client: Client) = startOp client (Action.Write(Command.Remove "session")) 0L true

    let runClients () =
        for client in clients do
            if not (failed ()) then
                match client.Op with
                | Some op when op.Deadline <= world.Now ->
                    match op.Action with
                    | Action.Get _ -> finish client Completion.TimedOut
                    | Action.Write _ -> finish client Completion.TimedOut
                | Some op when
                    retries op
                    && op.ResendAt <= world.Now
                    && (match op.Phase with
                        | Phase.AwaitApply _ -> true
                        | _ -> false)
                    ->
                    resend client 0
                    sendClient client
                | Some _ -> sendClient client
                | None ->
                    if clientsOn && prng.Chance options.OpPercent then
                        if options.Sessions && client.Session = 0L then openSession client else newOp client

    /// Lets every client act for this tick: time out, resend, send, or start a new operation.
    member _.Run() = runClients ()

    /// Stops clients from starting new operations (outstanding ones go on).
    member _.Stop() = clientsOn <- false

    /// Records every outstanding operation as timed out (its outcome is unknown) and returns the history.
    member _.Finish() : Operation list =
        for c in clients do
            finish c Completion.TimedOut
        driver |> Option.iter (fun d -> d.Finish())
        List.ofSeq history

    /// Client operations that returned.
    member _.Completed = completed
    /// Client operations that timed out.
    member _.TimedOut = timedOut

    member _.Accepted(node: Node<'S>, rid: RequestId, index: LogIndex, term: Term) = onAccepted node rid index term
    /// Effect.Reject for a client's request; false if it is not a client's.
    member _.Rejected(node: Node<'S>, rid: RequestId, why: Rejection) : bool = onReject node rid why
    member _.ReadReady(node: Node<'S>, rids: RequestId list, index: LogIndex) = onReadReady node rids index
    member _.Applied(node: Node<'S>, entry: Entry, result: LogResult option) = resolveWrites node entry result
    member _.StateAdvanced(node: Node<'S>) = serveReads node
