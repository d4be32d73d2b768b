/// The vocabulary of the Raft reducer: identities, log entries, cluster configuration, peer messages, the events
/// the reducer consumes and the effects it emits. Everything here is plain immutable data, so the same values flow
/// through the deterministic simulator and the real runtime. See docs/architecture.md for the ordering rules an
/// interpreter must honour when it carries out effects.
namespace Skiff.Core

open System

/// A node's stable identity, created once and kept in its data directory.
type NodeId = Guid

/// A Raft term. Terms only grow.
type Term = int64

/// A log index. The first entry has index 1; 0 means "before the log".
type LogIndex = int64

/// An id the interpreter gives each client request so that the reducer's answer can be matched to it.
type RequestId = int64

/// One member of the cluster as recorded in the log.
type Member =
    {
        /// The member's stable id.
        Id: NodeId
        /// Where the other members reach it, as the interpreter understands it: the runtime's is "host:port" with a
        /// host name or an IP address (e.g. "127.0.0.2:9400", "skiff-1.skiff:9400"). Changed only by
        /// ConfigChange.UpdateServer; no two members share one.
        Address: string
        /// Voters count toward quorums; non-voters (learners) only receive the log.
        Voter: bool
    }

/// A cluster configuration: the members as of the newest configuration entry in a node's log (Raft uses the
/// newest configuration it has, committed or not; only one change is ever in flight).
type Configuration =
    {
        /// Every member, voter or learner, by id.
        Members: Map<NodeId, Member>
    }

    /// The ids of the voting members.
    member this.Voters = this.Members |> Seq.filter (fun kv -> kv.Value.Voter) |> Seq.map (fun kv -> kv.Key) |> Set.ofSeq

    /// A configuration with no members (a node that has not joined a cluster yet).
    static member Empty = { Members = Map.empty }

/// A single-server membership change, as asked for by an operator or a joining node.
[<RequireQualifiedAccess>]
type ConfigChange =
    /// Add a node as a non-voting learner; the leader promotes it to voter by itself once it has caught up.
    | AddServer of Id: NodeId * Address: string
    /// Remove a node (voter or learner). Removing the leader makes it step down once the change commits.
    | RemoveServer of Id: NodeId
    /// Give an existing member a new address (it moved: another host, port or name), keeping its id and its vote.
    /// The voters stay the same set, so this is as safe as any single-server change; it takes its turn with them.
    | UpdateServer of Id: NodeId * Address: string

/// What a log entry carries.
[<RequireQualifiedAccess>]
type Payload =
    /// Appended by a new leader at the start of its term so that earlier entries can commit (Raft §5.4.2).
    | Noop
    /// An application command, opaque to the reducer (for Skiff, a CommandCodec-encoded Command).
    | Command of Bytes: byte[]
    /// A new cluster configuration, which takes effect as soon as it is in a node's log.
    | Config of Configuration: Configuration

/// One entry of the replicated log.
type Entry = { Index: LogIndex; Term: Term; Payload: Payload }

/// The state that must be durable before a node answers anything that depends on it.
type HardState =
    {
        /// The latest term this node has seen.
        Term: Term
        /// Whom this node voted for in `Term`, if anyone.
        VotedFor: NodeId option
    }

/// Describes a snapshot of the state machine: everything up to and including `Index` is in it.
type SnapshotMeta =
    {
        Index: LogIndex
        Term: Term
        /// The configuration in force at `Index`.
        Configuration: Configuration
    }

/// The role a node plays in its current term.
[<RequireQualifiedAccess>]
type Role =
    | Follower
    /// Asking for pre-votes: its term has not been raised yet (Raft thesis §9.6).
    | PreCandidate
    | Candidate
    | Leader

