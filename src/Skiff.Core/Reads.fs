namespace Skiff.Core

/// Linearizable reads by ReadIndex (thesis §6.4): the leader notes its commit index, confirms it is still leader
/// by a heartbeat round acknowledged by a majority, then lets the reads be served once that index is applied.
/// Reads are batched: while one round is outstanding, new reads wait for the next.
[<RequireQualifiedAccess>]
module Reads =
    let private withLead (f: LeaderState -> LeaderState) (s: State) : State =
        match s.Leading with
        | Some lead -> { s with Leading = Some(f lead) }
        | None -> s

    /// Event.Read. A leader that cannot confirm its rounds (no quorum) would otherwise collect reads without end:
    /// past Options.MaxWaitingRequests waiting reads, more are refused.
    let request (id: RequestId) (s: State) : State =
        match s.Leading with
        | None -> State.emit (Effect.Reject(id, Rejection.NotLeader s.Leader)) s
        | Some l when l.ReadsWaiting >= s.Options.MaxWaitingRequests -> State.emit (Effect.Reject(id, Rejection.Overloaded)) s
        | Some _ when Membership.committedInTerm s ->
            withLead (fun l -> { l with ReadsQueued = id :: l.ReadsQueued; ReadsWaiting = l.ReadsWaiting + 1 }) s
        | Some _ -> withLead (fun l -> { l with ReadsAwaitingCommit = id :: l.ReadsAwaitingCommit; ReadsWaiting = l.ReadsWaiting + 1 }) s

    /// Answers a batch of reads: they stop waiting.
    let private ready (ids: RequestId list) (index: LogIndex) (s: State) : State =
        s
        |> State.emit (Effect.ReadReady(List.rev ids, index))
        |> withLead (fun l -> { l with ReadsWaiting = max 0 (l.ReadsWaiting - List.length ids) })

    /// Whether a majority of voters (this leader included, if it is one) has echoed `round` or later.
    let private confirmed (round: int64) (s: State) (lead: LeaderState) : bool =
        let voters = s.VoterIds
        let mutable acks = 0
        for v in voters do
            if
                v = s.Id
                || (match PeerMap.tryItem v lead.Progress with
                    | ValueSome pr -> pr.AckRound >= round
                    | ValueNone -> false)
            then
                acks <- acks + 1
        voters.Length > 0 && acks >= State.majority voters.Length

    /// After every step on a leader: release reads waiting for the first commit of the term, answer a confirmed
    /// batch, and start the next round if reads are queued.
    let settle (s: State) : State =
        match s.Leading with
        | None -> s
        | Some lead ->
            let s =
                if not lead.ReadsAwaitingCommit.IsEmpty && Membership.committedInTerm s then
                    withLead (fun l -> { l with ReadsQueued = l.ReadsQueued @ l.ReadsAwaitingCommit; ReadsAwaitingCommit = [] }) s
                else
                    s
            let s =
                match s.Leading with
                | Some({ ReadsInRound = Some batch } as l) when confirmed batch.Round s l ->
                    s |> ready batch.Ids batch.Index |> withLead (fun l -> { l with ReadsInRound = None })
                | _ -> s
            match s.Leading with
            | Some({ ReadsInRound = None; ReadsQueued = _ :: _ } as l) ->
                let ids = l.ReadsQueued
                let s = withLead (fun l -> { l with ReadsQueued = [] }) s
                // The round must start after the reads arrived: send it now rather than on the heartbeat timer.
                let s = Replication.heartbeat s
                match s.Leading with
                | Some l when confirmed l.Round s l -> ready ids s.Commit s
                | Some l -> withLead (fun l2 -> { l2 with ReadsInRound = Some { Round = l.Round; Index = s.Commit; Ids = ids } }) s
                | None -> s
            | _ -> s
