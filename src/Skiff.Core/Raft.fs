namespace Skiff.Core

/// The Raft reducer: `step : State -> Event -> State * Effect list`, pure, total and deterministic. Each event is
/// dispatched to a function for the node's role (as etcd-io/raft's stepLeader/stepCandidate/stepFollower), then a
/// settle pass derives what follows from the new state (commit, completions, reads, apply, snapshots).
/// Effects are carried out in list order, except that a Send need only wait for earlier persistence effects in
/// the same list (docs/architecture.md).
[<RequireQualifiedAccess>]
module Raft =
    // ---- Queries --------------------------------------------------------------------------------------------

    /// This node's id.
    let id (s: State) : NodeId = s.Id
    /// Current role.
    let role (s: State) : Role = s.Role
    /// Current term.
    let term (s: State) : Term = s.Term
    /// Vote cast in the current term.
    let votedFor (s: State) : NodeId option = s.VotedFor
    /// The durable part of the state as the reducer sees it.
    let hardState (s: State) : HardState = { Term = s.Term; VotedFor = s.VotedFor }
    /// The leader of the current term, if known.
    let leader (s: State) : NodeId option = s.Leader
    /// Whether this node is the leader.
    let isLeader (s: State) : bool = s.Role = Role.Leader
    /// Highest index known committed.
    let commitIndex (s: State) : LogIndex = s.Commit
    /// Highest index handed to the state machine.
    let appliedIndex (s: State) : LogIndex = s.Applied
    /// The configuration in force (the newest in the log).
    let configuration (s: State) : Configuration = s.Config
    /// Index of the newest log entry.
    let lastIndex (s: State) : LogIndex = s.Log.LastIndex
    /// Term of the newest log entry.
    let lastTerm (s: State) : Term = LogView.lastTerm s.Log
    /// First index still in storage.
    let firstIndex (s: State) : LogIndex = s.Log.FirstIndex
    /// Highest index known durable locally.
    let persistedIndex (s: State) : LogIndex = s.Log.Persisted
    /// The latest snapshot (Index 0 if none).
    let snapshot (s: State) : SnapshotMeta = s.Snapshot
    /// The term of entry `i`, if known.
    let termAt (i: LogIndex) (s: State) : Term option = LogView.termAt i s.Log
    /// The options in use (sanitised).
    let options (s: State) : Options = s.Options
    /// A leader's view of a follower's replication progress.
    let progress (peer: NodeId) (s: State) : Progress option = Replication.progress peer s

    // ---- Start ----------------------------------------------------------------------------------------------

    /// Builds a node's state from what its storage holds, and the effects to announce it. A sole voter (a new
    /// one-node cluster) campaigns at once.
    let init (start: Start) : State * Effect list =
        let o = Options.sanitise start.Options
        let snap = start.Snapshot |> Option.defaultValue { Index = 0L; Term = 0L; Configuration = start.Bootstrap }
        // The stored log: [firstIndex, lastIndex]. An empty log sits right after the snapshot.
        let lastIndex = max start.LastIndex snap.Index
        let firstIndex = if start.LastIndex < snap.Index || start.FirstIndex < 1L then snap.Index + 1L else start.FirstIndex
        let termFromBoundaries (i: LogIndex) =
            start.TermBoundaries
            |> List.filter (fun (b, _) -> b <= i)
            |> List.sortByDescending fst
            |> List.tryHead
            |> Option.map snd
        // The view must know the term of firstIndex - 1 (the entry before the first it sends). When storage kept
        // a tail before the snapshot, that term may be unknown: then the first stored entry serves as the base.
        let firstIndex, baseTerm =
            let baseIndex = firstIndex - 1L
            if baseIndex = snap.Index then
                firstIndex, snap.Term
            elif baseIndex = 0L then
                firstIndex, 0L
            else
                match termFromBoundaries baseIndex with
                | Some t -> firstIndex, t
                | None -> firstIndex + 1L, termFromBoundaries firstIndex |> Option.defaultValue snap.Term
        let log = LogView.create o.WindowSize o.WindowBytes firstIndex baseTerm lastIndex start.TermBoundaries start.RecentEntries
        let logConfigs =
            (start.LogConfigurations
             @ (start.RecentEntries
                |> List.choose (fun e ->
                    match e.Payload with
                    | Payload.Config c -> Some(e.Index, c)
                    | _ -> None)))
            |> List.filter (fun (i, _) -> i > snap.Index && i <= log.LastIndex)
            |> List.sortByDescending fst
            |> List.distinctBy fst
        let configs = logConfigs @ [ snap.Index, snap.Configuration ]
        let applied = max snap.Index (min start.Applied log.LastIndex)
        // Entries up to the recorded commit index are committed: apply them now (below), not after a leader's
        // first message, so a restarted node never serves reads from an older state than it served before.
        let commit = max applied (min start.CommitHint log.LastIndex)
        let s0 =
            { Standing =
                { Standing.Id = start.Id
                  Standing.Options = o
                  Standing.Rng = start.Seed
                  Standing.Term = max 0L start.HardState.Term
                  Standing.VotedFor = start.HardState.VotedFor
                  Standing.Role = Role.Follower
                  Standing.Leader = None
                  Standing.ApplyLoading = false
                  Standing.Snapshot = snap
                  Standing.Snapshotting = false
                  Standing.Configs = configs
                  Standing.Config = Configuration.Empty
                  Standing.Voters = Set.empty
                  Standing.VoterIds = [||]
                  Standing.IsMember = false
                  Standing.ElectionTimeout = o.ElectionTicksMax
                  Standing.Votes = Map.empty
                  Standing.CampaignTransfer = false
                  Standing.InstallPending = None }
              Log = log
              Commit = commit
              Applied = applied
              AppliedBytes = 0L
              ElectionElapsed = 0
              LeaderMatch = 0L
              Acked = 0L
              LastRound = 0L
              Leading = None
              Out = [] }
        let s = s0 |> State.resetElectionTimer
        let cfg = State.configAt log.LastIndex s
        let s = { s with Standing = State.withConfig cfg s.Standing } |> State.emit (Effect.ConfigurationChanged cfg)
        let s = if cfg.Voters = Set.singleton s.Id then Election.campaign false false s else s
        let s = s |> State.emit (Effect.RoleChanged(s.Role, s.Term, s.Leader)) |> Applying.apply
        { s with Out = [] }, List.rev s.Out

    // ---- Per-role steps -------------------------------------------------------------------------------------

    /// Whether this node would start an election when its timer fires.
    let private tickElection (s: State) : State =
        let s = { s with ElectionElapsed = s.ElectionElapsed + 1 }
        if s.ElectionElapsed < s.ElectionTimeout then
            s
        elif State.canCampaign s then
            Election.campaign s.Options.PreVote false s
        // A node that may not campaign (a learner, a removed node) lets its timer stay expired instead of
        // restarting it, as etcd (electionElapsed keeps growing on a non-promotable node): restarting it would
        // renew, every timeout, the lease of a leader it has not heard from since (Election.inLease), so it would
        // refuse the votes of the candidate it needs most of the time.
        else
            { s with ElectionElapsed = s.ElectionTimeout }

    /// CheckQuorum: a leader that has not heard from a majority of voters within the minimum election timeout
    /// steps down, so that a partitioned leader stops serving and a cluster with a new leader is not disturbed.
    let private checkQuorum (s: State) : State =
        match s.Leading with
        | None -> s
        | Some lead ->
            let voters = s.VoterIds
            let mutable active = 0
            for v in voters do
                if
                    v = s.Id
                    || (match PeerMap.tryItem v lead.Progress with
                        | ValueSome p -> p.Active
                        | ValueNone -> false)
                then
                    active <- active + 1
            let reset = lead.Progress |> PeerMap.map (fun _ p -> { p with Active = false })
            let s = { s with Leading = Some { lead with Progress = reset; QuorumElapsed = 0 } }
            if s.Options.CheckQuorum && active < State.majority voters.Length then
                State.becomeFollower s.Term None s
            else
                s

    let private tickLeader (s: State) : State =
        match s.Leading with
        | None -> s
        | Some lead ->
            let lead = { lead with HeartbeatElapsed = lead.HeartbeatElapsed + 1; QuorumElapsed = lead.QuorumElapsed + 1 }
            let s = { s with Leading = Some lead }
            let s = if lead.HeartbeatElapsed >= s.Options.HeartbeatTicks then Replication.heartbeat s else s
            let s = s |> Snapshots.tick |> Transfer.tick
            if lead.QuorumElapsed >= s.Options.ElectionTicksMin then checkQuorum s else s

    let private propose (id: RequestId) (command: byte[]) (s: State) : State =
        match s.Role with
        | Role.Leader when Transfer.inProgress s -> State.emit (Effect.Reject(id, Rejection.TransferInProgress)) s
        | Role.Leader ->
            let entry = Replication.nextEntry (Payload.Command command) s
            if Replication.admits (int64 (LogView.entrySize entry)) s then
                s |> State.emit (Effect.Accepted(id, entry.Index, entry.Term)) |> Replication.propose [ entry ]
            else
                State.emit (Effect.Reject(id, Rejection.Overloaded)) s
        | _ -> State.emit (Effect.Reject(id, Rejection.NotLeader s.Leader)) s

    /// Term bookkeeping for AppendEntries/Snapshot from a leader of our term or newer: follow it.
    let private followSender (from: NodeId) (term: Term) (s: State) : State =
        let fromLeader =
            match s.Leader with
            | Some l -> l = from
            | None -> false
        if term > s.Term || s.Role <> Role.Follower || not fromLeader then
            State.becomeFollower term (Some from) s
        elif s.ElectionElapsed = 0 then
            s
        else
            { s with ElectionElapsed = 0 }

    let private stepLeader (from: NodeId) (m: Message) (s: State) : State =
        match m with
        | Message.AppendReply r when r.Term = s.Term -> Replication.handleAppendReply from r s
        | Message.SnapshotReply r when r.Term = s.Term -> Snapshots.handleSnapshotReply from r s
        | _ -> s

    let private stepCandidate (from: NodeId) (m: Message) (s: State) : State =
        match m with
        | Message.VoteReply r -> Election.handleVoteReply from r s
        | _ -> s

    let private stepFollower (from: NodeId) (m: Message) (s: State) : State =
        match m with
        | Message.TimeoutNow t -> Election.handleTimeoutNow from t s
        | _ -> s

    /// A message from a peer: first the term rules shared by all roles (thesis Figure 3.1), then the role's step.
    let private receive (env: Envelope) (s: State) : State =
        let from = env.From
        if env.To <> s.Id || from = s.Id then
            s
        else
            match env.Message with
            | Message.Vote m -> Election.handleVote from m s
            | Message.Append m ->
                if m.Term < s.Term then
                    // A stale leader: tell it the current term so that it steps down.
                    State.send
                        from
                        (Message.AppendReply
                            { Term = s.Term; Success = false; MatchIndex = 0L; ConflictIndex = 0L; ConflictTerm = None; Round = m.Round })
                        s
                else
                    s |> followSender from m.Term |> FollowerReplication.handleAppend from m
            | Message.Snapshot m ->
                if m.Term < s.Term then
                    State.send from (Message.SnapshotReply { Term = s.Term; MatchIndex = 0L }) s
                else
                    s |> followSender from m.Term |> Snapshots.handleSnapshot from m
            | Message.VoteReply r when r.Term > s.Term && not (r.PreVote && r.Granted) -> State.becomeFollower r.Term None s
            | Message.AppendReply r when r.Term > s.Term -> State.becomeFollower r.Term None s
            | Message.SnapshotReply r when r.Term > s.Term -> State.becomeFollower r.Term None s
            | m ->
                match s.Role with
                | Role.Leader -> stepLeader from m s
                | Role.Candidate
                | Role.PreCandidate -> stepCandidate from m s
                | Role.Follower -> stepFollower from m s

    /// What follows from the new state, whatever the event was.
    let private settle (s: State) : State =
        s
        |> Commit.maybeCommit
        |> Membership.settle
        |> Transfer.settle
        |> Reads.settle
        |> Applying.apply
        |> Applying.releaseWindow
        |> Snapshots.maybeTake

    // ---- Step -----------------------------------------------------------------------------------------------

    /// Consumes one event; returns the new state and the effects to carry out, in order.
    let step (s: State) (ev: Event) : State * Effect list =
        let role0, term0, leader0 = s.Role, s.Term, s.Leader
        // States returned by step already have an empty Out: avoid copying the whole record for nothing.
        let s = if s.Out.IsEmpty then s else { s with Out = [] }
        let s =
            match ev with
            | Event.Tick ->
                match s.Role with
                | Role.Leader -> tickLeader s
                | _ -> tickElection s
            | Event.Receive env -> receive env s
            | Event.Propose(id, command) -> propose id command s
            | Event.Read id -> Reads.request id s
            | Event.ChangeConfig(id, change) -> Membership.request id change s
            | Event.TransferLeadership(id, target) -> Transfer.request id target s
            | Event.Persisted(index, term) ->
                let s =
                    match s.InstallPending with
                    | Some i when index > i && LogView.hasTerm index term s.Log ->
                        { s with Standing = { s.Standing with InstallPending = None } }
                    | _ -> s
                { s with Log = LogView.persisted index term s.Log } |> FollowerReplication.acknowledgePersisted
            | Event.EntriesLoaded(LoadPurpose.Replicate peer, entries) -> Replication.entriesLoadedFor peer entries s
            | Event.EntriesLoaded(LoadPurpose.Apply, entries) -> Applying.entriesLoadedForApply entries s
            | Event.SnapshotTaken meta -> Snapshots.taken meta s
            | Event.SnapshotWanted -> Snapshots.wanted s
        let s = settle s
        let s =
            // Field by field: no tuples, no generic structural equality on every step.
            let leaderSame =
                match s.Leader, leader0 with
                | None, None -> true
                | Some a, Some b -> a.Equals b
                | _ -> false
            if s.Role <> role0 || s.Term <> term0 || not leaderSame then
                State.emit (Effect.RoleChanged(s.Role, s.Term, s.Leader)) s
            else
                s
        // A step that emits nothing (most ticks, a reply that only moves a follower's progress) needs no copy.
        if s.Out.IsEmpty then s, [] else { s with Out = [] }, List.rev s.Out
