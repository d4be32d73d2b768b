namespace Skiff.Simulation

open System.Collections.Generic
open Skiff.Core

/// The Raft and client-facing safety properties the simulator checks as it runs.
[<RequireQualifiedAccess>]
type SafetyProperty =
    /// At most one leader per term.
    | ElectionSafety
    /// Logs that agree on an entry agree on everything before it; a commit index never passes the log's end.
    | LogMatching
    /// A new leader holds every entry committed in an earlier term.
    | LeaderCompleteness
    /// Every node applies the same entry, and reaches the same state, at each index.
    | StateMachineSafety
    /// A node's commit index never goes back.
    | CommitMonotonicity
    /// A write acknowledged to its client is in the final state.
    | AcknowledgedWriteLost
    /// A session's request takes effect at most once.
    | RequestAppliedTwice

/// The liveness properties: each has a bound in ticks (Settings) within which something must happen.
[<RequireQualifiedAccess>]
type LivenessProperty =
    /// After every fault heals, a leader is elected (Settings.LeaderTicks).
    | LeaderAfterHealing
    /// After every fault heals, every member catches up with the leader's log and state (Settings.LivenessTicks).
    | ConvergenceAfterHealing
    /// While a majority of voters is connected both ways, a leader commits (Settings.PartialLivenessTicks).
    | PartialFailure
    /// A node keeps feeding itself events (Persisted, EntriesLoaded...) without end: a livelocked reducer.
    | EndlessFeedback

/// What went wrong in a run: the broken property and its evidence. Typed so that a property test can say which
/// failures it expects (a liveness test, say, ignoring safety violations it leaves to others) without parsing text.
[<RequireQualifiedAccess>]
type ViolationKind =
    /// A safety property broke; `details` names the nodes, indices and terms involved.
    | Safety of property: SafetyProperty * details: string
    /// The client history is not linearizable: `key`'s operations, with the longest order found and the operation
    /// that could not be placed after it (Linearizability.Explanation).
    | NotLinearizable of key: string * explanation: Linearizability.Explanation
    /// A liveness property's bound of `ticks` passed without the awaited progress; `details` describes the nodes.
    | LivenessTimeout of property: LivenessProperty * ticks: int * details: string
    /// The reducer broke its contract with the interpreter (an effect the interpreter cannot carry out).
    | InterpreterContract of details: string
    /// The reducer threw.
    | ReducerException of details: string

/// A broken safety or liveness property, with where in the run it was found.
type Violation =
    {
        /// The number of reducer steps taken when it was found.
        Step: int64
        /// The simulated tick.
        Tick: int64
        /// What broke.
        Kind: ViolationKind
    }

    /// A short name of the broken property, for reports: "election safety", "linearizability", "liveness"...
    member this.Property: string =
        match this.Kind with
        | ViolationKind.Safety(p, _) ->
            match p with
            | SafetyProperty.ElectionSafety -> "election safety"
            | SafetyProperty.LogMatching -> "log matching"
            | SafetyProperty.LeaderCompleteness -> "leader completeness"
            | SafetyProperty.StateMachineSafety -> "state machine safety"
            | SafetyProperty.CommitMonotonicity -> "commit monotonicity"
            | SafetyProperty.AcknowledgedWriteLost -> "acknowledged write lost"
            | SafetyProperty.RequestAppliedTwice -> "request applied twice"
        | ViolationKind.NotLinearizable _ -> "linearizability"
        | ViolationKind.LivenessTimeout _ -> "liveness"
        | ViolationKind.InterpreterContract _ -> "interpreter contract"
        | ViolationKind.ReducerException _ -> "reducer exception"

    /// Whether it is a liveness violation (the others are safety violations or broken contracts).
    member this.IsLiveness: bool =
        match this.Kind with
        | ViolationKind.LivenessTimeout _ -> true
        | _ -> false

    /// What exactly went wrong, in words.
    member this.Description: string =
        match this.Kind with
        | ViolationKind.Safety(_, d)
        | ViolationKind.InterpreterContract d
        | ViolationKind.ReducerException d -> d
        | ViolationKind.LivenessTimeout(_, _, d) -> d
        | ViolationKind.NotLinearizable(key, explanation) ->
            Linearizability.describe (Linearizability.CheckResult.NotLinearizable(key, explanation))

    /// One line (or a few) for logs and test failures.
    override this.ToString() = sprintf "%s violated at step %d (tick %d): %s" this.Property this.Step this.Tick this.Description