/// Why the reducer refused a client request.
[<RequireQualifiedAccess>]
type Rejection =
    /// This node is not the leader; the hint says who is, if known. The interpreter may forward there.
    | NotLeader of LeaderHint: NodeId option
    /// A leadership transfer is under way; proposals wait until it ends or times out.
    | TransferInProgress
    /// Another membership change has not committed yet.
    | ConfigChangeInProgress
    /// The leader lost leadership before the request could be answered; its outcome is unknown for writes.
    | LeadershipLost
    /// The request does not make sense (e.g. removing a node that is not a member); the text says why.
    | Invalid of Reason: string
    /// A leadership transfer did not complete within an election timeout: the target never caught up, so it was
    /// never told to campaign (no TimeoutNow was sent). This node is still the leader and accepts proposals again;
    /// leadership does not move because of this transfer.
    | TransferTimedOut
    /// The target was told to campaign (TimeoutNow was sent) but this node still led, in the same term, an election
    /// timeout later: the message or the target's vote requests may have been lost, or the target may still be
    /// winning an election it started. Leadership may therefore still move at any moment; this node accepts
    /// proposals again meanwhile. (When this node sees a higher term first, the transfer is `Completed`.)
    | TransferOutcomeUnknown
    /// Refused before proposing, because a bounded queue is full: the leader's uncommitted entries have reached
    /// Options.MaxUncommittedBytes, or Options.MaxWaitingRequests reads (or repeated AddServer requests) are
    /// already waiting. Nothing was applied; retry later.
    | Overloaded

/// RequestVote, used both for pre-votes and real votes.
type VoteRequest =
    {
        Term: Term
        Candidate: NodeId
        LastLogIndex: LogIndex
        LastLogTerm: Term
        /// A pre-vote: the term is the one the candidate would use; no one changes state for it.
        PreVote: bool
        /// Sent after TimeoutNow: voters grant even if they heard from a leader recently.
        Transfer: bool
    }

/// The answer to a VoteRequest.
type VoteReply = { Term: Term; Granted: bool; PreVote: bool }

/// AppendEntries: replication and heartbeats in one message.
type AppendRequest =
    {
        Term: Term
        Leader: NodeId
        PrevLogIndex: LogIndex
        PrevLogTerm: Term
        Entries: Entry list
        LeaderCommit: LogIndex
        /// The leader's round counter in this term; followers echo it so that the leader can confirm its
        /// leadership for ReadIndex and CheckQuorum without extra messages.
        Round: int64
    }

/// The answer to an AppendRequest.
type AppendReply =
    {
        Term: Term
        Success: bool
        /// On success, the index of the last entry known to match the leader's log. On failure, the PrevLogIndex of
        /// the request rejected, so that the leader can tell an answer to its current probe from a stale, duplicated
        /// or reordered one (as etcd-io/raft's rejected index).
        MatchIndex: LogIndex
        /// On failure, where the leader should retry: the first index of the conflicting term, or one past the
        /// follower's last entry (Raft thesis §5.3 optimisation).
        ConflictIndex: LogIndex
        /// On failure, the term of the conflicting entry, if any.
        ConflictTerm: Term option
        /// The Round of the request this answers.
        Round: int64
    }

/// The leader's offer of a snapshot. The bytes travel outside the reducer: the interpreter streams them and hands
/// the reducer a message only once the whole snapshot is staged on the receiver, named by `Staged`.
type SnapshotRequest =
    {
        Term: Term
        Leader: NodeId
        Meta: SnapshotMeta
        /// The interpreter's name for the staged snapshot data on the receiving node.
        Staged: string
    }

/// The answer to a SnapshotRequest.
type SnapshotReply =
    {
        Term: Term
        /// The snapshot index now installed (0 if refused).
        MatchIndex: LogIndex
    }

/// The Raft messages exchanged between peers.
[<RequireQualifiedAccess>]
type Message =
    | Vote of Request: VoteRequest
    | VoteReply of Reply: VoteReply
    | Append of Request: AppendRequest
    | AppendReply of Reply: AppendReply
    | Snapshot of Request: SnapshotRequest
    | SnapshotReply of Reply: SnapshotReply
    /// Leadership transfer: the receiver should start an election at once.
    | TimeoutNow of Term: Term

/// A message with its sender and addressee.
type Envelope = { From: NodeId; To: NodeId; Message: Message }

