namespace Skiff.Core

/// Leadership transfer (thesis §3.10): the leader stops taking proposals, brings the target up to date, then sends
/// it TimeoutNow so it campaigns at once. Abandoned if the target has not caught up within an election timeout
/// (TransferTimedOut), or if this node still leads an election timeout after TimeoutNow (TransferOutcomeUnknown).
[<RequireQualifiedAccess>]
module Transfer =
    let private setTransfer (t: PendingTransfer option) (s: State) : State =
        match s.Leading with
        | Some lead -> { s with Leading = Some { lead with Transfer = t } }
        | None -> s

    /// Whether proposals are paused for a transfer.
    let inProgress (s: State) : bool =
        match s.Leading with
        | Some { Transfer = Some _ } -> true
        | _ -> false

    /// Sends TimeoutNow once the target holds the leader's whole log; until then keeps replicating to it.
    let settle (s: State) : State =
        match s.Leading with
        | Some({ Transfer = Some t } as lead) when not t.TimeoutSent ->
            match PeerMap.tryFind t.Target lead.Progress with
            | Some pr when pr.Match >= s.Log.LastIndex ->
                // From here the target may campaign at any moment: give its election a full timeout of its own.
                s |> State.send t.Target (Message.TimeoutNow s.Term) |> setTransfer (Some { t with TimeoutSent = true; Elapsed = 0 })
            | Some _ -> Replication.fill t.Target s
            | None -> s |> State.emit (Effect.Reject(t.Id, Rejection.Invalid "transfer target left the cluster")) |> setTransfer None
        | _ -> s

    /// Event.TransferLeadership.
    let request (id: RequestId) (target: NodeId) (s: State) : State =
        match s.Leading with
        | None -> State.emit (Effect.Reject(id, Rejection.NotLeader s.Leader)) s
        | Some { Transfer = Some _ } -> State.emit (Effect.Reject(id, Rejection.TransferInProgress)) s
        | Some _ when target = s.Id -> State.emit (Effect.Completed id) s
        | Some _ when not (State.isVoter target s) -> State.emit (Effect.Reject(id, Rejection.Invalid "transfer target is not a voter")) s
        | Some lead ->
            // Re-probe the target from its known match: appends to it may have been lost, and waiting for the
            // stall to show at heartbeats would eat into the transfer's time.
            let s =
                match PeerMap.tryFind target lead.Progress with
                | Some pr when pr.Match < s.Log.LastIndex && pr.Mode = ProgressMode.Replicate ->
                    Replication.setProgress target { pr with Mode = ProgressMode.Probe; Next = pr.Match + 1L; Inflight = [] } s
                | _ -> s
            setTransfer (Some { Id = id; Target = target; Elapsed = 0; TimeoutSent = false }) s

    /// Counts a tick; gives up after the maximum election timeout, saying what is known. Before TimeoutNow was
    /// sent the target never campaigns for this transfer: TransferTimedOut, leadership stays. After it, the
    /// target's election (if the message arrived) is decided within that timeout, and its vote request, of a
    /// higher term, deposes us (then the transfer is Completed, State.abandonLeadership). Still leading in the same
    /// term means TimeoutNow or the vote requests to us were lost, or the target is winning without us: the
    /// outcome is unknown and leadership may still move (TransferOutcomeUnknown). Either way proposals resume:
    /// pausing them until the term changes could pause them forever.
    let tick (s: State) : State =
        match s.Leading with
        | Some({ Transfer = Some t }) ->
            if t.Elapsed + 1 >= s.Options.ElectionTicksMax then
                let why = if t.TimeoutSent then Rejection.TransferOutcomeUnknown else Rejection.TransferTimedOut
                s |> State.emit (Effect.Reject(t.Id, why)) |> setTransfer None
            else
                setTransfer (Some { t with Elapsed = t.Elapsed + 1 }) s
        | _ -> s
