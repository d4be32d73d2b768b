/// Unit tests of snapshots and compaction, and the totality property of `step`.
module Skiff.PropertyTests.RaftSnapshotTests

open Expecto
open FsCheck
open Skiff.Core
open Skiff.PropertyTests.RaftHarness

let private n1, n2, n3 = nid 1, nid 2, nid 3

/// The snapshot the first TakeSnapshot among `effects` asks for.
let private snapshotAsked (effects: Effect seq) =
    effects
    |> Seq.tryPick (function
        | Effect.TakeSnapshot meta -> Some meta
        | _ -> None)

/// One voter that has applied `count` one-byte proposals (after its own Noop at index 1).
let private singleNodeWith (options: Options) (count: int) =
    let c = Cluster([ n1 ], options)
    c.Deliver()
    for k in 1..count do
        c.Step(n1, Event.Propose(int64 k, [| byte k |])) |> ignore
        c.Deliver()
    c

let snapshots =
    testList
        "Raft.Snapshots"
        [ test "snapshot taken after threshold, log compacted keeping a tail" {
              let c = singleNodeWith { opts with SnapshotThreshold = 5L; CompactionTail = 2L } 5
              let effects = List.ofSeq (c.Node n1).Effects
              let asked = snapshotAsked effects
              Expect.equal (asked |> Option.map (fun m -> m.Index)) (Some 5L) "TakeSnapshot at the applied index"
              // It carries what the interpreter stores with the snapshot, so the interpreter keeps no copy of its own.
              Expect.equal asked.Value.Term (Raft.term (c.State n1)) "TakeSnapshot carries the term of the entry there"
              Expect.equal asked.Value.Configuration.Voters (set [ n1 ]) "TakeSnapshot carries the configuration in force there"
              Expect.isTrue
                  (effects
                   |> List.exists (function
                       | Effect.CompactLog 3L -> true
                       | _ -> false))
                  "compacted up to index - tail"
              Expect.equal (Raft.snapshot (c.State n1)).Index 5L "snapshot adopted"
              Expect.equal (Raft.firstIndex (c.State n1)) 4L "first stored index moved"
          }
          test "snapshot taken once enough bytes were applied, long before the entry count" {
              // Three entries of 1,000 bytes (1,024 with entrySize's 24 of overhead) reach 3,000 bytes; the first two
              // do not, and the entry threshold is far away.
              let options = { opts with SnapshotThreshold = 1000L; SnapshotBytes = 3000L; CompactionTail = 0L }
              let c = Cluster([ n1 ], options)
              c.Deliver()
              let asked () = snapshotAsked (c.Node n1).Effects |> Option.map (fun m -> m.Index)
              for k in 1..2 do
                  c.Step(n1, Event.Propose(int64 k, Array.zeroCreate 1000)) |> ignore
                  c.Deliver()
              Expect.isNone (asked ()) "no snapshot below SnapshotBytes"
              c.Step(n1, Event.Propose(3L, Array.zeroCreate 1000)) |> ignore
              c.Deliver()
              // Index 1 is the leader's Noop, so the third proposal is at 4.
              Expect.equal (asked ()) (Some 4L) "TakeSnapshot once SnapshotBytes of entries were applied"
              Expect.equal (Raft.snapshot (c.State n1)).Index 4L "snapshot adopted"
          }
          test "a snapshot the state machine asks for is taken at once, but never twice or empty" {
              // Far from either threshold: only SnapshotWanted can start one.
              let c = singleNodeWith { opts with SnapshotThreshold = 1000L; CompactionTail = 0L } 2
              let taken (effects: Effect list) = snapshotAsked effects |> Option.map (fun m -> m.Index)
              // Index 1 is the leader's Noop: the two proposals are at 2 and 3.
              Expect.equal (taken (c.Step(n1, Event.SnapshotWanted))) (Some 3L) "taken at the applied index"
              Expect.isNone (taken (c.Step(n1, Event.SnapshotWanted))) "not while one is under way"
              c.Deliver()
              Expect.equal (Raft.snapshot (c.State n1)).Index 3L "adopted once taken"
              Expect.isNone (taken (c.Step(n1, Event.SnapshotWanted))) "not when nothing was applied since"
              c.Step(n1, Event.Propose(3L, [| 3uy |])) |> ignore
              c.Deliver()
              Expect.equal (taken (c.Step(n1, Event.SnapshotWanted))) (Some 4L) "taken again after an apply"
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
              Expect.isTrue
                  ((c.Node n1).Effects
                   |> Seq.exists (function
                       | Effect.SendSnapshot(t, _, _) -> t = n3
                       | _ -> false))
                  "SendSnapshot to n3"
              let n3effects = List.ofSeq (c.Node n3).Effects
              let install =
                  n3effects
                  |> indexOf (function
                      | Effect.InstallSnapshot _ -> true
                      | _ -> false)
              let reply =
                  n3effects
                  |> indexOf (function
                      | Effect.Send { Message = Message.SnapshotReply _ } -> true
                      | _ -> false)
              Expect.isGreaterThanOrEqual install 0 "n3 installed it"
              Expect.isLessThan install reply "InstallSnapshot precedes the reply"
              Expect.equal (Raft.lastIndex (c.State n3)) (Raft.lastIndex (c.State n1)) "then caught up by entries"
              Expect.equal (Raft.commitIndex (c.State n3)) (Raft.commitIndex (c.State n1)) "and commit"
          }
          test "after installing a snapshot a follower claims it only behind a barrier until a later write is durable" {
              let cfg = votersConfig [ n1; n2; n3 ]
              let s = Raft.init (Start.fresh n2 opts 1UL cfg) |> fst
              let offer = { Term = 1L; Leader = n1; Meta = { Index = 10L; Term = 1L; Configuration = cfg }; Staged = "x" }
              let receive m = Event.Receive { From = n1; To = n2; Message = m }
              let s, effects = Raft.step s (receive (Message.Snapshot offer))
              Expect.isTrue
                  (effects
                   |> List.exists (function
                       | Effect.Send { Message = Message.SnapshotReply r } -> r.MatchIndex = 10L
                       | _ -> false))
                  "the reply after InstallSnapshot claims it"
              let s, effects = Raft.step s (receive (Message.Snapshot { offer with Staged = "y" }))
              let install =
                  effects
                  |> indexOf (function
                      | Effect.InstallSnapshot("y", _) -> true
                      | _ -> false)
              let reply =
                  effects
                  |> indexOf (function
                      | Effect.Send { Message = Message.SnapshotReply r } -> r.MatchIndex = 10L
                      | _ -> false)
              Expect.isTrue (install >= 0 && install < reply) "a repeated offer is installed again, not acknowledged from memory"
              let heartbeat =
                  Message.Append
                      { Term = 1L; Leader = n1; PrevLogIndex = 10L; PrevLogTerm = 1L; Entries = []; LeaderCommit = 10L; Round = 2L }
              let s, effects = Raft.step s (receive heartbeat)
              let barrier =
                  effects
                  |> indexOf (function
                      | Effect.PersistHardState _ -> true
                      | _ -> false)
              let reply =
                  effects
                  |> indexOf (function
                      | Effect.Send { Message = Message.AppendReply r } -> r.Success && r.MatchIndex = 10L
                      | _ -> false)
              Expect.isTrue (barrier >= 0 && barrier < reply) "a heartbeat claims it only after a write that completes after the install"
              let append =
                  Message.Append
                      { Term = 1L
                        Leader = n1
                        PrevLogIndex = 10L
                        PrevLogTerm = 1L
                        Entries = [ { Index = 11L; Term = 1L; Payload = Payload.Noop } ]
                        LeaderCommit = 10L
                        Round = 3L }
              let s, effects = Raft.step s (receive append)
              Expect.isTrue
                  (effects
                   |> List.exists (function
                       | Effect.Send { Message = Message.AppendReply r } -> r.MatchIndex = 11L
                       | _ -> false))
                  "a write after it may be claimed in its own list"
              let _, effects = Raft.step s (Event.Persisted(11L, 1L))
              Expect.isEmpty (sends effects) "nothing more to acknowledge"
          }
          test "stale snapshot is answered without installing" {
              let c = RaftElectionTests.elected ()
              let term = Raft.term (c.State n2)
              let request =
                  { Term = term
                    Leader = n1
                    Meta = { Index = 1L; Term = term; Configuration = votersConfig [ n1; n2; n3 ] }
                    Staged = "x" }
              let _, effects = Raft.step (c.State n2) (Event.Receive { From = n1; To = n2; Message = Message.Snapshot request })
              Expect.isFalse
                  (effects
                   |> List.exists (function
                       | Effect.InstallSnapshot _ -> true
                       | _ -> false))
                  "nothing installed"
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
                  let granted =
                      effects
                      |> indexOf (function
                          | Effect.Send { Message = Message.VoteReply r } -> r.Granted && not r.PreVote
                          | _ -> false)
                  if granted >= 0 then
                      let persisted =
                          effects
                          |> indexOf (function
                              | Effect.PersistHardState h -> h.VotedFor.IsSome
                              | _ -> false)
                      if persisted < 0 || persisted > granted then
                          // Granting again to the same candidate in the same term needs no new write.
                          if Raft.votedFor s <> Raft.votedFor s2 || Raft.term s <> Raft.term s2 then
                              ok <- false
                  s <- s2)
              ok) ]

