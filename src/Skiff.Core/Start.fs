namespace Skiff.Core

/// Everything the reducer needs to start (or restart) a node, read by the interpreter from its storage.
type Start =
    {
        /// This node's id.
        Id: NodeId
        /// Tunables.
        Options: Options
        /// Seed of the node's random generator (election timeouts). Give every node a different one.
        Seed: uint64
        /// The durable term and vote.
        HardState: HardState
        /// The latest durable snapshot, if any.
        Snapshot: SnapshotMeta option
        /// First index held in the stored log (usually the snapshot index + 1, less if a tail was kept).
        FirstIndex: LogIndex
        /// Index of the last stored entry.
        LastIndex: LogIndex
        /// First index of every term present in the stored log; the term of FirstIndex - 1 must be derivable
        /// (it is the snapshot's, or 0 for an empty log, or given here).
        TermBoundaries: (LogIndex * Term) list
        /// The most recent stored entries (any number; a contiguous run ending at LastIndex is kept in memory).
        RecentEntries: Entry list
        /// Configuration entries of the stored log after the snapshot that are not among RecentEntries.
        LogConfigurations: (LogIndex * Configuration) list
        /// Index the state machine has applied (it restored the snapshot and applied entries up to here).
        Applied: LogIndex
        /// An index the node knew to be committed when it last wrote to its log (0 if unknown): every stored entry
        /// up to it is committed, so the node applies them at once instead of waiting for a leader to say so
        /// again (etcd keeps Commit in its hard state for the same reason). Storage must only record a value
        /// that was the node's commit index when the entries up to it were written in the same order as here.
        CommitHint: LogIndex
        /// The configuration before any log or snapshot: for the first node of a new cluster, itself as the
        /// single voter; for a node that will join an existing cluster, Configuration.Empty.
        Bootstrap: Configuration
    }

/// What a node's storage holds when it starts, as the interpreter reads it: the input of Start.ofStore.
type Stored =
    {
        /// The durable term and vote.
        HardState: HardState
        /// The latest durable snapshot, if any.
        Snapshot: SnapshotMeta option
        /// The stored log entries, ascending and contiguous. They may begin before the snapshot index when storage
        /// keeps a tail behind the snapshot (for followers slightly behind).
        Entries: Entry list
        /// The index just before the first of Entries (the compaction point; the snapshot index if the log was
        /// reset to it; 0 for a log never compacted) ...
        BaseIndex: LogIndex
        /// ... and the term of the entry there. The entries alone cannot tell it, and when a tail is kept behind the
        /// snapshot it is not the snapshot's term either.
        BaseTerm: Term
        /// Index the state machine has applied (it restored the snapshot and applied entries up to here).
        Applied: LogIndex
        /// The commit index recorded with the log (see Start.CommitHint; 0 if none).
        CommitHint: LogIndex
        /// The configuration before any log or snapshot (see Start.Bootstrap).
        Bootstrap: Configuration
    }

/// Helpers to build a Start.
[<RequireQualifiedAccess>]
module Start =
    /// A brand-new node with empty storage.
    let fresh (id: NodeId) (options: Options) (seed: uint64) (bootstrap: Configuration) : Start =
        { Id = id
          Options = options
          Seed = seed
          HardState = { Term = 0L; VotedFor = None }
          Snapshot = None
          FirstIndex = 1L
          LastIndex = 0L
          TermBoundaries = []
          RecentEntries = []
          LogConfigurations = []
          Applied = 0L
          CommitHint = 0L
          Bootstrap = bootstrap }

    /// A node restarting from what its storage holds: the one way both the runtime and the simulator build a
    /// Start from storage. Derives the term boundaries and configurations from the entries, and gives the term of
    /// the entry before the first one (Raft.init needs it as the log's base; without it, when a tail is kept
    /// behind the snapshot, the first stored entry would have to serve as the base and be lost from the log).
    let ofStore (id: NodeId) (options: Options) (seed: uint64) (stored: Stored) : Start =
        let entries = stored.Entries
        let snapIndex = stored.Snapshot |> Option.map (fun m -> m.Index) |> Option.defaultValue 0L
        let first, last =
            match entries with
            | [] -> snapIndex + 1L, snapIndex
            | e :: _ -> e.Index, (List.last entries).Index
        let bounds =
            entries
            |> List.fold
                (fun (acc: (LogIndex * Term) list) e ->
                    match acc with
                    | (_, t) :: _ when t = e.Term -> acc
                    | _ -> (e.Index, e.Term) :: acc)
                []
        // The base's term is derivable when the base is the snapshot point or the start of the log; otherwise it
        // is added as the oldest boundary (only if it really is the entry before the first one).
        let bounds =
            match entries with
            | e :: _ when stored.BaseIndex > 0L && stored.BaseIndex <> snapIndex && e.Index = stored.BaseIndex + 1L ->
                bounds @ [ stored.BaseIndex, stored.BaseTerm ]
            | _ -> bounds
        { fresh id options seed stored.Bootstrap with
            HardState = stored.HardState
            Snapshot = stored.Snapshot
            FirstIndex = first
            LastIndex = last
            TermBoundaries = bounds
            RecentEntries = entries
            Applied = stored.Applied
            CommitHint = stored.CommitHint }
