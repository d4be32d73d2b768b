namespace Skiff.Core

/// Log replication, the follower's side (thesis §3.5): check the entry before the new ones, drop a conflicting
/// suffix, append, persist, and acknowledge only what is durable. The leader's side is in Replication.fs.
[<RequireQualifiedAccess>]
module FollowerReplication =
    /// The answer to `m`.
    let private answer (leader: NodeId) (m: AppendRequest) ok matchIndex conflictIndex conflictTerm (s: State) : Effect =
        Effect.Send
            { From = s.Id
              To = leader
              Message =
                Message.AppendReply
                    { Term = s.Term
                      Success = ok
                      MatchIndex = matchIndex
                      ConflictIndex = conflictIndex
                      ConflictTerm = conflictTerm
                      Round = m.Round } }

    let private reply (leader: NodeId) (m: AppendRequest) ok matchIndex conflictIndex conflictTerm (s: State) =
        let sent = answer leader m ok matchIndex conflictIndex conflictTerm s
        if ok then
            { s with Acked = max s.Acked matchIndex; Out = sent :: s.Out }
        else
            { s with Out = sent :: s.Out }

    /// The leader's early notice of a commit (an empty append sent as soon as the commit index moves: it brings a
    /// newer commit index, no new round, and lets the follower claim nothing new) is not answered: the leader already
    /// has that answer, and an answer per write would cost the leader a wake-up and a message. Heartbeats bring a new
    /// round, so they are always answered, as is a probe unless it also brings a newer commit (then the next
    /// heartbeat's answer serves it). Not answering is always safe: messages may be lost anyway.
    let private answerUnlessKnown
        (leader: NodeId)
        (m: AppendRequest)
        (round0: int64)
        (acked0: LogIndex)
        (commit0: LogIndex)
        claimed
        (s: State)
        =
        if m.Entries.IsEmpty && m.Round <= round0 && claimed <= acked0 && m.LeaderCommit > commit0 then
            s
        else
            reply leader m true claimed 0L None s

    /// A follower handles AppendEntries of its current term from its leader: check the entry before the new ones,
    /// drop a conflicting suffix, append, persist, then answer (the answer waits for the write: it comes later in
    /// the effect list).
    let handleAppend (from: NodeId) (m: AppendRequest) (s: State) : State =
        if not (Replication.contiguous m.PrevLogIndex m.Entries) || m.PrevLogIndex >= System.Int64.MaxValue / 4L then
            s
        else
            // Entries at or below our commit index are settled; only look past it.
            let prev, prevTerm, entries =
                if m.PrevLogIndex >= s.Commit then
                    m.PrevLogIndex, ValueSome m.PrevLogTerm, m.Entries
                else
                    s.Commit, LogView.tryTerm s.Commit s.Log, m.Entries |> List.filter (fun e -> e.Index > s.Commit)
            let round0, acked0, commit0 = s.LastRound, s.Acked, s.Commit
            let s = { s with LastRound = max s.LastRound m.Round }
            // A follower claims only entries that are durable, or being made durable earlier in this step's effect
            // list (writes complete in order, so that covers older ones too): a claim of an entry still in flight
            // from an earlier step would be lost in a crash while the leader counts it.
            if m.PrevLogIndex < s.Commit && entries.IsEmpty then
                let s = { s with LeaderMatch = max s.LeaderMatch s.Commit }
                let s, claimed = State.claim s.Commit s
                answerUnlessKnown from m round0 acked0 commit0 claimed s
            else
                match LogView.tryTerm prev s.Log, prevTerm with
                // A rejection names the request's PrevLogIndex (in MatchIndex), so the leader can tell it from a
                // stale one (see staleRejection).
                | ValueNone, _ -> reply from m false m.PrevLogIndex (max (s.Commit + 1L) (min (prev) (s.Log.LastIndex + 1L))) None s
                | ValueSome t, ValueSome pt when t <> pt ->
                    let first = LogView.firstIndexOfTerm t s.Log |> Option.defaultValue prev
                    reply from m false m.PrevLogIndex (max (s.Commit + 1L) first) (Some t) s
                | ValueSome _, _ ->
                    let rec skip (es: Entry list) =
                        match es with
                        | e :: rest when LogView.hasTerm e.Index e.Term s.Log -> skip rest
                        | _ -> es
                    let fresh = skip entries
                    let lastNew = prev + int64 (List.length entries)
                    match fresh with
                    | e :: _ when e.Index <= s.Commit -> s // would rewrite committed history: a corrupt message
                    | [] ->
                        let s = { s with Commit = max s.Commit (min m.LeaderCommit lastNew); LeaderMatch = max s.LeaderMatch lastNew }
                        let s, claimed = State.claim lastNew s
                        answerUnlessKnown from m round0 acked0 commit0 claimed s
                    | e :: _ ->
                        let s = if e.Index <= s.Log.LastIndex then State.truncateLog e.Index s else s
                        let s = State.appendToLog fresh s
                        // The write, then the answer that waits for it, in one copy of the State.
                        { s with
                            Commit = max s.Commit (min m.LeaderCommit lastNew)
                            LeaderMatch = max s.LeaderMatch lastNew
                            Acked = max s.Acked lastNew
                            Out = answer from m true lastNew 0L None s :: Effect.PersistEntries fresh :: s.Out }

    /// A follower's write became durable: acknowledge what it could not claim when it answered the append.
    let acknowledgePersisted (s: State) : State =
        match s.Role, s.Leader with
        | Role.Follower, Some leader ->
            let claim = min (State.claimable s) s.LeaderMatch
            if claim > s.Acked then
                let ack =
                    Message.AppendReply
                        { Term = s.Term; Success = true; MatchIndex = claim; ConflictIndex = 0L; ConflictTerm = None; Round = s.LastRound }
                { s with Acked = claim; Out = Effect.Send { From = s.Id; To = leader; Message = ack } :: s.Out }
            else
                s
        | _ -> s
