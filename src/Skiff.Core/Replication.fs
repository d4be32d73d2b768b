namespace Skiff.Core

/// Log replication, the leader's side (thesis §3.5, §10.2.1): the leader ships entries as soon as they are
/// proposed, pipelines AppendEntries per follower within a bounded window, backs up by whole terms on conflicts,
/// and commits by counting replicas. Applying committed entries lives here too. The follower's side (check,
/// truncate, append, acknowledge) is in FollowerReplication.fs.
[<RequireQualifiedAccess>]
module Replication =
    let private withLead (f: LeaderState -> LeaderState) (s: State) : State =
        match s.Leading with
        | Some lead -> { s with Leading = Some(f lead) }
        | None -> s

    /// Whether `entries` follow `prev` without gaps (both sides check this of what they receive).
    let contiguous (prev: LogIndex) (entries: Entry list) =
        let rec go expected (es: Entry list) =
            match es with
            | e :: rest -> e.Index = expected && go (expected + 1L) rest
            | [] -> true
        go (prev + 1L) entries

    /// Replaces one follower's progress (no-op if the peer is not tracked).
    let setProgress (peer: NodeId) (pr: Progress) (s: State) : State =
        match s.Leading with
        | Some lead when lead.Progress.ContainsKey peer ->
            { s with Leading = Some { lead with Progress = PeerMap.add peer pr lead.Progress } }
        | _ -> s

    /// One follower's progress, if this node leads and tracks it.
    let progress (peer: NodeId) (s: State) : Progress option =
        match s.Leading with
        | Some lead -> PeerMap.tryFind peer lead.Progress
        | None -> None

    let private round (s: State) =
        match s.Leading with
        | Some l -> l.Round
        | None -> 0L

    /// The AppendEntries message carrying `entries` after `prev`.
    let private appendMessage (prev: LogIndex) (prevTerm: Term) (entries: Entry list) (round: int64) (s: State) : Message =
        Message.Append
            { Term = s.Term
              Leader = s.Id
              PrevLogIndex = prev
              PrevLogTerm = prevTerm
              Entries = entries
              LeaderCommit = s.Commit
              Round = round }

    /// A follower's progress once `entries` (following `prev`) are on their way to it.
    let private progressAfterSend (pr: Progress) (entries: Entry list) (prev: LogIndex) : Progress =
        let last = prev + int64 (List.length entries)
        match pr.Mode with
        | ProgressMode.Replicate -> { pr with Next = max pr.Next (last + 1L); Inflight = pr.Inflight @ [ last ] }
        | _ -> { pr with Inflight = [ last ] }

    let private sendAppend (peer: NodeId) (prev: LogIndex) (prevTerm: Term) (entries: Entry list) (s: State) : State =
        State.send peer (appendMessage prev prevTerm entries (round s) s) s

    /// Offers the latest snapshot to a follower that needs entries we no longer store. Not while a TakeSnapshot
    /// is outstanding: the interpreter may already hold (only) the newer one, so wait for SnapshotTaken.
    let sendSnapshot (peer: NodeId) (s: State) : State =
        match progress peer s with
        | Some pr when s.Snapshot.Index > 0L && not s.Snapshotting ->
            s
            |> State.emit (Effect.SendSnapshot(peer, s.Term, s.Snapshot))
            |> setProgress peer { pr with Mode = ProgressMode.Snapshot; Inflight = []; SnapshotTicks = 0; Loading = false }
        | _ -> s

    /// Records that `entries` (following `prev`) were sent to `peer`.
    let private sent (peer: NodeId) (pr: Progress) (entries: Entry list) (prev: LogIndex) (s: State) : State =
        setProgress peer (progressAfterSend pr entries prev) s

    /// sendAppend followed by sent, in one copy of the State instead of two (the hot path of every proposal).
    let private sendAndRecord (peer: NodeId) (pr: Progress) (prev: LogIndex) (prevTerm: Term) (entries: Entry list) (s: State) : State =
        match s.Leading with
        | Some lead when lead.Progress.ContainsKey peer ->
            let send = Effect.Send { From = s.Id; To = peer; Message = appendMessage prev prevTerm entries lead.Round s }
            let pr = progressAfterSend pr entries prev
            { s with Out = send :: s.Out; Leading = Some { lead with Progress = PeerMap.add peer pr lead.Progress } }
        | _ -> s |> sendAppend peer prev prevTerm entries |> sent peer pr entries prev

    /// Sends as much as the follower's window allows: one probe in Probe mode, a pipeline in Replicate mode.
    let rec fill (peer: NodeId) (s: State) : State =
        match progress peer s with
        | None -> s
        | Some pr ->
            let o = s.Options
            let busy =
                pr.Mode = ProgressMode.Snapshot
                || pr.Loading
                || List.length pr.Inflight >= o.MaxInflight
                || (pr.Mode = ProgressMode.Probe && not pr.Inflight.IsEmpty)
            if busy then
                s
            else
                let next = max 1L (min pr.Next (s.Log.LastIndex + 1L))
                let prev = next - 1L
                match LogView.tryTerm prev s.Log with
                | ValueNone -> sendSnapshot peer s
                | ValueSome prevTerm ->
                    if next > s.Log.LastIndex then
                        // Nothing new: only a probe is worth sending (to learn where the follower stands).
                        if pr.Mode = ProgressMode.Probe then
                            s |> sendAndRecord peer { pr with Next = next } prev prevTerm []
                        else
                            s
                    else
                        match LogView.slice next s.Log.LastIndex o.MaxEntriesPerAppend o.MaxBytesPerAppend s.Log with
                        | Some(_ :: _ as entries) ->
                            let s = s |> sendAndRecord peer { pr with Next = next } prev prevTerm entries
                            if pr.Mode = ProgressMode.Replicate then fill peer s else s
                        | _ ->
                            // Older than the in-memory window: ask storage, continue on EntriesLoaded.
                            let upTo = min s.Log.LastIndex (min (s.Log.WindowStart - 1L) (next + int64 o.MaxEntriesPerAppend - 1L))
                            s
                            |> State.emit (Effect.LoadEntries(LoadPurpose.Replicate peer, next, max next upTo))
                            |> setProgress peer { pr with Next = next; Loading = true }

    /// Fills every follower's window (after new entries were appended).
    let broadcast (s: State) : State =
        match s.Leading with
        | None -> s
        | Some lead -> lead.Progress |> PeerMap.fold (fun s peer _ -> fill peer s) s

    /// Starts a new round: every follower gets a message carrying it now (an empty AppendEntries at its match
    /// index, or a fresh probe), which confirms leadership for reads and CheckQuorum and carries the commit index.
    let heartbeat (s: State) : State =
        match s.Leading with
        | None -> s
        | Some lead ->
            let s = { s with Leading = Some { lead with Round = lead.Round + 1L; HeartbeatElapsed = 0 } }
            lead.Progress
            |> PeerMap.fold
                (fun s peer pr ->
                    match pr.Mode with
                    | ProgressMode.Probe ->
                        // Retry the probe (it may have been lost); it doubles as the heartbeat.
                        s |> setProgress peer { pr with Inflight = []; Loading = false } |> fill peer
                    | ProgressMode.Replicate when not pr.Inflight.IsEmpty && pr.Match = pr.MatchAtHeartbeat && pr.AckRound >= lead.Round ->
                        // The follower answers heartbeats but no append for a whole heartbeat interval: one was lost
                        // (and with no newer append it would never be rejected). Probe again from its match.
                        let pr = { pr with Mode = ProgressMode.Probe; Next = pr.Match + 1L; Inflight = []; Loading = false }
                        s |> setProgress peer pr |> fill peer
                    | _ ->
                        // A lost append would otherwise block a full window (as etcd: free one slot).
                        let pr =
                            if List.length pr.Inflight >= s.Options.MaxInflight then
                                { pr with Inflight = List.tail pr.Inflight }
                            else
                                pr
                        let pr = { pr with MatchAtHeartbeat = pr.Match }
                        let prev, prevTerm =
                            match LogView.tryTerm pr.Match s.Log with
                            | ValueSome t -> pr.Match, t
                            | ValueNone -> 0L, 0L
                        s |> setProgress peer pr |> sendAppend peer prev prevTerm [] |> fill peer)
                s

    /// The leader appends new entries, ships them to followers at once, then asks for its own write (sends come
    /// first in the list so the network and the disk work in parallel; the leader counts itself after Persisted).
    let propose (entries: Entry list) (s: State) : State =
        match entries with
        | [] -> s
        | _ ->
            let size = entries |> List.sumBy (fun e -> int64 (LogView.entrySize e))
            s
            |> withLead (fun l -> { l with Uncommitted = l.Uncommitted + size })
            |> State.appendToLog entries
            |> broadcast
            |> State.emit (Effect.PersistEntries entries)

    /// Whether a leader takes a proposal of `size` bytes: its uncommitted entries stay within
    /// Options.MaxUncommittedBytes (as etcd's MaxUncommittedEntriesSize), so that a leader that cannot commit (no
    /// quorum, slow disks) refuses work instead of growing its log and memory without end. With nothing
    /// uncommitted any single proposal is taken, however large, or it could never be.
    let admits (size: int64) (s: State) : bool =
        match s.Leading with
        | Some l -> l.Uncommitted = 0L || l.Uncommitted + size <= s.Options.MaxUncommittedBytes
        | None -> false

    /// Next entry index and this term, for building new entries.
    let nextEntry (payload: Payload) (s: State) : Entry = { Index = s.Log.LastIndex + 1L; Term = s.Term; Payload = payload }

    // ---- Leader side ---------------------------------------------------------------------------------------

    /// Whether a rejection answers an append we no longer wait for (duplicated, reordered or overtaken), as
    /// etcd-io/raft's MaybeDecrTo. A rejection names the PrevLogIndex it rejected (in MatchIndex). Acting on a
    /// stale one would restart probing from an outdated hint, resend what is already on its way, and could loop
    /// on duplicated messages.
    let private staleRejection (pr: Progress) (m: AppendReply) : bool =
        match pr.Mode with
        // The follower has matched at or past the rejected entry since (or the hint says so).
        | ProgressMode.Replicate -> m.MatchIndex <= pr.Match || m.ConflictIndex <= pr.Match
        // Only the answer to the one outstanding probe counts.
        | ProgressMode.Probe -> m.MatchIndex <> pr.Next - 1L
        // The snapshot on its way (or its timeout, Snapshots.tick) decides what comes next.
        | ProgressMode.Snapshot -> true

    /// The leader handles a follower's answer of its current term.
    let handleAppendReply (from: NodeId) (m: AppendReply) (s: State) : State =
        match progress from s with
        | None -> s
        | Some pr ->
            let pr = { pr with Active = true; AckRound = max pr.AckRound m.Round }
            if m.Success then
                let matched = min m.MatchIndex s.Log.LastIndex
                let pr =
                    if matched > pr.Match then
                        let pr = { pr with Match = matched; Next = max pr.Next (matched + 1L) }
                        match pr.Mode with
                        // A follower waiting for a snapshot still answers heartbeats (they confirm reads and
                        // CheckQuorum). While it is behind our compaction point the snapshot on its way is still
                        // needed: leaving Snapshot mode would only find the entries gone and send a second one.
                        | ProgressMode.Snapshot when (LogView.tryTerm matched s.Log).IsNone -> pr
                        | ProgressMode.Probe
                        | ProgressMode.Snapshot -> { pr with Mode = ProgressMode.Replicate; Next = matched + 1L; Inflight = [] }
                        | ProgressMode.Replicate -> pr
                    else
                        pr
                let pr =
                    match pr.Mode with
                    | ProgressMode.Probe when matched >= pr.Next - 1L ->
                        { pr with Mode = ProgressMode.Replicate; Next = matched + 1L; Inflight = [] }
                    | _ -> { pr with Inflight = pr.Inflight |> List.filter (fun i -> i > matched) }
                s |> setProgress from pr |> fill from
            elif staleRejection pr m then
                setProgress from pr s
            else
                let next =
                    match m.ConflictTerm with
                    | Some t ->
                        match LogView.lastIndexOfTerm t s.Log with
                        | Some last -> last + 1L
                        | None -> m.ConflictIndex
                    | None -> m.ConflictIndex
                let next = next |> min (s.Log.LastIndex + 1L) |> max (pr.Match + 1L)
                s |> setProgress from { pr with Mode = ProgressMode.Probe; Next = next; Inflight = []; Loading = false } |> fill from

    /// Entries loaded from storage for a follower: send them, or fall back to a snapshot if they are gone.
    let entriesLoadedFor (peer: NodeId) (entries: Entry list) (s: State) : State =
        match progress peer s with
        | None -> s
        | Some pr when not pr.Loading -> s
        | Some pr ->
            let pr = { pr with Loading = false }
            let s = setProgress peer pr s
            match entries with
            | [] -> sendSnapshot peer s
            | first :: _ ->
                let prev = first.Index - 1L
                let valid =
                    first.Index = pr.Next
                    && contiguous prev entries
                    && entries |> List.forall (fun e -> LogView.hasTerm e.Index e.Term s.Log)
                match LogView.termAt prev s.Log with
                | Some prevTerm when valid ->
                    // Storage answers by count; the sizes are only known now. Send what fits one append (the rest
                    // is loaded again by the next fill), so a batch of large entries never makes a huge message.
                    let entries = LogView.batch s.Options.MaxEntriesPerAppend s.Options.MaxBytesPerAppend entries
                    s |> sendAndRecord peer pr prev prevTerm entries |> fill peer
                | Some _ -> fill peer s
                | None -> sendSnapshot peer s

    /// Commit rule (thesis §3.6.2): the highest index stored on a majority of voters, provided its entry is of
    /// the current term. The leader counts itself only up to what it has persisted, and not at all if removed.
    let maybeCommit (s: State) : State =
        match s.Leading with
        | None -> s
        | Some lead ->
            let voters = s.VoterIds
            if voters.Length = 0 then
                s
            else
                // A plain array and an in-place sort of it (no Seq pipeline on every leader step).
                let matches = Array.zeroCreate<LogIndex> voters.Length
                let mutable k = 0
                for v in voters do
                    matches[k] <-
                        if v = s.Id then
                            s.Log.Persisted
                        else
                            match PeerMap.tryFind v lead.Progress with
                            | Some p -> p.Match
                            | None -> 0L
                    k <- k + 1
                System.Array.Sort matches
                // The quorum-th largest.
                let n = matches[matches.Length - State.majority voters.Length]
                if n > s.Commit && LogView.hasTerm n s.Term s.Log then
                    // The newly committed entries of this term no longer count as uncommitted. One that has left
                    // the window cannot be measured: then the count stays high until everything is committed,
                    // when it is exactly zero again (so an overestimate heals as soon as the leader catches up).
                    let uncommitted =
                        if n >= s.Log.LastIndex then
                            0L
                        else
                            let mutable u = lead.Uncommitted
                            let mutable i = s.Commit + 1L
                            while i <= n do
                                match LogView.tryEntry i s.Log with
                                | Some e when e.Term = s.Term -> u <- u - int64 (LogView.entrySize e)
                                | _ -> ()
                                i <- i + 1L
                            max 0L u
                    let lead = { lead with Uncommitted = uncommitted }
                    let s = { s with Commit = n; Leading = Some lead }
                    // Tell idle followers about the new commit index now rather than at the next heartbeat.
                    lead.Progress
                    |> PeerMap.fold
                        (fun s peer pr ->
                            if pr.Mode = ProgressMode.Replicate && pr.Inflight.IsEmpty && not pr.Loading then
                                match LogView.tryTerm pr.Match s.Log with
                                | ValueSome t -> sendAppend peer pr.Match t [] s
                                | ValueNone -> s
                            else
                                s)
                        s
                else
                    s

    let private sizeOf (entries: Entry list) = entries |> List.sumBy (fun e -> int64 (LogView.entrySize e))

    /// Hands committed, locally persisted entries to the state machine, loading them if they left the window.
    let rec apply (s: State) : State =
        let upTo = min s.Commit s.Log.Persisted
        if upTo <= s.Applied || s.ApplyLoading then
            s
        else
            let from = s.Applied + 1L
            if from < s.Log.WindowStart then
                let until = min upTo (s.Log.WindowStart - 1L)
                { s with Standing = { s.Standing with ApplyLoading = true } }
                |> State.emit (Effect.LoadEntries(LoadPurpose.Apply, from, until))
            else
                match LogView.slice from upTo System.Int32.MaxValue System.Int32.MaxValue s.Log with
                | Some(_ :: _ as entries) ->
                    let last = (List.last entries).Index
                    { s with Applied = last; AppliedBytes = s.AppliedBytes + sizeOf entries } |> State.emit (Effect.Apply entries)
                | _ -> s

    /// Entries loaded for applying: apply the valid contiguous prefix, then continue.
    let entriesLoadedForApply (entries: Entry list) (s: State) : State =
        if not s.ApplyLoading then
            s
        else
            let s = { s with Standing = { s.Standing with ApplyLoading = false } }
            let upTo = min s.Commit s.Log.Persisted
            let rec take expected (es: Entry list) acc =
                match es with
                | e :: rest when e.Index = expected && e.Index <= upTo -> take (expected + 1L) rest (e :: acc)
                | _ -> List.rev acc
            match take (s.Applied + 1L) entries [] with
            | [] -> s
            | good ->
                let last = (List.last good).Index
                { s with Applied = last; AppliedBytes = s.AppliedBytes + sizeOf good } |> State.emit (Effect.Apply good) |> apply
