namespace Skiff.Core

/// Log replication, the leader's side (thesis §3.5, §10.2.1): the leader ships entries as soon as they are
/// proposed, pipelines AppendEntries per follower within a bounded window, backs up by whole terms on conflicts,
/// and commits by counting replicas (Commit.fs). Applying committed entries is in Applying.fs. The follower's side
/// (check, truncate, append, acknowledge) is in FollowerReplication.fs.
[<RequireQualifiedAccess>]
module Replication =
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

    /// One follower's progress (progress without allocating an option).
    let private tryProgress (peer: NodeId) (s: State) : Progress voption =
        match s.Leading with
        | Some lead -> PeerMap.tryItem peer lead.Progress
        | None -> ValueNone

    /// One follower's progress, if this node leads and tracks it.
    let progress (peer: NodeId) (s: State) : Progress option =
        match s.Leading with
        | Some lead -> PeerMap.tryFind peer lead.Progress
        | None -> None

    let private round (s: State) =
        match s.Leading with
        | Some l -> l.Round
        | None -> 0L

    /// The AppendEntries carrying `entries` after `prev`, in round `round`.
    let private appendMessage (prev: LogIndex) (prevTerm: Term) (entries: Entry list) (round: int64) (s: State) : Message =
        Message.Append
            { Term = s.Term
              Leader = s.Id
              PrevLogIndex = prev
              PrevLogTerm = prevTerm
              Entries = entries
              LeaderCommit = s.Commit
              Round = round }

    /// The AppendEntries to `peer` carrying `entries` after `prev`, in round `round`.
    let internal appendTo (peer: NodeId) (prev: LogIndex) (prevTerm: Term) (entries: Entry list) (round: int64) (s: State) : Effect =
        Effect.Send { From = s.Id; To = peer; Message = appendMessage prev prevTerm entries round s }

    /// The append just built for another follower in the same pass over the followers (same State, same round), if
    /// it starts after `prev` too: then it is the very message this follower needs, and followers in step share one
    /// (fewer objects here, and the runtime encodes it once).
    let private sharedAfter (prev: LogIndex) (shared: Message voption) : Message voption =
        match shared with
        | ValueSome(Message.Append r as m) when r.PrevLogIndex = prev -> ValueSome m
        | _ -> ValueNone

    /// A follower's progress once `entries` (following `prev`, the first at `next`) are on their way to it.
    let private progressAfterSend (pr: Progress) (next: LogIndex) (entries: Entry list) (prev: LogIndex) : Progress =
        let last = prev + int64 (List.length entries)
        match pr.Mode with
        | ProgressMode.Replicate -> { pr with Next = max next (last + 1L); Inflight = pr.Inflight @ [ last ] }
        | _ -> { pr with Next = next; Inflight = [ last ] }

    /// The snapshot offer to a follower that needs entries we no longer store: its new progress and the effects
    /// (prepended to `out`). Not while a TakeSnapshot is outstanding: the interpreter may already hold (only) the
    /// newer one, so wait for SnapshotTaken.
    let private offerSnapshot (s: State) (peer: NodeId) (pr: Progress) (out: Effect list) : struct (Progress * Effect list) =
        if s.Snapshot.Index > 0L && not s.Snapshotting then
            struct ({ pr with Mode = ProgressMode.Snapshot; Inflight = []; SnapshotTicks = 0; Loading = false },
                    Effect.SendSnapshot(peer, s.Term, s.Snapshot) :: out)
        else
            struct (pr, out)

    /// Fills one follower's window as far as it allows (one probe in Probe mode, a pipeline in Replicate mode):
    /// its new progress and the effects (prepended to `out`). Only computes: the callers put the results into the
    /// State once, however many followers and messages (a step's copies of the State are its allocation).
    /// `shared`: the append built for the previous follower in the same pass (see sharedAfter), if any.
    let rec private fillPeer
        (s: State)
        (round: int64)
        (peer: NodeId)
        (pr: Progress)
        (shared: Message voption)
        (out: Effect list)
        : struct (Progress * Effect list) =
        let o = s.Options
        let busy =
            pr.Mode = ProgressMode.Snapshot
            || pr.Loading
            || List.length pr.Inflight >= o.MaxInflight
            || (pr.Mode = ProgressMode.Probe && not pr.Inflight.IsEmpty)
        if busy then
            struct (pr, out)
        else
            let next = max 1L (min pr.Next (s.Log.LastIndex + 1L))
            let prev = next - 1L
            match LogView.tryTerm prev s.Log with
            | ValueNone -> offerSnapshot s peer pr out
            | ValueSome prevTerm ->
                if next > s.Log.LastIndex then
                    // Nothing new: only a probe is worth sending (to learn where the follower stands).
                    if pr.Mode = ProgressMode.Probe then
                        let probe =
                            match sharedAfter prev shared with
                            | ValueSome m -> m
                            | ValueNone -> appendMessage prev prevTerm [] round s
                        struct (progressAfterSend pr next [] prev, Effect.Send { From = s.Id; To = peer; Message = probe } :: out)
                    else
                        struct (pr, out)
                else
                    let append =
                        match sharedAfter prev shared with
                        | ValueSome(Message.Append r as m) -> ValueSome(struct (r.Entries, m))
                        | _ ->
                            match LogView.slice next s.Log.LastIndex o.MaxEntriesPerAppend o.MaxBytesPerAppend s.Log with
                            | Some(_ :: _ as entries) -> ValueSome(struct (entries, appendMessage prev prevTerm entries round s))
                            | _ -> ValueNone
                    match append with
                    | ValueSome(struct (entries, m)) ->
                        let sent = progressAfterSend pr next entries prev
                        let out = Effect.Send { From = s.Id; To = peer; Message = m } :: out
                        if pr.Mode = ProgressMode.Replicate then
                            fillPeer s round peer sent ValueNone out
                        else
                            struct (sent, out)
                    | _ ->
                        // Older than the in-memory window: ask storage, continue on EntriesLoaded.
                        let upTo = min s.Log.LastIndex (min (s.Log.WindowStart - 1L) (next + int64 o.MaxEntriesPerAppend - 1L))
                        struct ({ pr with Next = next; Loading = true },
                                Effect.LoadEntries(LoadPurpose.Replicate peer, next, max next upTo) :: out)

    /// Puts a follower's new progress and the effects for it into the State, in one copy; none if nothing changed
    /// (`stored` is its progress in the State).
    let private store (peer: NodeId) (stored: Progress) (lead: LeaderState) (struct (pr: Progress, out: Effect list)) (s: State) =
        if obj.ReferenceEquals(pr, stored) && obj.ReferenceEquals(out, s.Out) then
            s
        else
            { s with Leading = Some { lead with Progress = PeerMap.add peer pr lead.Progress }; Out = out }

    /// Records `pr` as the follower's progress and fills its window, in one copy of the State.
    let fillFrom (peer: NodeId) (pr: Progress) (s: State) : State =
        match s.Leading with
        | Some lead ->
            match PeerMap.tryItem peer lead.Progress with
            | ValueSome stored -> store peer stored lead (fillPeer s lead.Round peer pr ValueNone s.Out) s
            | ValueNone -> s
        | None -> s

    /// Sends as much as the follower's window allows: one probe in Probe mode, a pipeline in Replicate mode.
    let fill (peer: NodeId) (s: State) : State =
        match tryProgress peer s with
        | ValueSome pr -> fillFrom peer pr s
        | ValueNone -> s

    /// Offers the latest snapshot to a follower that needs entries we no longer store (see offerSnapshot).
    let sendSnapshot (peer: NodeId) (s: State) : State =
        match s.Leading with
        | Some lead ->
            match PeerMap.tryItem peer lead.Progress with
            | ValueSome pr -> store peer pr lead (offerSnapshot s peer pr s.Out) s
            | ValueNone -> s
        | None -> s

    /// Every follower's window filled: the new progress of all of them and the effects (prepended to `out`).
    let private fillAll (s: State) (lead: LeaderState) (out: Effect list) : struct (PeerMap<Progress> * Effect list) =
        lead.Progress
        |> PeerMap.mapFold
            (fun (out: Effect list) peer pr ->
                // The previous follower's last append, if this pass built one (the list has grown since it began).
                let shared =
                    match out with
                    | Effect.Send { Message = Message.Append _ as m } :: _ when not (obj.ReferenceEquals(out, s.Out)) -> ValueSome m
                    | _ -> ValueNone
                fillPeer s lead.Round peer pr shared out)
            out

    /// Fills every follower's window (after new entries were appended).
    let broadcast (s: State) : State =
        match s.Leading with
        | None -> s
        | Some lead ->
            let struct (progress, out) = fillAll s lead s.Out
            // A follower's progress changes only with an effect for it: no new effect, nothing to store.
            if obj.ReferenceEquals(out, s.Out) then
                s
            else
                { s with Leading = Some { lead with Progress = progress }; Out = out }

    /// Starts a new round: every follower gets a message carrying it now (an empty AppendEntries at its match
    /// index, or a fresh probe), which confirms leadership for reads and CheckQuorum and carries the commit index.
    let heartbeat (s: State) : State =
        match s.Leading with
        | None -> s
        | Some lead ->
            let previous = lead.Round
            let lead = { lead with Round = previous + 1L; HeartbeatElapsed = 0 }
            let struct (progress, out) =
                lead.Progress
                |> PeerMap.mapFold
                    (fun out peer pr ->
                        match pr.Mode with
                        | ProgressMode.Probe ->
                            // Retry the probe (it may have been lost); it doubles as the heartbeat.
                            fillPeer s lead.Round peer { pr with Inflight = []; Loading = false } ValueNone out
                        | ProgressMode.Replicate when not pr.Inflight.IsEmpty && pr.Match = pr.MatchAtHeartbeat && pr.AckRound >= previous ->
                            // The follower answers heartbeats but no append for a whole heartbeat interval: one was
                            // lost (and with no newer append it would never be rejected). Probe again from its match.
                            let pr = { pr with Mode = ProgressMode.Probe; Next = pr.Match + 1L; Inflight = []; Loading = false }
                            fillPeer s lead.Round peer pr ValueNone out
                        | _ ->
                            // A lost append would otherwise block a full window (as etcd: free one slot).
                            let inflight = if List.length pr.Inflight >= s.Options.MaxInflight then List.tail pr.Inflight else pr.Inflight
                            let pr = { pr with Inflight = inflight; MatchAtHeartbeat = pr.Match }
                            let prev, prevTerm =
                                match LogView.tryTerm pr.Match s.Log with
                                | ValueSome t -> pr.Match, t
                                | ValueNone -> 0L, 0L
                            fillPeer s lead.Round peer pr ValueNone (appendTo peer prev prevTerm [] lead.Round s :: out))
                    s.Out
            { s with Leading = Some { lead with Progress = progress }; Out = out }

    /// The leader appends new entries, ships them to followers at once, then asks for its own write (sends come
    /// first in the list so the network and the disk work in parallel; the leader counts itself after Persisted).
    let propose (entries: Entry list) (s: State) : State =
        match entries with
        | [] -> s
        | _ ->
            let s = State.appendToLog entries s
            match s.Leading with
            | None -> State.emit (Effect.PersistEntries entries) s
            | Some lead ->
                // The followers' windows and this node's write in one copy of the State.
                let struct (progress, out) = fillAll s lead s.Out
                { s with
                    Leading = Some { lead with Progress = progress; Uncommitted = lead.Uncommitted + LogView.sizeOf entries }
                    Out = Effect.PersistEntries entries :: out }

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

    /// The appends still unanswered once the follower has matched `matched`: the list itself when none was
    /// answered (no allocation on the common path), otherwise those above it, in order.
    let rec private unanswered (matched: LogIndex) (inflight: LogIndex list) : LogIndex list =
        match inflight with
        | [] -> inflight
        | i :: rest ->
            let kept = unanswered matched rest
            if i <= matched then kept
            elif obj.ReferenceEquals(kept, rest) then inflight
            else i :: kept

    /// The leader handles a follower's answer of its current term.
    let handleAppendReply (from: NodeId) (m: AppendReply) (s: State) : State =
        match tryProgress from s with
        | ValueNone -> s
        | ValueSome pr when m.Success ->
            // The new progress is built once (a record copy per field changed would be the step's allocation).
            let matched = min m.MatchIndex s.Log.LastIndex
            let advanced = matched > pr.Match
            let replicate =
                match pr.Mode with
                | ProgressMode.Probe -> advanced || matched >= pr.Next - 1L
                // A follower waiting for a snapshot still answers heartbeats (they confirm reads and CheckQuorum).
                // While it is behind our compaction point the snapshot on its way is still needed: leaving
                // Snapshot mode would only find the entries gone and send a second one.
                | ProgressMode.Snapshot -> advanced && (LogView.tryTerm matched s.Log).IsSome
                | ProgressMode.Replicate -> false
            let pr =
                { pr with
                    Active = true
                    AckRound = max pr.AckRound m.Round
                    Match = max pr.Match matched
                    Mode = (if replicate then ProgressMode.Replicate else pr.Mode)
                    Next =
                        (if replicate then matched + 1L
                         elif advanced then max pr.Next (matched + 1L)
                         else pr.Next)
                    Inflight = (if replicate then [] else unanswered matched pr.Inflight) }
            fillFrom from pr s
        | ValueSome pr ->
            let pr = { pr with Active = true; AckRound = max pr.AckRound m.Round }
            if staleRejection pr m then
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
                fillFrom from { pr with Mode = ProgressMode.Probe; Next = next; Inflight = []; Loading = false } s

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
                    let s = { s with Out = appendTo peer prev prevTerm entries (round s) s :: s.Out }
                    fillFrom peer (progressAfterSend pr pr.Next entries prev) s
                | Some _ -> fill peer s
                | None -> sendSnapshot peer s
