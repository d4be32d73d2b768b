/// Unit tests of snapshots and compaction, and the totality property of `step`.
module Skiff.PropertyTests.RaftSnapshotTests

open Expecto
open FsCheck
open Skiff.Core
open Skiff.PropertyTests.RaftHarness

let private n1, n2, n3 = nid 1, nid 2, nid 3

let snapshots =
    testList
        "Raft.Snapshots"
        [ test "snapshot taken after threshold, log compacted keeping a tail" {
              let options = { opts with SnapshotThreshold = 5L; CompactionTail = 2L }
              let c = Cluster([ n1 ], options)
              c.Deliver()
              for k in 1..5 do
                  c.Step(n1, Event.Propose(int64 k, [| byte k |])) |> ignore
                  c.Deliver()
              let effects = List.ofSeq (c.Node n1).Effects
              Expect.isTrue (effects |> List.exists (function Effect.TakeSnapshot 5L -> true | _ -> false)) "TakeSnapshot at the applied index"
              Expect.isTrue (effects |> List.exists (function Effect.CompactLog 3L -> true | _ -> false)) "compacted up to index - tail"
              Expect.equal (Raft.snapshot (c.State n1)).Index 5L "snapshot adopted"
              Expect.equal (Raft.firstIndex (c.State n1)) 4L "first stored index moved"
          }
          test "snapshot sent to follower behind compaction point" {
              let options = { opts with SnapshotThreshold = 5L; CompactionTail = 0L }
              let c = Cluster([ n1; n2; n3 ], options)
              c.Elect n1
              c.Isolate n3
              for k in 1..12 do
                  c.Step(n1, Event.Propose(int64 k, [| byte k |])) |> ignore
                  c.Deliver()
              Expect.isGreaterThan (Raft.firstIndex (c.State n1)) 2L "leader compacted"
              c.Heal n3
              for _ in 1..10 do
                  c.TickAll()
              Expect.isTrue ((c.Node n1).Effects |> Seq.exists (function Effect.SendSnapshot(t, _, _) -> t = n3 | _ -> false)) "SendSnapshot to n3"
              let n3effects = List.ofSeq (c.Node n3).Effects
              let install = n3effects |> indexOf (function Effect.InstallSnapshot _ -> true | _ -> false)
              let reply = n3effects |> indexOf (function Effect.Send { Message = Message.SnapshotReply _ } -> true | _ -> false)
              Expect.isGreaterThanOrEqual install 0 "n3 installed it"
              Expect.isLessThan install reply "InstallSnapshot precedes the reply"
              Expect.equal (Raft.lastIndex (c.State n3)) (Raft.lastIndex (c.State n1)) "then caught up by entries"
              Expect.equal (Raft.commitIndex (c.State n3)) (Raft.commitIndex (c.State n1)) "and commit"
          }
          test "stale snapshot is answered without installing" {
              let c = RaftElectionTests.elected ()
              let term = Raft.term (c.State n2)
              let request = { Term = term; Leader = n1; Meta = { Index = 1L; Term = term; Configuration = votersConfig [ n1; n2; n3 ] }; Staged = "x" }
              let _, effects = Raft.step (c.State n2) (Event.Receive { From = n1; To = n2; Message = Message.Snapshot request })
              Expect.isFalse (effects |> List.exists (function Effect.InstallSnapshot _ -> true | _ -> false)) "nothing installed"
              Expect.isNonEmpty (sends effects) "answered"
          } ]

// ---- Totality ----------------------------------------------------------------------------------------------

let private pool = [| n1; n2; n3; nid 4 |]

/// Points most random messages at the node under test and makes them come from known nodes, so that they are
/// not all discarded at the first check.
let private aim (target: NodeId) (k: int) (ev: Event) : Event =
    match ev with
    | Event.Receive env when k % 5 <> 0 -> Event.Receive { env with To = target; From = pool[abs k % pool.Length] }
    | other -> other

let private states () =
    let single = Cluster([ n1 ], opts)
    single.Deliver()
    let three = RaftElectionTests.elected ()
    for k in 1..3 do
        three.Step(n1, Event.Propose(int64 k, [| byte k |])) |> ignore
        three.Deliver()
    [ Raft.init (Start.fresh n2 opts 1UL (votersConfig [ n1; n2; n3 ])) |> fst
      Raft.init (Start.fresh n2 opts 1UL Configuration.Empty) |> fst
      single.State n1
      three.State n1
      three.State n2 ]

let private config = { FsCheckConfig.defaultConfig with maxTest = 300 }

let totality =
    testList
        "Raft.Totality"
        [ testPropertyWithConfig config "step never throws on random events" (fun (events: Event list) (which: int) ->
              let all = states ()
              let s0 = all[abs which % all.Length]
              let mutable s = s0
              events |> List.iteri (fun k ev -> s <- fst (Raft.step s (aim s0.Id k ev)))
              // Interleave ticks so that timers fire too.
              for _ in 1..40 do
                  s <- fst (Raft.step s Event.Tick)
              true)
          testPropertyWithConfig config "effects are well ordered: no Send before the hard state it depends on" (fun (events: Event list) ->
              let mutable s = (states ())[3]
              let mutable ok = true
              events
              |> List.iteri (fun k ev ->
                  let s2, effects = Raft.step s (aim s.Id k ev)
                  // A vote granted must be preceded by the PersistHardState that records it.
                  let granted = effects |> indexOf (function Effect.Send { Message = Message.VoteReply r } -> r.Granted && not r.PreVote | _ -> false)
                  if granted >= 0 then
                      let persisted = effects |> indexOf (function Effect.PersistHardState h -> h.VotedFor.IsSome | _ -> false)
                      if persisted < 0 || persisted > granted then
                          // Granting again to the same candidate in the same term needs no new write.
                          if Raft.votedFor s <> Raft.votedFor s2 || Raft.term s <> Raft.term s2 then ok <- false
                  s <- s2)
              ok) ]
