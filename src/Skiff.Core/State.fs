namespace Skiff.Core

/// How a leader is currently replicating to one follower (as etcd-io/raft's progress states).
[<RequireQualifiedAccess>]
type ProgressMode =
    /// Where the follower's log matches is unknown: send one AppendEntries at a time and wait for the answer.
    | Probe
    /// The follower is in step: pipeline AppendEntries, optimistically advancing Next.
    | Replicate
    /// The follower is behind the compaction point: a snapshot is on its way; wait for its answer.
    | Snapshot

/// A leader's knowledge of one follower (voter or learner).
type Progress =
    {
        /// Highest index known to be replicated on the follower.
        Match: LogIndex
        /// Next index to send.
        Next: LogIndex
        /// Replication mode.
        Mode: ProgressMode
        /// Last index carried by each outstanding AppendEntries, oldest first; bounded by Options.MaxInflight.
        Inflight: LogIndex list
        /// Highest Round the follower has echoed in this term.
        AckRound: int64
        /// Heard from in the current CheckQuorum period.
        Active: bool
        /// Entries for this follower are being loaded from storage.
        Loading: bool
        /// Ticks since a snapshot was sent (to retry a lost one).
        SnapshotTicks: int
        /// Match at the previous heartbeat: if it has not moved while appends are outstanding and the follower
        /// answers heartbeats, an append was lost and the leader falls back to probing.
        MatchAtHeartbeat: LogIndex
    }

/// A batch of reads waiting for a heartbeat round to be confirmed by a majority.
type PendingReads =
    {
        /// The round whose acknowledgements confirm these reads.
        Round: int64
        /// The read index (the commit index when the reads were registered).
        Index: LogIndex
        /// The requests, newest first.
        Ids: RequestId list
    }

/// A leadership transfer in progress.
type PendingTransfer =
    {
        /// The request to complete.
        Id: RequestId
        /// The voter that should take over.
        Target: NodeId
        /// Ticks since the transfer started, and again since TimeoutNow was sent; it is abandoned after an election
        /// timeout of either.
        Elapsed: int
        /// TimeoutNow has been sent.
        TimeoutSent: bool
    }

/// What only a leader keeps.
type LeaderState =
    {
        /// Replication progress of every other member.
        Progress: PeerMap<Progress>
        /// Round counter carried in every AppendEntries of this term.
        Round: int64
        /// Ticks since the last heartbeat round.
        HeartbeatElapsed: int
        /// Ticks since the last CheckQuorum.
        QuorumElapsed: int
        /// Reads received before an entry of this term committed, newest first.
        ReadsAwaitingCommit: RequestId list
        /// The batch of reads whose round is outstanding.
        ReadsInRound: PendingReads option
        /// Reads that arrived while a round was outstanding (or are ready to go out); they go with the next round.
        /// Newest first.
        ReadsQueued: RequestId list
        /// A leadership transfer in progress.
        Transfer: PendingTransfer option
        /// The membership change being committed: its request id (if a client asked for it) and log index.
        ConfigRequest: (RequestId option * LogIndex) option
        /// Idempotent AddServer requests that complete once the pending change commits.
        ConfigWaiters: RequestId list
        /// Reads held in ReadsAwaitingCommit, ReadsInRound and ReadsQueued (bounded by Options.MaxWaitingRequests).
        ReadsWaiting: int
        /// Rough size (LogView.entrySize) of the entries appended in this term and not yet committed, bounded by
        /// Options.MaxUncommittedBytes. An overestimate at worst (see Commit.maybeCommit), never below.
        Uncommitted: int64
    }

