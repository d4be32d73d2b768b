namespace Skiff.Core

/// Snapshots and log compaction (thesis §5): snapshot after enough applied entries, compact storage behind the
/// snapshot keeping a tail for slightly slow followers, and install a leader's snapshot on a follower that fell
/// behind the leader's compaction point.
[<RequireQualifiedAccess>]
module Snapshots =
    /// Asks for a snapshot once SnapshotThreshold entries, or SnapshotBytes of entries, have been applied since the
    /// last one. The applied index is never behind the snapshot's, so its term is known (the log keeps term
    /// boundaries from there on).
    let private take (s: State) : State =
        match LogView.termAt s.Applied s.Log with
        | Some term ->
            let meta = { Index = s.Applied; Term = term; Configuration = State.configAt s.Applied s }
            { s with Standing = { s.Standing with Snapshotting = true }; AppliedBytes = 0L }
            |> State.emit (Effect.TakeSnapshot meta)
        | None -> s

    let maybeTake (s: State) : State =
        let due =
            s.Applied - s.Snapshot.Index >= s.Options.SnapshotThreshold
            || (s.AppliedBytes >= s.Options.SnapshotBytes && s.Applied > s.Snapshot.Index)
        if not s.Snapshotting && due then take s else s

    /// Event.SnapshotWanted: the state machine would free disk with a snapshot now. Taken at the applied index unless
    /// one is under way or nothing was applied since the last (the same snapshot as a due one, only sooner).
    let wanted (s: State) : State = if not s.Snapshotting && s.Applied > s.Snapshot.Index then take s else s

    /// Event.SnapshotTaken: adopt it as the latest snapshot and compact the log behind it, keeping a tail. The
    /// term and configuration are looked up again rather than taken from the event: an interpreter's answer is
    /// not trusted beyond its index.
    let taken (meta: SnapshotMeta) (s: State) : State =
        let s = { s with Standing = { s.Standing with Snapshotting = false } }
        if meta.Index <= s.Snapshot.Index || meta.Index > s.Applied then
            s
        else
            match LogView.termAt meta.Index s.Log with
            | None -> s
            | Some term ->
                let meta = { Index = meta.Index; Term = term; Configuration = State.configAt meta.Index s }
                let configs =
                    let newer = s.Configs |> List.filter (fun (i, _) -> i > meta.Index)
                    newer @ [ meta.Index, meta.Configuration ]
                let s = { s with Standing = { s.Standing with Snapshot = meta; Configs = configs } }
                let upTo = meta.Index - s.Options.CompactionTail
                let s =
                    if upTo >= s.Log.FirstIndex then
                        { s with Log = LogView.compact upTo s.Log } |> State.emit (Effect.CompactLog upTo)
                    else
                        s
                // Followers that waited for this snapshot (see Replication.sendSnapshot) can get it now.
                Replication.broadcast s

    /// A follower receives a snapshot of its current term from its leader (the data is already staged).
    let handleSnapshot (from: NodeId) (m: SnapshotRequest) (s: State) : State =
        let meta = m.Meta
        let reply (index: LogIndex) (s: State) =
            { s with Acked = max s.Acked index } |> State.send from (Message.SnapshotReply { Term = s.Term; MatchIndex = index })
        let install () =
            let s =
                { s with
                    Standing =
                        { s.Standing with
                            ApplyLoading = false
                            Snapshot = meta
                            Configs = [ meta.Index, meta.Configuration ]
                            InstallPending = Some meta.Index }
                    Log = LogView.empty meta.Index meta.Term
                    Commit = meta.Index
                    Applied = meta.Index
                    AppliedBytes = 0L
                    LeaderMatch = meta.Index }
            s |> State.emit (Effect.InstallSnapshot(m.Staged, meta)) |> State.refreshConfig |> reply meta.Index
        // While an earlier install may not be durable yet, nothing can be claimed from memory; a repeated offer
        // (the leader retries when our reply is lost) is installed again from its freshly staged data, so that
        // the reply can follow an InstallSnapshot in its own list. Not if entries after it have since committed
        // or been acknowledged: their writes are under way, Persisted will acknowledge them, and neither the
        // commit index nor an acknowledged entry may go back.
        let reinstall =
            match s.InstallPending with
            | Some pending -> meta.Index >= pending && meta.Index >= s.Commit && meta.Index >= s.Acked
            | None -> false
        // A nonsensical offer (negative or absurdly large index, a term from the future) is dropped: adopting
        // it would wreck the log view's arithmetic.
        if meta.Index <= 0L || meta.Index >= System.Int64.MaxValue / 4L || meta.Term < 0L || meta.Term > m.Term then
            s
        elif reinstall then
            install ()
        elif meta.Index <= s.Commit then
            // Claim only what is durable (see FollowerReplication.handleAppend); Persisted acknowledges the rest.
            let s, claimed = State.claim s.Commit { s with LeaderMatch = max s.LeaderMatch s.Commit }
            reply claimed s
        elif LogView.hasTerm meta.Index meta.Term s.Log then
            // We already hold everything it covers; it is committed, so just move the commit index.
            let s, claimed = State.claim meta.Index { s with Commit = meta.Index; LeaderMatch = max s.LeaderMatch meta.Index }
            reply claimed s
        else
            install ()

    /// The leader hears how a snapshot went: resume replication after it, or probe again if it was refused.
    let handleSnapshotReply (from: NodeId) (m: SnapshotReply) (s: State) : State =
        match Replication.progress from s with
        | None -> s
        | Some pr ->
            let pr = { pr with Active = true }
            let pr =
                if m.MatchIndex > 0L && m.MatchIndex <= s.Log.LastIndex then
                    let matched = max pr.Match m.MatchIndex
                    { pr with Match = matched; Next = matched + 1L; Mode = ProgressMode.Replicate; Inflight = [] }
                else
                    { pr with Mode = ProgressMode.Probe; Inflight = [] }
            s |> Replication.setProgress from pr |> Replication.fill from

    /// Counts a tick for followers waiting on a snapshot; after an election timeout, assume it was lost and probe.
    let tick (s: State) : State =
        match s.Leading with
        | None -> s
        | Some lead ->
            lead.Progress
            |> PeerMap.toList
            |> List.fold
                (fun s (peer, pr) ->
                    if pr.Mode <> ProgressMode.Snapshot then
                        s
                    elif pr.SnapshotTicks + 1 >= s.Options.ElectionTicksMax then
                        Replication.setProgress peer { pr with Mode = ProgressMode.Probe; SnapshotTicks = 0; Inflight = [] } s
                    else
                        Replication.setProgress peer { pr with SnapshotTicks = pr.SnapshotTicks + 1 } s)
                s
