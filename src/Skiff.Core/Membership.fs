namespace Skiff.Core

/// Single-server membership changes (thesis §4.1–4.2.1). New servers join as learners and are promoted by the
/// leader once they have caught up; only one change is uncommitted at a time; a configuration entry takes effect
/// as soon as it is in the log. A leader only changes the configuration after committing an entry of its own
/// term (the fix to the single-server algorithm from the raft-dev list, thesis errata).
[<RequireQualifiedAccess>]
module Membership =
    let private withLead (f: LeaderState -> LeaderState) (s: State) : State =
        match s.Leading with
        | Some lead -> { s with Leading = Some(f lead) }
        | None -> s

    /// Whether the leader has committed an entry of its current term.
    let committedInTerm (s: State) : bool = LogView.hasTerm s.Commit s.Term s.Log

    /// Whether a configuration change is still uncommitted (or might be: nothing of this term is committed yet).
    let pending (s: State) : bool = State.configIndex s > s.Commit || not (committedInTerm s)

    let private proposeConfig (requestId: RequestId option) (config: Configuration) (s: State) : State =
        let entry = Replication.nextEntry (Payload.Config config) s
        s |> withLead (fun lead -> { lead with ConfigRequest = Some(requestId, entry.Index) }) |> Replication.propose [ entry ]

    /// A change already made (the member is there, at that address): done once whatever change is pending has
    /// committed. A bounded number of such requests wait (a change that cannot commit, no quorum, must not collect
    /// them without end).
    let private completeWhenSettled (id: RequestId) (lead: LeaderState) (s: State) : State =
        if not (pending s) then
            State.emit (Effect.Completed id) s
        elif List.length lead.ConfigWaiters >= s.Options.MaxWaitingRequests then
            State.emit (Effect.Reject(id, Rejection.Overloaded)) s
        else
            withLead (fun l -> { l with ConfigWaiters = id :: l.ConfigWaiters }) s

    /// Event.ChangeConfig.
    let request (id: RequestId) (change: ConfigChange) (s: State) : State =
        let reject r = State.emit (Effect.Reject(id, r)) s
        match s.Leading with
        | None -> reject (Rejection.NotLeader s.Leader)
        | Some lead when lead.Transfer.IsSome -> reject Rejection.TransferInProgress
        | Some lead ->
            let members = s.Config.Members
            match change with
            | ConfigChange.AddServer(node, address) ->
                match Map.tryFind node members with
                | Some m when m.Address = address ->
                    // Already a member: idempotent, done once whatever change is pending has committed. A joiner
                    // retries while it waits.
                    completeWhenSettled id lead s
                | Some _ -> reject (Rejection.Invalid "already a member with another address")
                | None when pending s || lead.ConfigRequest.IsSome -> reject Rejection.ConfigChangeInProgress
                | None ->
                    let m = { Id = node; Address = address; Voter = false }
                    // Another id at this address is an earlier incarnation of the node asking (it lost its data and
                    // came back with a new id): only one process can serve an address. As hashicorp/raft's AddVoter,
                    // the new id replaces it, in one entry that removes the old id and adds the new one as a
                    // learner: the voters change by one removal, a single-server change, and the learner is
                    // promoted once caught up. Never two members at one address (issue 13 point 5).
                    match members |> Map.tryPick (fun _ old -> if old.Address = address then Some old else None) with
                    | Some old when old.Id = s.Id -> reject (Rejection.Invalid "the address is the leader's own")
                    | Some old -> proposeConfig (Some id) { Members = members |> Map.remove old.Id |> Map.add node m } s
                    | None -> proposeConfig (Some id) { Members = Map.add node m members } s
            | ConfigChange.RemoveServer node ->
                match Map.tryFind node members with
                | None -> reject (Rejection.Invalid "not a member")
                | Some _ when pending s || lead.ConfigRequest.IsSome -> reject Rejection.ConfigChangeInProgress
                | Some m when m.Voter && s.Voters.Count = 1 -> reject (Rejection.Invalid "cannot remove the last voter")
                | Some _ -> proposeConfig (Some id) { Members = Map.remove node members } s
            | ConfigChange.UpdateServer(node, address) ->
                match Map.tryFind node members with
                | None -> reject (Rejection.Invalid "not a member")
                | Some m when m.Address = address -> completeWhenSettled id lead s
                | Some _ when members |> Map.exists (fun other o -> other <> node && o.Address = address) ->
                    reject (Rejection.Invalid "the address is another member's")
                | Some _ when pending s || lead.ConfigRequest.IsSome -> reject Rejection.ConfigChangeInProgress
                | Some m -> proposeConfig (Some id) { Members = Map.add node { m with Address = address } members } s

    /// After every step on a leader: complete committed changes, step down if this leader was removed, and
    /// promote a learner that has caught up and answers.
    let settle (s: State) : State =
        match s.Leading with
        | None -> s
        | Some lead ->
            let s =
                match lead.ConfigRequest with
                | Some(requestId, index) when index <= s.Commit ->
                    let s =
                        match requestId with
                        | Some id -> State.emit (Effect.Completed id) s
                        | None -> s
                    // Peers removed by the now committed change are no longer replicated to.
                    withLead (fun l -> { l with ConfigRequest = None }) s |> State.refreshConfig
                | _ -> s
            let s =
                match s.Leading with
                | Some l when not l.ConfigWaiters.IsEmpty && not (pending s) ->
                    let s = l.ConfigWaiters |> List.rev |> List.fold (fun s id -> State.emit (Effect.Completed id) s) s
                    withLead (fun l -> { l with ConfigWaiters = [] }) s
                | _ -> s
            let removed = not (State.isMemberAt s.Commit s) && State.configIndex s <= s.Commit
            if removed then
                State.becomeFollower s.Term None s
            else
                match s.Leading with
                // Only with learners among the members (the scan below would otherwise run on every step).
                | Some l when s.Voters.Count < s.Config.Members.Count && not (pending s) && l.ConfigRequest.IsNone && l.Transfer.IsNone ->
                    let caughtUp =
                        s.Config.Members
                        |> Map.toSeq
                        |> Seq.tryFind (fun (id, m) ->
                            not m.Voter
                            && (match PeerMap.tryFind id l.Progress with
                                | Some pr ->
                                    pr.Mode = ProgressMode.Replicate
                                    && pr.Match > 0L
                                    // Within PromotionLag of what a majority holds (the commit index), not of
                                    // the leader's last index: under a steady load every follower, voters
                                    // included, trails the last index by what arrives while an answer is on its
                                    // way, and a learner held to that bar was never promoted (issue 15).
                                    && pr.Match >= s.Commit - s.Options.PromotionLag
                                    // Heard from since the latest heartbeat round went out: a learner that caught
                                    // up and then crashed must not become a voter (with one voter left, the
                                    // cluster could no longer elect anyone). A healthy learner echoes every round.
                                    && pr.AckRound >= l.Round
                                | None -> false))
                    match caughtUp with
                    | Some(id, m) -> proposeConfig None { Members = Map.add id { m with Voter = true } s.Config.Members } s
                    | None -> s
                | _ -> s