/// What a node changes rarely (on elections, configuration changes, snapshots, timer resets): who it is, its term,
/// vote and role, its configuration and snapshot. Kept apart from State's hot fields so that the many copies of
/// State a step makes on the write path (every record update copies all of a record's fields) stay small.
[<RequireQualifiedAccess>]
type Standing =
    {
        /// This node's id.
        Id: NodeId
        /// Sanitised tunables.
        Options: Options
        /// Random generator state (SplitMix64).
        Rng: uint64
        /// Current term (durable).
        Term: Term
        /// Vote in the current term (durable).
        VotedFor: NodeId option
        /// Current role.
        Role: Role
        /// The leader of the current term, if known.
        Leader: NodeId option
        /// Entries to apply are being loaded from storage.
        ApplyLoading: bool
        /// The latest snapshot (Index 0 when there is none).
        Snapshot: SnapshotMeta
        /// A TakeSnapshot is outstanding.
        Snapshotting: bool
        /// Configurations by the index of their entry, newest first; the oldest is the snapshot's or bootstrap's.
        Configs: (LogIndex * Configuration) list
        /// The configuration in force (the newest in Configs), cached.
        Config: Configuration
        /// Its voters, cached (computed on every quorum question otherwise).
        Voters: Set<NodeId>
        /// The same voters as an array, for the loops run on every leader step (enumerating a Set allocates).
        VoterIds: NodeId[]
        /// This node is a member (voter or learner) of Config, cached (a Map lookup by Guid boxes both keys).
        IsMember: bool
        /// The randomised election timeout for the current wait.
        ElectionTimeout: int
        /// (Pre-)votes received in the current campaign.
        Votes: Map<NodeId, bool>
        /// The current campaign follows a TimeoutNow (voters ignore leader stickiness).
        CampaignTransfer: bool
        /// The index of a snapshot installed (InstallSnapshot emitted) but not known durable yet. There is no
        /// completion event for installs; a Persisted of a later entry proves it (writes complete in order).
        InstallPending: LogIndex option
    }

/// The whole state of one node's reducer. Plain immutable data; `Out` collects the effects of the current step.
/// The fields a write changes are here; the rest is in `Standing`, readable through the members below.
type State =
    {
        /// What changes rarely (identity, term, role, configuration, snapshot).
        Standing: Standing
        /// The log view.
        Log: LogView
        /// Highest index known committed.
        Commit: LogIndex
        /// Highest index handed to the state machine with Effect.Apply.
        Applied: LogIndex
        /// Bytes (as LogView.entrySize counts) handed to Effect.Apply since the latest TakeSnapshot or install; only
        /// for the SnapshotBytes trigger, so it starts at 0 after a restart (the next snapshot comes a little late).
        AppliedBytes: int64
        /// Ticks since the election timer was reset.
        ElectionElapsed: int
        /// Follower: highest index known to match the current leader's log (from successful appends this term).
        LeaderMatch: LogIndex
        /// Follower: highest match index claimed to the current leader; a later Persisted acknowledges more.
        Acked: LogIndex
        /// Follower: the last Round seen from the current leader, echoed in acknowledgements sent on Persisted.
        LastRound: int64
        /// What this node keeps while it is leading (progress of each follower, rounds, waiting reads and changes);
        /// None on followers and candidates. Not to be confused with `Leader`, the leader this node knows.
        Leading: LeaderState option
        /// Effects of the current step, newest first.
        Out: Effect list
    }

    /// This node's id.
    member s.Id = s.Standing.Id
    /// Sanitised tunables.
    member s.Options = s.Standing.Options
    /// Random generator state.
    member s.Rng = s.Standing.Rng
    /// Current term (durable).
    member s.Term = s.Standing.Term
    /// Vote in the current term (durable).
    member s.VotedFor = s.Standing.VotedFor
    /// Current role.
    member s.Role = s.Standing.Role
    /// The leader of the current term, if known.
    member s.Leader = s.Standing.Leader
    /// Entries to apply are being loaded from storage.
    member s.ApplyLoading = s.Standing.ApplyLoading
    /// The latest snapshot (Index 0 when there is none).
    member s.Snapshot = s.Standing.Snapshot
    /// A TakeSnapshot is outstanding.
    member s.Snapshotting = s.Standing.Snapshotting
    /// Configurations by the index of their entry, newest first.
    member s.Configs = s.Standing.Configs
    /// The configuration in force.
    member s.Config = s.Standing.Config
    /// Its voters.
    member s.Voters = s.Standing.Voters
    /// Its voters, as an array.
    member s.VoterIds = s.Standing.VoterIds
    /// The randomised election timeout for the current wait.
    member s.ElectionTimeout = s.Standing.ElectionTimeout
    /// (Pre-)votes received in the current campaign.
    member s.Votes = s.Standing.Votes
    /// The current campaign follows a TimeoutNow.
    member s.CampaignTransfer = s.Standing.CampaignTransfer
    /// A snapshot installed but not known durable yet.
    member s.InstallPending = s.Standing.InstallPending

