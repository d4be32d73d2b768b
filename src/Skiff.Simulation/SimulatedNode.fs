/// What the simulator keeps for each node: its durable store (what survives a crash), its disk queue, and the
/// volatile interpreter state (inbox, state machine, waiting requests) that a crash loses.
namespace Skiff.Simulation

open System
open System.Collections.Generic
open Skiff.Core

/// Nodes are named by slot, their position in creation order.
module Slot =
    /// Stable node ids: slot k gets 00000000-0000-0000-0000-<k+1>.
    let id (slot: int) : NodeId = Guid(sprintf "00000000-0000-0000-0000-%012d" (slot + 1))

    /// The short name used in descriptions: "n1" for slot 0.
    let name (slot: int) : string = sprintf "n%d" (slot + 1)

/// One simulated node. The first group of members is its durable store, which a crash keeps; the rest is lost
/// on a crash and rebuilt by Interpreter.Boot.
type internal Node<'S>(slot: int, bootstrap: Configuration) =
    member val Slot = slot
    member val Id = Slot.id slot
    member val Name = Slot.name slot
    member val Bootstrap = bootstrap
    member val State: 'S voption = ValueNone with get, set
    member val Alive = false with get, set
    // durable
    member val Hard: HardState = { Term = 0L; VotedFor = None } with get, set
    member val Durable = LogStore()
    member val Snapshot: (SnapshotMeta * KvModel.Replica) option = None with get, set
    // volatile: what the reducer has asked for so far (durable or not), for the invariants
    member val WrittenHard: HardState = { Term = 0L; VotedFor = None } with get, set
    member val Written = LogStore()
    // volatile: the disk queue and the events fed back to the reducer
    member val Disk = Queue<DiskItem>()
    member val DiskLast = 0L with get, set
    member val Inbox = Queue<Event>()
    // volatile: the state machine and staged snapshots
    member val Kv = KvModel.emptyReplica with get, set
    member val Applied = 0L with get, set
    member val Staged = Dictionary<string, SnapshotMeta * KvModel.Replica>()
    // volatile: client requests waiting for the state machine
    member val WaitingReads = ResizeArray<struct (RequestId * LogIndex)>()
    member val AcceptedWaits = ResizeArray<struct (RequestId * LogIndex * Term)>()
    // volatile: what the invariants last observed of the reducer
    member val LastRole = Role.Follower with get, set
    member val LastTerm = 0L with get, set
    member val LastCommit = 0L with get, set
