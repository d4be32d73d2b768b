namespace Skiff.Core

/// Tunables of the reducer. Time is counted in ticks (Event.Tick); the interpreter decides how long a tick is.
/// With the suggested 10 ms tick the defaults give skiff-rs's timing: 50 ms heartbeat, 150–300 ms election timeout.
type Options =
    {
        /// Ticks between heartbeat rounds sent by a leader.
        HeartbeatTicks: int
        /// Lower bound of the randomised election timeout, in ticks. Also the leader-stickiness window and the
        /// CheckQuorum period.
        ElectionTicksMin: int
        /// Upper bound (inclusive) of the randomised election timeout, in ticks.
        ElectionTicksMax: int
        /// AppendEntries messages a leader keeps outstanding per follower before waiting for replies.
        MaxInflight: int
        /// Most entries carried by one AppendEntries.
        MaxEntriesPerAppend: int
        /// Rough byte budget of one AppendEntries (at least one entry is always sent).
        MaxBytesPerAppend: int
        /// The most recent entries the reducer keeps in memory; older ones are fetched with Effect.LoadEntries. Entries
        /// applied, durable and (on a leader) matched by every peer are let go sooner (Applying.releaseWindow), so a
        /// healthy cluster holds only those in flight and the full window serves a lagging peer.
        WindowSize: int
        /// Take a snapshot once this many entries have been applied since the last one.
        SnapshotThreshold: int64
        /// Take a snapshot once entries of this many bytes (as LogView.entrySize counts) have been applied since the
        /// last one, whichever of this and SnapshotThreshold comes first. The log holds everything since the last
        /// snapshot, so this bounds its disk use whatever the size of the values.
        SnapshotBytes: int64
        /// Entries kept in storage behind a snapshot, so that slightly slow followers still get entries.
        CompactionTail: int64
        /// A learner is promoted to voter once its match index is within this many entries of the commit index.
        PromotionLag: int64
        /// Ask for pre-votes before raising the term (thesis §9.6).
        PreVote: bool
        /// A leader that has not heard from a majority within ElectionTicksMin steps down (thesis §6.2).
        CheckQuorum: bool
        /// Rough byte budget of the in-memory window (as LogView.entrySize counts): the window holds at most
        /// WindowSize entries and at most this many bytes (but always the newest entry).
        WindowBytes: int64
        /// Rough byte budget of the entries a leader has appended in its term and not yet committed: a proposal that
        /// would go past it is refused with Rejection.Overloaded (one proposal is always accepted when nothing is
        /// uncommitted, however large). Bounds a leader's memory and log growth while it cannot commit.
        MaxUncommittedBytes: int64
        /// Most reads a leader holds waiting (for its first commit or for a heartbeat round), and separately most
        /// repeated AddServer requests waiting for a change to commit; more are refused with Rejection.Overloaded.
        MaxWaitingRequests: int
    }

/// Defaults and sanitising of Options.
[<RequireQualifiedAccess>]
module Options =
    /// Sane defaults for a 10 ms tick.
    let defaults: Options =
        { HeartbeatTicks = 5
          ElectionTicksMin = 15
          ElectionTicksMax = 30
          MaxInflight = 8
          MaxEntriesPerAppend = 64
          MaxBytesPerAppend = 1024 * 1024
          WindowSize = 4096
          // etcd's snapshot-count. A snapshot is a full FASTER checkpoint that stalls applying for 100-200 ms on
          // 2 cores; at 10,000 a node under ~10,000 writes/s took one every second (p99 write latency 40-60 ms).
          SnapshotThreshold = 100000L
          // 100,000 entries of 1 KiB values kept 100 MB of log between snapshots; 8 MiB keeps the log (and what a
          // snapshot's checkpoint has to write) small for any value size, and is 8,000 such entries.
          SnapshotBytes = 8L * 1024L * 1024L
          CompactionTail = 1000L
          PromotionLag = 64L
          PreVote = true
          CheckQuorum = true
          // 64 MiB each: 64 values at the runtime's 1 MiB value limit. A window of 4,096 entries alone could hold
          // 4 GiB of such values. The uncommitted cap is etcd's MaxUncommittedEntriesSize idea; it is far above
          // what a healthy leader holds (throughput x commit latency: 10,000 writes/s x 1 KiB x 10 ms = 100 KiB)
          // and, being no larger than the window, keeps every entry not yet durable in memory.
          WindowBytes = 64L * 1024L * 1024L
          MaxUncommittedBytes = 64L * 1024L * 1024L
          // Ten thousand concurrent reads (or AddServer retries) in one leader is far beyond a healthy load; a
          // leader that cannot confirm its rounds must not collect waiting reads without end.
          MaxWaitingRequests = 10000 }

    /// Clamps nonsensical values (zero or negative sizes, max below min) so that the reducer stays total.
    let sanitise (o: Options) : Options =
        let heartbeat = max 1 o.HeartbeatTicks
        let emin = max (heartbeat + 1) o.ElectionTicksMin
        { o with
            HeartbeatTicks = heartbeat
            ElectionTicksMin = emin
            ElectionTicksMax = max emin o.ElectionTicksMax
            MaxInflight = max 1 o.MaxInflight
            MaxEntriesPerAppend = max 1 o.MaxEntriesPerAppend
            MaxBytesPerAppend = max 1 o.MaxBytesPerAppend
            WindowSize = max 1 o.WindowSize
            WindowBytes = max 1L o.WindowBytes
            MaxUncommittedBytes = max 1L o.MaxUncommittedBytes
            MaxWaitingRequests = max 1 o.MaxWaitingRequests
            SnapshotThreshold = max 1L o.SnapshotThreshold
            SnapshotBytes = max 1L o.SnapshotBytes
            CompactionTail = max 0L o.CompactionTail
            PromotionLag = max 0L o.PromotionLag }