/// Basic operations on State shared by the role modules.
[<RequireQualifiedAccess>]
module State =
    /// Appends an effect to the current step's output.
    let emit (e: Effect) (s: State) : State = { s with Out = e :: s.Out }

    /// Sends a message to a peer.
    let send (toNode: NodeId) (m: Message) (s: State) : State = emit (Effect.Send { From = s.Id; To = toNode; Message = m }) s

    /// The configuration in force at index `i` (the newest configuration entry at or before it).
    let configAt (i: LogIndex) (s: State) : Configuration =
        // A loop (asked on every leader step): the first at or before `i`, else the oldest one known.
        let rec go (cs: (LogIndex * Configuration) list) (oldest: Configuration) =
            match cs with
            | (idx, c) :: rest -> if idx <= i then c else go rest c
            | [] -> oldest
        match s.Configs with
        | [] -> Configuration.Empty
        | (_, c) :: _ -> go s.Configs c

    /// Index of the newest configuration entry (0 if it came from bootstrap).
    let configIndex (s: State) : LogIndex =
        match s.Configs with
        | (i, _) :: _ -> i
        | [] -> 0L

    /// Whether this node is a member of the configuration in force at `i` (cached when that is the newest).
    let isMemberAt (i: LogIndex) (s: State) : bool =
        let c = configAt i s
        if obj.ReferenceEquals(c, s.Config) then s.Standing.IsMember else c.Members.ContainsKey s.Id

    /// Whether `id` is a voter in configuration `c`.
    let isVoterIn (id: NodeId) (c: Configuration) : bool =
        match Map.tryFind id c.Members with
        | Some m -> m.Voter
        | None -> false

    /// Whether `id` is a voter in the configuration in force.
    let isVoter (id: NodeId) (s: State) : bool = isVoterIn id s.Config

    /// Whether this node may campaign: it is a voter in its newest configuration or in its committed one. The
    /// latter lets a node whose uncommitted configuration removes it still stand for election (as etcd, which
    /// applies configurations at commit): otherwise a cluster could stall when the only up-to-date log belongs
    /// to a node being removed, and the removal could never commit.
    let canCampaign (s: State) : bool = isVoterIn s.Id s.Config || isVoterIn s.Id (configAt s.Commit s)

    /// The highest index this node may claim in a Send that has no persistence effect before it in its list:
    /// what is durable, and nothing while an installed snapshot may not be.
    let claimable (s: State) : LogIndex =
        match s.InstallPending with
        | Some _ -> 0L
        | None -> s.Log.Persisted

    /// What a success reply about to be emitted may claim, up to `upTo`, and the state to emit it from. Normally
    /// what is durable (`claimable`). While an installed snapshot may not be durable yet, the reply claims the
    /// snapshot's index (or less) behind a barrier: a rewrite of the unchanged hard state, emitted first. Writes
    /// complete in order, so the reply then waits for the install too (the barrier a repeated vote grant uses).
    /// Without it an idle follower would answer MatchIndex 0 until its next write, and a leader whose snapshot
    /// reply was lost would never learn the follower's match. The barrier costs one small write per reply, only
    /// between an install and the follower's next durable append.
    let claim (upTo: LogIndex) (s: State) : State * LogIndex =
        match s.InstallPending with
        | None -> s, min upTo s.Log.Persisted
        | Some _ ->
            let c = min upTo s.Log.Persisted
            if c <= 0L then
                s, 0L
            else
                emit (Effect.PersistHardState { Term = s.Term; VotedFor = s.VotedFor }) s, c

    /// Majority size for a set of voters.
    let quorum (voters: Set<NodeId>) : int = voters.Count / 2 + 1

    /// Majority size for `n` voters.
    let majority (n: int) : int = n / 2 + 1

    /// Picks a fresh random election timeout and restarts the election timer.
    let resetElectionTimer (s: State) : State =
        let t, rng = Rng.range s.Options.ElectionTicksMin s.Options.ElectionTicksMax s.Rng
        { s with ElectionElapsed = 0; Standing = { s.Standing with ElectionTimeout = t; Rng = rng } }

    /// Records a new term and/or vote and asks for it to be made durable before anything later in this step.
    let setHardState (term: Term) (votedFor: NodeId option) (s: State) : State =
        if term = s.Term && votedFor = s.VotedFor then
            s
        else
            { s with Standing = { s.Standing with Term = term; VotedFor = votedFor } }
            |> emit (Effect.PersistHardState { Term = term; VotedFor = votedFor })

    /// A fresh progress entry for a follower: probe from just past the leader's log.
    let newProgress (s: State) : Progress =
        { Match = 0L
          Next = s.Log.LastIndex + 1L
          Mode = ProgressMode.Probe
          Inflight = []
          AckRound = 0L
          Active = true
          Loading = false
          SnapshotTicks = 0
          MatchAtHeartbeat = 0L }

    /// The peers a leader replicates to: every member of the configuration in force and, until their removal
    /// commits, members of the committed configuration (so a removed node learns about its removal).
    let replicationTargets (s: State) : Set<NodeId> =
        let current = s.Config.Members |> Map.keys |> Set.ofSeq
        let committed = (configAt s.Commit s).Members |> Map.keys |> Set.ofSeq
        Set.union current committed |> Set.remove s.Id

    /// `st` with `cfg` in force (and its voters cached).
    let withConfig (cfg: Configuration) (st: Standing) : Standing =
        let voters = cfg.Voters
        { st with Config = cfg; Voters = voters; VoterIds = Set.toArray voters; IsMember = cfg.Members.ContainsKey st.Id }

    /// Recomputes the configuration in force after the log changed; tells observers and, on a leader, starts or
    /// stops tracking peers.
    let refreshConfig (s: State) : State =
        let cfg = configAt s.Log.LastIndex s
        let s =
            if cfg = s.Config then
                s
            else
                { s with Standing = withConfig cfg s.Standing } |> emit (Effect.ConfigurationChanged cfg)
        match s.Leading with
        | None -> s
        | Some lead ->
            let targets = replicationTargets s
            let kept = lead.Progress |> PeerMap.filter (fun id _ -> targets.Contains id)
            let progress =
                targets
                |> Set.fold (fun (m: PeerMap<Progress>) id -> if m.ContainsKey id then m else PeerMap.add id (newProgress s) m) kept
            { s with Leading = Some { lead with Progress = progress } }

    /// Appends entries to the local log, noting configuration entries (they take effect at once).
    let appendToLog (entries: Entry list) (s: State) : State =
        let log = LogView.append s.Options.WindowSize s.Options.WindowBytes entries s.Log
        let configs =
            entries
            |> List.fold
                (fun acc e ->
                    match e.Payload with
                    | Payload.Config c when e.Index <= log.LastIndex -> (e.Index, c) :: acc
                    | _ -> acc)
                s.Configs
        // Most appends carry no configuration: skip the (comparatively costly) refresh then.
        if obj.ReferenceEquals(configs, s.Configs) then
            { s with Log = log }
        else
            refreshConfig { s with Log = log; Standing = { s.Standing with Configs = configs } }

    /// Drops entries at and after `i`; configuration entries among them stop being in force.
    let truncateLog (i: LogIndex) (s: State) : State =
        let configs =
            match s.Configs |> List.filter (fun (idx, _) -> idx < i) with
            | [] -> s.Configs |> List.tryLast |> Option.toList
            | cs -> cs
        refreshConfig { s with Log = LogView.truncateFrom i s.Log; Standing = { s.Standing with Configs = configs } }

    /// Leaves the leader role (or a campaign): pending reads, config changes and transfers are answered.
    /// `transferred` says this happens because a transfer succeeded.
    let private abandonLeadership (s: State) : State =
        match s.Leading with
        | None -> s
        | Some lead ->
            let reads =
                (lead.ReadsAwaitingCommit
                 @ lead.ReadsQueued
                 @ (lead.ReadsInRound |> Option.map (fun r -> r.Ids) |> Option.defaultValue []))
                |> List.rev
            let s = reads |> List.fold (fun s id -> emit (Effect.Reject(id, Rejection.LeadershipLost)) s) s
            let s =
                match lead.ConfigRequest with
                | Some(Some id, _) -> emit (Effect.Reject(id, Rejection.LeadershipLost)) s
                | _ -> s
            let s = lead.ConfigWaiters |> List.rev |> List.fold (fun s id -> emit (Effect.Reject(id, Rejection.LeadershipLost)) s) s
            let s =
                match lead.Transfer with
                | Some t when t.TimeoutSent -> emit (Effect.Completed t.Id) s
                | Some t -> emit (Effect.Reject(t.Id, Rejection.LeadershipLost)) s
                | None -> s
            { s with Leading = None }

    /// Becomes a follower in `term` (raising the durable term if needed) under `leader`, if known.
    let becomeFollower (term: Term) (leader: NodeId option) (s: State) : State =
        let vote = if term > s.Term then None else s.VotedFor
        let sameLeader = term = s.Term && leader = s.Leader
        let s = abandonLeadership s |> setHardState term vote
        let s = if sameLeader then s else { s with LeaderMatch = 0L; Acked = 0L; LastRound = 0L }
        { s with
            Standing = { s.Standing with Role = Role.Follower; Leader = leader; Votes = Map.empty; CampaignTransfer = false } }
        |> resetElectionTimer