/// Why the reducer asks for entries it no longer holds in memory.
[<RequireQualifiedAccess>]
type LoadPurpose =
    /// To replicate them to a follower that is behind the in-memory window.
    | Replicate of Peer: NodeId
    /// To apply them to the state machine (after a restart with a long unapplied tail).
    | Apply

/// Everything that happens to a node, fed to the reducer one at a time.
[<RequireQualifiedAccess>]
type Event =
    /// One unit of logical time has passed.
    | Tick
    /// A message from a peer arrived.
    | Receive of Envelope: Envelope
    /// A client asks to append a command.
    | Propose of Id: RequestId * Command: byte[]
    /// A client asks for a linearizable read (ReadIndex).
    | Read of Id: RequestId
    /// An operator or joining node asks for a membership change.
    | ChangeConfig of Id: RequestId * Change: ConfigChange
    /// Hand leadership to the given voter.
    | TransferLeadership of Id: RequestId * Target: NodeId
    /// Log entries up to `Index` (whose entry has term `Term`) are durable on this node.
    | Persisted of Index: LogIndex * Term: Term
    /// Entries asked for with LoadEntries, or an empty list if they were compacted away.
    | EntriesLoaded of Purpose: LoadPurpose * Entries: Entry list
    /// The snapshot asked for with TakeSnapshot is durable.
    | SnapshotTaken of Meta: SnapshotMeta
    /// The state machine asks for a snapshot before the usual threshold: its files shrink only when a snapshot's
    /// checkpoint is durable (a compaction moved past data that only then can be deleted). A hint: ignored while a
    /// snapshot is under way or when nothing was applied since the last one.
    | SnapshotWanted

/// Everything the reducer asks the outside world to do. See docs/architecture.md for the ordering rules.
[<RequireQualifiedAccess>]
type Effect =
    /// Make the hard state durable. A Send later in the same effect list must wait for it.
    | PersistHardState of HardState: HardState
    /// Make these entries durable, first discarding any stored entries at or after the first one's index.
    /// A Send later in the same list must wait for it; answer with Event.Persisted once durable.
    | PersistEntries of Entries: Entry list
    /// Send a message to a peer. Loss, delay and reordering are tolerated.
    | Send of Envelope: Envelope
    /// Apply these committed entries to the state machine, in order, after all earlier Apply effects.
    | Apply of Entries: Entry list
    /// Read entries [From, To] from storage and answer with Event.EntriesLoaded.
    | LoadEntries of Purpose: LoadPurpose * From: LogIndex * To: LogIndex
    /// A proposal was appended at this index and term; it succeeded if the entry applied at that index has
    /// that term, and failed if another entry is applied there.
    | Accepted of Id: RequestId * Index: LogIndex * Term: Term
    /// A request was refused or abandoned.
    | Reject of Id: RequestId * Rejection: Rejection
    /// These reads are linearizable once the state machine has applied at least `Index`: serve them then.
    | ReadReady of Ids: RequestId list * Index: LogIndex
    /// The change or transfer with this id is done (a config change is committed; a transfer has handed over).
    | Completed of Id: RequestId
    /// Snapshot the state machine at `Meta.Index`, its applied index once all earlier Apply effects are done, and
    /// answer with Event.SnapshotTaken. `Meta` carries the term and configuration in force there, so that the
    /// interpreter need not keep its own copy of them.
    | TakeSnapshot of Meta: SnapshotMeta
    /// Discard stored log entries up to and including this index (they are in a snapshot).
    | CompactLog of UpTo: LogIndex
    /// Stream the latest snapshot to a peer, then deliver it there as a Message.Snapshot.
    | SendSnapshot of To: NodeId * Term: Term * Meta: SnapshotMeta
    /// Install the staged snapshot as the state machine and replace the whole log with it, durably. A Send
    /// later in the same list must wait for it.
    | InstallSnapshot of Staged: string * Meta: SnapshotMeta
    /// For observers: role, term or known leader changed.
    | RoleChanged of Role: Role * Term: Term * Leader: NodeId option
    /// For observers and the transport: the configuration in force changed (peers' addresses live here).
    | ConfigurationChanged of Configuration: Configuration
