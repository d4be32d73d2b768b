namespace Skiff.Core

/// Leader election (thesis §3.4) with Pre-Vote (§9.6) and leader stickiness (§4.2.3): a node that heard from a
/// leader within the minimum election timeout refuses to help unseat it, unless the candidate was asked to take
/// over by that leader (Transfer=true). Votes are made durable before they are sent (PersistHardState comes first).
[<RequireQualifiedAccess>]
module Election =
    /// A fresh leader: track every peer, then append a Noop of the new term so earlier entries can commit.
    let becomeLeader (s: State) : State =
        let lead =
            { Progress = PeerMap.empty
              Round = 0L
              HeartbeatElapsed = 0
              QuorumElapsed = 0
              ReadsAwaitingCommit = []
              ReadsInRound = None
              ReadsQueued = []
              Transfer = None
              ConfigRequest = None
              ConfigWaiters = []
              ReadsWaiting = 0
              Uncommitted = 0L }
        let s =
            { s with
                Standing = { s.Standing with Role = Role.Leader; Leader = Some s.Id; Votes = Map.empty; CampaignTransfer = false }
                Leading = Some lead }
            |> State.refreshConfig
        Replication.propose [ Replication.nextEntry Payload.Noop s ] s

    /// Whether this node would refuse to unseat its leader: it is a healthy leader itself or it heard from one
    /// within the minimum election timeout. Only with CheckQuorum, as etcd: the lease is a promise that a leader
    /// which stops hearing from a majority steps down within that time. Without CheckQuorum a leader that can
    /// send but not hear (or commit) would lead forever, and followers that still hear it would refuse every
    /// candidate, so that nothing progresses until the links heal.
    let inLease (s: State) : bool =
        s.Options.CheckQuorum
        && (match s.Role with
            | Role.Leader -> true
            | _ -> s.Leader.IsSome && s.ElectionElapsed < s.Options.ElectionTicksMin)

    let private tally (s: State) =
        let voters = s.Voters
        let granted = voters |> Seq.filter (fun v -> Map.tryFind v s.Votes = Some true) |> Seq.length
        let refused = voters |> Seq.filter (fun v -> Map.tryFind v s.Votes = Some false) |> Seq.length
        granted, refused, State.quorum voters

    let private requestVotes (preVote: bool) (s: State) : State =
        let request =
            Message.Vote
                { Term = (if preVote then s.Term + 1L else s.Term)
                  Candidate = s.Id
                  LastLogIndex = s.Log.LastIndex
                  LastLogTerm = LogView.lastTerm s.Log
                  PreVote = preVote
                  Transfer = s.CampaignTransfer }
        s.Voters |> Set.remove s.Id |> Set.fold (fun s v -> State.send v request s) s

    /// Starts a campaign. With `preVote`, first ask whether we could win without touching the term; `transfer`
    /// marks a campaign ordered by the leader (TimeoutNow). Nodes that are not voters never campaign.
    let rec campaign (preVote: bool) (transfer: bool) (s: State) : State =
        if not (State.canCampaign s) || s.Role = Role.Leader then
            s
        else
            // A pre-vote raises no term and casts no vote; a real campaign does both, durably.
            let s = if preVote then s else State.setHardState (s.Term + 1L) (Some s.Id) s
            let s =
                { s with
                    Standing =
                        { s.Standing with
                            Role = (if preVote then Role.PreCandidate else Role.Candidate)
                            Leader = None
                            Votes = Map.ofList [ s.Id, true ]
                            CampaignTransfer = transfer && not preVote } }
            let s = State.resetElectionTimer s
            let granted, _, quorum = tally s
            if granted >= quorum then
                if preVote then campaign false false s else becomeLeader s
            else
                requestVotes preVote s

    /// Answers a (pre-)vote request of any term.
    let handleVote (from: NodeId) (m: VoteRequest) (s: State) : State =
        let reply granted (term: Term) (s: State) =
            State.send from (Message.VoteReply { Term = term; Granted = granted; PreVote = m.PreVote }) s
        if m.Term < s.Term then
            reply false s.Term s
        // A candidate that is not a voter in our newest configuration gets no vote, unless its log is strictly
        // ahead of ours: then it may hold a configuration we have not seen (one that adds it), so only the usual
        // rules apply (simulation finding 7). Otherwise we know every configuration it knows (equal logs are
        // identical), so it has been removed or was never added: granting would let a removed node that cannot
        // know its removal committed collect votes it cannot use, each grant restarting our election timer so
        // that we, who are electable, rarely campaign (finding 6). Refusing cannot stall the cluster: we are a
        // voter wherever it counts votes, and at least as up to date, so whoever would elect it can elect us.
        // A node that has joined no cluster yet (empty configuration) judges no one.
        elif
            not s.Config.Members.IsEmpty
            && not (State.isVoterIn from s.Config)
            && not (LogView.isAhead m.LastLogTerm m.LastLogIndex s.Log)
        then
            // The term: a removed node whose removal we know committed cannot learn it from anyone (no leader
            // replicates to it), so its terms are left alone, or it would unseat every leader (as hashicorp/raft).
            // While the removal is uncommitted as far as we know it is still a member (as etcd, which applies
            // configurations at commit) and the term rule holds (thesis Figure 3.1): other voters behind us still
            // grant it, and if we stayed a term behind its campaigns, each of ours would come in a term whose vote
            // it had already taken, term after term (finding 8). Moving the term does not restart our election
            // timer (thesis Figure 3.1 restarts it on a granted vote or a leader's AppendEntries only), so we
            // still campaign on time; a node in a leader's lease keeps its term (§4.2.3). A node that knows no
            // leader follows the term even of a removed node (finding 10): it unseats no one, and without it a
            // stale voter that still grants the removed node carries its terms to us in its refusals, each one
            // ending our campaign, term after term; a node that knows its leader keeps its term.
            let leaderless = s.Leader.IsNone && s.Role <> Role.Leader
            if m.Term > s.Term && not m.PreVote && (leaderless || State.isVoterIn from (State.configAt s.Commit s)) && not (inLease s) then
                let s' = State.becomeFollower m.Term None s
                let s' =
                    { s' with ElectionElapsed = s.ElectionElapsed; Standing = { s'.Standing with ElectionTimeout = s.ElectionTimeout } }
                reply false s'.Term s'
            else
                reply false s.Term s
        elif m.Term > s.Term && not m.Transfer && inLease s then
            reply false s.Term s
        else
            // A real vote request of a higher term moves us to that term; a pre-vote changes nothing. Moving the
            // term does not restart a follower's (or candidate's) election timer: the thesis (Figure 3.1) restarts
            // it only on granting a vote (below) or on AppendEntries from the current leader. Otherwise every
            // campaign of a stale-log node we refuse would hold back our own, and when stale-log nodes are a
            // majority the only electable nodes would rarely campaign first (finding 5). A leader deposed this way
            // starts a fresh wait.
            let s =
                if m.Term > s.Term && not m.PreVote then
                    let moved = State.becomeFollower m.Term None s
                    if s.Role = Role.Leader then
                        moved
                    else
                        { moved with
                            ElectionElapsed = s.ElectionElapsed
                            Standing = { moved.Standing with ElectionTimeout = s.ElectionTimeout } }
                else
                    s
            let upToDate = LogView.isAtLeastAsUpToDate m.LastLogTerm m.LastLogIndex s.Log
            let canVote =
                s.VotedFor = Some from
                || (s.VotedFor.IsNone && s.Leader.IsNone && s.Role <> Role.Leader)
                || (m.PreVote && m.Term > s.Term)
            if canVote && upToDate then
                if m.PreVote then
                    reply true m.Term s
                else
                    // A repeated grant re-asks for the write: the first may not be durable yet, and this reply
                    // must not overtake it (a crash would forget the vote and allow a second one).
                    let s =
                        if s.VotedFor = Some from then
                            State.emit (Effect.PersistHardState { Term = s.Term; VotedFor = s.VotedFor }) s
                        else
                            State.setHardState s.Term (Some from) s
                    s |> State.resetElectionTimer |> reply true s.Term
            elif
                s.Role = Role.Candidate && not m.PreVote && s.VotedFor = Some s.Id && LogView.isAhead m.LastLogTerm m.LastLogIndex s.Log
            then
                // We refuse only because we voted for ourselves, and this candidate's log is ahead of ours: where
                // it needs our vote (its configuration may count on us) we would collide term after term, both
                // restarting our timers when the campaigns fail (finding 5: a self-removing leader and a stale
                // voter, 100+ ticks without a leader). Stop campaigning and wait longer than any timeout before
                // the next campaign, so that its next campaign comes first and finds us free to vote. Safe: the
                // vote stays cast; we only give up a campaign.
                let t, rng = Rng.range s.Options.ElectionTicksMin s.Options.ElectionTicksMax s.Rng
                let s = State.becomeFollower s.Term None s
                { s with
                    ElectionElapsed = 0
                    Standing = { s.Standing with ElectionTimeout = s.Options.ElectionTicksMax + t; Rng = rng } }
                |> reply false s.Term
            else
                reply false s.Term s

    /// Counts a (pre-)vote answer of the current campaign.
    let handleVoteReply (from: NodeId) (m: VoteReply) (s: State) : State =
        let relevant =
            match s.Role with
            // A grant carries the term asked for (ours + 1); one for another term answers an older campaign (we
            // have changed terms since) and must not count. A refusal carries the voter's term: one below ours is
            // just as old (a newer one has already made us follow, in `Raft.receive`).
            | Role.PreCandidate -> m.PreVote && (if m.Granted then m.Term = s.Term + 1L else m.Term >= s.Term)
            | Role.Candidate -> not m.PreVote && m.Term = s.Term
            | _ -> false
        if not relevant || not (s.Voters.Contains from) then
            s
        else
            let s = { s with Standing = { s.Standing with Votes = Map.add from m.Granted s.Votes } }
            let granted, refused, quorum = tally s
            if granted >= quorum then
                if s.Role = Role.PreCandidate then campaign false false s else becomeLeader s
            elif refused >= quorum then
                State.becomeFollower s.Term None s
            else
                s

    /// The leader asks us to take over (leadership transfer): campaign at once, skipping the pre-vote.
    let handleTimeoutNow (from: NodeId) (term: Term) (s: State) : State =
        if term = s.Term && s.Leader = Some from && s.Role = Role.Follower then campaign false true s else s
