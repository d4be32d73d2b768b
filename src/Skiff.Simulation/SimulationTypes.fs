/// The simulator's public vocabulary: what a node's store hands the reducer at start (Boot), the reducer as the
/// simulator drives it (Reducer), the knobs of a run (Settings) and what a run returns (Stats, RunResult).
/// The functions that use them are in Simulator.fs.
namespace Skiff.Simulation

open Skiff.Core
open Skiff.Simulation.Linearizability

/// What a node's durable store holds, handed to the reducer when the node starts or restarts.
type Boot =
    {
        /// The node's id.
        Id: NodeId
        /// A seed for the node's own randomness (different at every start).
        Seed: uint64
        /// The durable term and vote.
        HardState: HardState
        /// The durable snapshot, if any.
        Snapshot: SnapshotMeta option
        /// The durable log, in order: the entries after the compaction point (which may lie before the snapshot
        /// index when a tail is kept behind the snapshot).
        Entries: Entry list
        /// The index just before `Entries` (the compaction point) and the term of the entry there; (0, 0) for a log
        /// that was never compacted.
        LogBase: LogIndex * Term
        /// The index the state machine has applied at start (the snapshot's, or 0).
        Applied: LogIndex
        /// The commit index recorded with the durable log (see Start.CommitHint).
        CommitHint: LogIndex
        /// The configuration before any log: the initial members for the first nodes, empty for a joining node.
        Bootstrap: Configuration
    }

/// A reducer as the simulator drives it: how to start a node, how to step it, and the queries the invariants need.
/// Tests wrap these functions to build deliberately broken variants.
type Reducer<'S> =
    {
        /// Starts a node from its durable store.
        Init: Boot -> 'S * Effect list
        /// Feeds one event.
        Step: 'S -> Event -> 'S * Effect list
        /// The node's role.
        Role: 'S -> Role
        /// The node's current term.
        Term: 'S -> Term
        /// The leader the node knows of.
        Leader: 'S -> NodeId option
        /// The node's commit index.
        CommitIndex: 'S -> LogIndex
        /// The configuration in force on the node.
        Configuration: 'S -> Configuration
    }

/// Knobs of a run that are not part of the fault schedule.
type Settings =
    {
        /// Clients issuing operations (each has at most one outstanding).
        Clients: int
        /// Distinct keys the clients use (few keys make conflicts likely).
        Keys: int
        /// Chance in percent that an idle client starts an operation at a tick.
        OpPercent: int
        /// Ticks a client waits for an answer before recording its operation as timed out.
        ClientTimeout: int
        /// Ticks the run continues after the last scheduled fault, faults still in force.
        TailTicks: int
        /// After the faults are healed, ticks within which a leader must be elected.
        LeaderTicks: int
        /// After the faults are healed, ticks within which every member must converge on the leader's log and state.
        LivenessTicks: int
        /// While a majority of voters is connected both ways on a good network, ticks within which a leader must
        /// commit in its term (Liveness.fs, PartialLiveness); 0 turns the check off. It needs CheckQuorum.
        PartialLivenessTicks: int
        /// Chance in percent that a node misses a tick (clock drift).
        TickSkipPercent: int
        /// AddNode is ignored once this many nodes exist.
        MaxNodes: int
        /// Record a human-readable trace of the run.
        Trace: bool
        /// Clients open a session and retry every write (same session and number) after any fault until its
        /// deadline, as the runtime's clients do: each write must take effect at most once.
        Sessions: bool
        /// The state machine answers a repeated session request from its results (false: the broken variant that
        /// applies it again, for showing that the "request applied twice" invariant catches it).
        Dedup: bool
        /// A session expires after this many ticks without a request (log time is the tick).
        SessionTimeout: int
        /// With sessions, ticks a client waits for the answer to a proposal before sending it again elsewhere.
        ResendTicks: int
    }

/// Counters describing a run.
type Stats =
    {
        /// Ticks simulated.
        Ticks: int64
        /// Reducer steps taken.
        Steps: int64
        /// Messages sent.
        Messages: int64
        /// Messages lost or cut by partitions.
        Dropped: int64
        /// Client operations that returned.
        Completed: int
        /// Client operations that timed out.
        TimedOut: int
        /// Distinct terms that had a leader.
        Leaders: int
        /// Crashes injected.
        Crashes: int
        /// Snapshots installed from a leader.
        SnapshotsInstalled: int
        /// Membership changes completed.
        ConfigChanges: int
        /// Address updates completed (counted in ConfigChanges too).
        AddressUpdates: int
        /// Ticks from healing until a leader was known (0 if the run stopped earlier).
        LeaderAfterHeal: int
        /// Ticks from healing until every member converged (0 if the run stopped earlier).
        ConvergedAfterHeal: int
        /// The linearizability checker ran out of its step budget on this history (no verdict).
        Unchecked: bool
        /// The highest index committed anywhere.
        Committed: LogIndex
        /// The longest wait from a healthy majority forming to a leader committing (PartialLiveness).
        PartialLivenessWorst: int
        /// Ticks on which the partial-failure liveness check applied.
        PartialLivenessChecked: int64
    }

/// The outcome of one run.
type RunResult =
    {
        /// The schedule that was run.
        Schedule: Schedule
        /// The first property violated, if any.
        Violation: Violation option
        /// The client history given to the linearizability checker.
        History: Operation list
        /// Counters.
        Stats: Stats
        /// The trace, if Settings.Trace was set.
        Trace: string list
    }