/// The Raft safety properties, checked incrementally as the simulator observes the cluster. The first violation
/// is kept in `Violation`; later observations do not overwrite it.
type Invariants() =
    let leaders = Dictionary<Term, string>()
    let committed = Dictionary<LogIndex, struct (Term * Term)>() // index -> (entry term, term it was committed in)
    let mutable maxCommitted = 0L
    let written = Dictionary<struct (LogIndex * Term), struct (Payload * Term voption)>()
    let applied = Dictionary<LogIndex, struct (Entry * string)>()
    let stateAt = Dictionary<LogIndex, KvModel.Replica>()
    let requests = Dictionary<struct (int64 * int64), LogIndex>()
    let acknowledged = Dictionary<LogIndex, Term>()
    let mutable violation: Violation option = None

    /// The reducer step count and tick, maintained by the simulator for violation reports.
    member val Step = 0L with get, set
    /// The current tick.
    member val Tick = 0L with get, set

    /// The first violation found, if any.
    member _.Violation = violation

    /// Records a violation (only the first one is kept).
    member this.Fail(kind: ViolationKind) =
        if violation.IsNone then
            violation <- Some { Step = this.Step; Tick = this.Tick; Kind = kind }

    /// Records a safety violation.
    member this.Safety(property: SafetyProperty, details: string) = this.Fail(ViolationKind.Safety(property, details))

    /// Records a broken interpreter contract.
    member this.Contract(details: string) = this.Fail(ViolationKind.InterpreterContract details)

    /// Records a liveness violation: `ticks` passed without progress.
    member this.Liveness(property: LivenessProperty, ticks: int, details: string) =
        this.Fail(ViolationKind.LivenessTimeout(property, ticks, details))

    /// The highest index known committed anywhere.
    member _.MaxCommitted = maxCommitted

    /// Election safety: at most one leader per term, over the whole run.
    member this.ObserveLeader(node: string, term: Term) =
        match leaders.TryGetValue term with
        | true, other when other <> node ->
            this.Safety(SafetyProperty.ElectionSafety, sprintf "%s and %s are both leaders of term %d" other node term)
        | true, _ -> ()
        | _ -> leaders[term] <- node

    /// Leader completeness, checked when a node becomes leader: it must hold every entry committed in an earlier
    /// term (entries at or before its snapshot point are covered by the snapshot checks).
    member this.CheckNewLeader(node: string, term: Term, log: LogStore) =
        let mutable i = log.BaseIndex + 1L
        while i <= maxCommitted && violation.IsNone do
            match committed.TryGetValue i with
            | true, struct (entryTerm, commitTerm) when commitTerm < term ->
                match log.TermAt i with
                | ValueSome t when t = entryTerm -> ()
                | found ->
                    this.Safety(
                        SafetyProperty.LeaderCompleteness,
                        sprintf
                            "%s became leader of term %d without the entry committed at index %d (term %d, committed in term %d); its log has %s"
                            node
                            term
                            i
                            entryTerm
                            commitTerm
                            (match found with
                             | ValueSome t -> sprintf "term %d there" t
                             | ValueNone -> "nothing there")
                    )
            | _ -> ()
            i <- i + 1L

    /// A node's commit index rose from `from` to `upTo` while its term was `term`: records the newly committed
    /// entries (as the node's log has them) and checks that no index is committed with two different terms, and
    /// that current leaders of later terms hold them.
    member this.ObserveCommit
        (node: string, term: Term, from: LogIndex, upTo: LogIndex, log: LogStore, leaderLogs: (string * Term * LogStore) list)
        =
        let mutable i = from + 1L
        while i <= upTo && violation.IsNone do
            match log.TermAt i with
            | ValueNone ->
                if i > log.LastIndex then
                    this.Safety(
                        SafetyProperty.LogMatching,
                        sprintf "%s's commit index %d is beyond its last entry %d" node upTo log.LastIndex
                    )
            | ValueSome t ->
                match committed.TryGetValue i with
                | true, struct (t0, c0) ->
                    if t0 <> t then
                        this.Safety(
                            SafetyProperty.StateMachineSafety,
                            sprintf "index %d committed with term %d and, on %s, with term %d" i t0 node t
                        )
                    elif term < c0 then
                        committed[i] <- struct (t0, term)
                | _ ->
                    committed[i] <- struct (t, term)
                    if i > maxCommitted then
                        maxCommitted <- i
                    for (leader, leaderTerm, leaderLog) in leaderLogs do
                        if leaderTerm > term && i > leaderLog.BaseIndex && leaderLog.TermAt i <> ValueSome t then
                            this.Safety(
                                SafetyProperty.LeaderCompleteness,
                                sprintf
                                    "index %d (term %d) committed on %s in term %d is missing from %s, leader of term %d"
                                    i
                                    t
                                    node
                                    term
                                    leader
                                    leaderTerm
                            )
            i <- i + 1L

    /// Commit monotonicity within one node's lifetime.
    member this.CheckCommitMonotone(node: string, before: LogIndex, after: LogIndex) =
        if after < before then
            this.Safety(SafetyProperty.CommitMonotonicity, sprintf "%s's commit index went from %d back to %d" node before after)

    /// Log matching: entries written with the same index and term must carry the same payload and follow the same
    /// previous term, which by induction makes the logs identical up to there. `log` is the node's written log
    /// after the write.
    member this.ObserveWrite(node: string, batch: Entry list, log: LogStore) =
        for e in batch do
            if violation.IsNone && e.Index > log.BaseIndex then
                let prev = log.TermAt(e.Index - 1L)
                let key = struct (e.Index, e.Term)
                match written.TryGetValue key with
                | true, struct (payload, prevTerm) ->
                    if payload <> e.Payload then
                        this.Safety(
                            SafetyProperty.LogMatching,
                            sprintf "%s wrote a different entry at index %d term %d than another node" node e.Index e.Term
                        )
                    else
                        match prevTerm, prev with
                        | ValueSome a, ValueSome b when a <> b ->
                            this.Safety(
                                SafetyProperty.LogMatching,
                                sprintf "%s holds index %d term %d after term %d, another node after term %d" node e.Index e.Term b a
                            )
                        | ValueNone, ValueSome _ -> written[key] <- struct (payload, prev)
                        | _ -> ()
                | _ -> written[key] <- struct (e.Payload, prev)

    /// State machine safety: no two nodes apply different entries at one index, and the state after an index is
    /// the same everywhere. Also checks that an acknowledged write is the one applied at its index.
    member this.ObserveApply(node: string, entry: Entry, state: KvModel.Replica) =
        match applied.TryGetValue entry.Index with
        | true, struct (other, who) ->
            if other <> entry then
                let show (e: Entry) =
                    match e.Payload with
                    | Payload.Noop -> sprintf "term %d no-op" e.Term
                    | Payload.Config c -> sprintf "term %d configuration of %d members" e.Term c.Members.Count
                    | Payload.Command bytes ->
                        match LogCommandCodec.decodeArray bytes with
                        | Ok c -> sprintf "term %d %A" e.Term c
                        | Error _ -> sprintf "term %d undecodable command" e.Term
                this.Safety(
                    SafetyProperty.StateMachineSafety,
                    sprintf "%s applied %s at index %d but %s applied %s" node (show entry) entry.Index who (show other)
                )
        | _ -> applied[entry.Index] <- struct (entry, node)
        this.ObserveState(node, entry.Index, state)
        match acknowledged.TryGetValue entry.Index with
        | true, term when term <> entry.Term ->
            this.Safety(
                SafetyProperty.AcknowledgedWriteLost,
                sprintf "the write acknowledged at index %d term %d was replaced: %s applied term %d there" entry.Index term node entry.Term
            )
        | _ -> ()

    /// The state machine contents after applying up to `index` (after applying, or from a snapshot) must be the
    /// same on every node.
    member this.ObserveState(node: string, index: LogIndex, state: KvModel.Replica) =
        if index > 0L then
            match stateAt.TryGetValue index with
            | true, other ->
                if not (KvModel.same other.Data state.Data) then
                    this.Safety(
                        SafetyProperty.StateMachineSafety,
                        sprintf "%s's state machine at index %d differs from another node's" node index
                    )
                elif other.Sessions <> state.Sessions then
                    this.Safety(
                        SafetyProperty.StateMachineSafety,
                        sprintf "%s's client sessions at index %d differ from another node's" node index
                    )
            | _ -> stateAt[index] <- state

    /// Exactly-once: a session's request took effect (was applied, not answered from the session's results) at
    /// `index`. Replaying the same entry after a restart is fine; taking effect at a second index is not.
    member this.ObserveRequestApplied(node: string, session: int64, sequence: int64, index: LogIndex) =
        match requests.TryGetValue(struct (session, sequence)) with
        | true, first when first <> index ->
            this.Safety(
                SafetyProperty.RequestAppliedTwice,
                sprintf
                    "%s applied request %d of session %d at index %d, but it had already taken effect at index %d"
                    node
                    sequence
                    session
                    index
                    first
            )
        | true, _ -> ()
        | _ -> requests[struct (session, sequence)] <- index

    /// A client was told its write took effect at this index and term.
    member this.ObserveAcknowledged(index: LogIndex, term: Term) =
        acknowledged[index] <- term
        match applied.TryGetValue index with
        | true, struct (e, who) when e.Term <> term ->
            this.Safety(
                SafetyProperty.AcknowledgedWriteLost,
                sprintf "a write was acknowledged at index %d term %d but %s applied term %d there" index term who e.Term
            )
        | _ -> ()

    /// The highest acknowledged index (0 if none).
    member _.MaxAcknowledged = if acknowledged.Count = 0 then 0L else Seq.max acknowledged.Keys