let restarts =
    testList
        "Raft.Restart"
        [ test "applying after restart loads entries outside the window" {
              let options = { opts with WindowSize = 4 }
              let entries = [ for i in 1L .. 10L -> { Index = i; Term = 1L; Payload = Payload.Command [| byte i |] } ]
              let start = startFrom n2 options 1UL { Term = 1L; VotedFor = None } None entries 0L (votersConfig [ n1; n2; n3 ])
              let s, _ = Raft.init start
              Expect.equal (Raft.lastIndex s) 10L "whole log known"
              let append =
                  Event.Receive
                      { From = n1
                        To = n2
                        Message =
                          Message.Append
                              { Term = 1L; Leader = n1; PrevLogIndex = 10L; PrevLogTerm = 1L; Entries = []; LeaderCommit = 10L; Round = 1L } }
              let s, effects = Raft.step s append
              let load =
                  effects
                  |> List.tryPick (function
                      | Effect.LoadEntries(LoadPurpose.Apply, a, b) -> Some(a, b)
                      | _ -> None)
              Expect.equal load (Some(1L, 6L)) "asks storage for what left the window"
              let s, effects = Raft.step s (Event.EntriesLoaded(LoadPurpose.Apply, entries |> List.take 6))
              let applied =
                  effects
                  |> List.collect (function
                      | Effect.Apply es -> es |> List.map (fun e -> e.Index)
                      | _ -> [])
              Expect.equal applied [ 1L .. 10L ] "then applies everything in order"
              Expect.equal (Raft.appliedIndex s) 10L "applied index advanced"
          }
          test "restart keeps term, vote and log" {
              let entries = [ { Index = 1L; Term = 3L; Payload = Payload.Noop } ]
              let start = startFrom n2 opts 1UL { Term = 4L; VotedFor = Some n3 } None entries 1L (votersConfig [ n1; n2; n3 ])
              let s, _ = Raft.init start
              Expect.equal (Raft.term s, Raft.votedFor s, Raft.lastIndex s, Raft.lastTerm s) (4L, Some n3, 1L, 3L) "as stored"
              let _, effects =
                  Raft.step
                      s
                      (Event.Receive
                          { From = n1
                            To = n2
                            Message =
                              Message.Vote
                                  { Term = 4L; Candidate = n1; LastLogIndex = 5L; LastLogTerm = 3L; PreVote = false; Transfer = false } })
              Expect.isTrue
                  (effects
                   |> List.exists (function
                       | Effect.Send { Message = Message.VoteReply r } -> not r.Granted
                       | _ -> false))
                  "no second vote in the term"
          }
          test "restart keeps the whole tail stored behind the snapshot (Start.ofStore uses the term before it)" {
              // Storage after a snapshot at 6 and a compaction up to 3 that kept a tail: entries 4..8, and the
              // entry at 3 (term 1) is gone. Nothing in the entries or the snapshot tells the term at 3.
              let config = votersConfig [ n1; n2; n3 ]
              let entries = [ for i in 4L .. 8L -> { Index = i; Term = (if i <= 4L then 1L else 2L); Payload = Payload.Noop } ]
              let stored: Stored =
                  { HardState = { Term = 2L; VotedFor = None }
                    Snapshot = Some { Index = 6L; Term = 2L; Configuration = config }
                    Entries = entries
                    BaseIndex = 3L
                    BaseTerm = 1L
                    Applied = 6L
                    CommitHint = 0L
                    Bootstrap = config }
              let s, _ = Raft.init (Start.ofStore n2 opts 1UL stored)
              // Without the base term, Raft.init must use entry 4 as the log's base and loses it.
              Expect.equal (Raft.firstIndex s, Raft.lastIndex s) (4L, 8L) "every stored entry is in the log"
          }
          test "a restarted node applies its stored entries up to the recorded commit index at once, no further" {
              let config = votersConfig [ n1; n2; n3 ]
              let entries = [ for i in 1L .. 5L -> { Index = i; Term = 1L; Payload = Payload.Noop } ]
              let restart hint =
                  Raft.init (
                      Start.ofStore
                          n2
                          opts
                          1UL
                          { HardState = { Term = 1L; VotedFor = None }
                            Snapshot = None
                            Entries = entries
                            BaseIndex = 0L
                            BaseTerm = 0L
                            Applied = 0L
                            CommitHint = hint
                            Bootstrap = config }
                  )
              let applied (effects: Effect list) =
                  effects
                  |> List.collect (function
                      | Effect.Apply es -> es |> List.map (fun e -> e.Index)
                      | _ -> [])
              let s, effects = restart 3L
              Expect.equal (applied effects) [ 1L; 2L; 3L ] "entries up to the hint are applied before any leader speaks"
              Expect.equal (Raft.commitIndex s) 3L "the hint is the commit index"
              let s, effects = restart 9L
              Expect.equal (applied effects) [ 1L .. 5L ] "a hint past the log is clamped to its last entry"
              Expect.equal (Raft.commitIndex s) 5L "clamped"
              let s, effects = restart 0L
              Expect.isEmpty (applied effects) "no hint: nothing applied until a leader says so"
              Expect.equal (Raft.commitIndex s) 0L "no hint"
          }
          test "absurd snapshot offers are ignored" {
              let s = Raft.init (Start.fresh n2 opts 1UL (votersConfig [ n1; n2; n3 ])) |> fst
              let offer index =
                  Event.Receive
                      { From = n1
                        To = n2
                        Message =
                          Message.Snapshot
                              { Term = 1L
                                Leader = n1
                                Meta = { Index = index; Term = 1L; Configuration = Configuration.Empty }
                                Staged = "x" } }
              let s, effects = Raft.step s (offer System.Int64.MaxValue)
              Expect.isFalse
                  (effects
                   |> List.exists (function
                       | Effect.InstallSnapshot _ -> true
                       | _ -> false))
                  "not installed"
              let s, _ =
                  Raft.step
                      s
                      (Event.Receive
                          { From = n1
                            To = n2
                            Message =
                              Message.Append
                                  { Term = 1L
                                    Leader = n1
                                    PrevLogIndex = 0L
                                    PrevLogTerm = 0L
                                    Entries = [ { Index = 1L; Term = 1L; Payload = Payload.Noop } ]
                                    LeaderCommit = 1L
                                    Round = 1L } })
              Expect.equal (Raft.lastIndex s) 1L "log still works"
          } ]
