/// Unit tests of membership changes, ReadIndex reads and leadership transfer.
module Skiff.PropertyTests.RaftMembershipTests

open Expecto
open Skiff.Core
open Skiff.PropertyTests.RaftHarness

let private n1, n2, n3, n4 = nid 1, nid 2, nid 3, nid 4

let private has (f: Effect -> bool) (effects: seq<Effect>) = effects |> Seq.exists f

let private completed id =
    function
    | Effect.Completed i -> i = id
    | _ -> false
let private rejected id (r: Rejection) =
    function
    | Effect.Reject(i, x) -> i = id && x = r
    | _ -> false

let private readReady id =
    function
    | Effect.ReadReady(ids, _) -> List.contains id ids
    | _ -> false

let membership =
    testList
        "Raft.Membership"
        [ test "learner promoted after catching up" {
              let c = Cluster([ n1 ], opts)
              c.Deliver()
              for k in 1..5 do
                  c.Step(n1, Event.Propose(int64 k, [| byte k |])) |> ignore
                  c.Deliver()
              c.Add(Start.fresh n2 opts 99UL Configuration.Empty)
              let effects = c.Step(n1, Event.ChangeConfig(10L, ConfigChange.AddServer(n2, "n2")))
              let member2 () = (Raft.configuration (c.State n1)).Members |> Map.tryFind n2
              Expect.equal (member2 () |> Option.map (fun m -> m.Voter)) (Some false) "added as a learner at once"
              Expect.isTrue
                  (effects
                   |> has (function
                       | Effect.ConfigurationChanged _ -> true
                       | _ -> false))
                  "observers told"
              c.Deliver()
              c.Tick(n1, 2 * opts.HeartbeatTicks)
              Expect.isTrue ((c.Node n1).Effects |> has (completed 10L)) "AddServer completed once committed"
              Expect.equal (member2 () |> Option.map (fun m -> m.Voter)) (Some true) "promoted to voter by the leader"
              Expect.equal (Raft.configuration (c.State n2)) (Raft.configuration (c.State n1)) "the joiner has the same configuration"
              Expect.equal (c.Node n2).Applied.Count (c.Node n1).Applied.Count "the joiner applied everything"
          }
          test "second config change rejected while first in flight" {
              let c = RaftElectionTests.elected ()
              c.DropWhere(fun env ->
                  match env.Message with
                  | Message.AppendReply _ -> true
                  | _ -> false)
              c.Step(n1, Event.ChangeConfig(1L, ConfigChange.AddServer(n4, "n4"))) |> ignore
              let effects = c.Step(n1, Event.ChangeConfig(2L, ConfigChange.RemoveServer n3))
              Expect.isTrue (effects |> has (rejected 2L Rejection.ConfigChangeInProgress)) "second change refused"
          }
          test "AddServer of an existing member is idempotent" {
              let c = RaftElectionTests.elected ()
              let effects = c.Step(n1, Event.ChangeConfig(3L, ConfigChange.AddServer(n2, string n2)))
              Expect.isTrue (effects |> has (completed 3L)) "completed at once"
              let effects = c.Step(n1, Event.ChangeConfig(4L, ConfigChange.AddServer(n2, "elsewhere")))
              Expect.isTrue
                  (effects
                   |> has (function
                       | Effect.Reject(4L, Rejection.Invalid _) -> true
                       | _ -> false))
                  "another address is invalid"
          }
          test "change on a follower is refused with a leader hint" {
              let c = RaftElectionTests.elected ()
              let effects = c.Step(n2, Event.ChangeConfig(5L, ConfigChange.RemoveServer n3))
              Expect.isTrue (effects |> has (rejected 5L (Rejection.NotLeader(Some n1)))) "NotLeader with hint"
          }
          test "removed leader steps down after its removal commits and never campaigns" {
              let c = RaftElectionTests.elected ()
              c.Step(n1, Event.ChangeConfig(6L, ConfigChange.RemoveServer n1)) |> ignore
              c.Deliver()
              Expect.isTrue ((c.Node n1).Effects |> has (completed 6L)) "removal completed"
              Expect.notEqual (Raft.role (c.State n1)) Role.Leader "stepped down"
              for _ in 1..100 do
                  c.TickAll()
              let leaders = [ n2; n3 ] |> List.filter (fun id -> Raft.role (c.State id) = Role.Leader)
              Expect.equal leaders.Length 1 "the remaining voters elected a leader"
              Expect.equal (Raft.role (c.State n1)) Role.Follower "the removed node stays a follower"
              Expect.isFalse ((Raft.configuration (c.State leaders.Head)).Members.ContainsKey n1) "n1 is gone"
          }
          test "a node whose uncommitted configuration removes it still campaigns" {
              // Otherwise a cluster stalls when the only up-to-date log holds its own pending removal.
              let both = votersConfig [ n1; n2 ]
              let entries = [ { Index = 1L; Term = 1L; Payload = Payload.Config(votersConfig [ n2 ]) } ]
              let mutable s = Raft.init (startFrom n1 opts 1UL { Term = 1L; VotedFor = None } None entries 0L both) |> fst
              Expect.isFalse ((Raft.configuration s).Members.ContainsKey n1) "removed in its newest configuration"
              for _ in 1 .. opts.ElectionTicksMax do
                  s <- fst (Raft.step s Event.Tick)
              Expect.equal (Raft.role s) Role.PreCandidate "but campaigns under its committed one"
          }
          test "a learner never campaigns" {
              let cfg = { Members = (votersConfig [ n1; n2 ]).Members |> Map.add n4 { Id = n4; Address = "n4"; Voter = false } }
              let mutable s = Raft.init (Start.fresh n4 opts 3UL cfg) |> fst
              for _ in 1..200 do
                  let s2, effects = Raft.step s Event.Tick
                  Expect.isEmpty (sends effects) "no vote requests"
                  s <- s2
          }
          test "TimeoutNow from a node that is not our leader is ignored" {
              let c = RaftElectionTests.elected ()
              let term = Raft.term (c.State n2)
              let s, effects = Raft.step (c.State n2) (Event.Receive { From = n3; To = n2; Message = Message.TimeoutNow term })
              Expect.isEmpty (sends effects) "no campaign"
              Expect.equal (Raft.term s) term "term unchanged"
          }
          test "joining node with an empty configuration never campaigns" {
              let mutable s = Raft.init (Start.fresh n4 opts 3UL Configuration.Empty) |> fst
              for _ in 1..200 do
                  let s2, effects = Raft.step s Event.Tick
                  Expect.isEmpty (sends effects) "no vote requests"
                  s <- s2
              Expect.equal (Raft.role s) Role.Follower "still a follower"
          }
          test "config entry takes effect when appended and reverts when truncated" {
              let cfg = votersConfig [ n1; n2; n3 ]
              let s = Raft.init (Start.fresh n2 opts 3UL cfg) |> fst
              let withN4 = { Members = Map.add n4 { Id = n4; Address = "n4"; Voter = false } cfg.Members }
              let append term prev prevTerm entries =
                  Event.Receive
                      { From = n1
                        To = n2
                        Message =
                          Message.Append
                              { Term = term
                                Leader = n1
                                PrevLogIndex = prev
                                PrevLogTerm = prevTerm
                                Entries = entries
                                LeaderCommit = 0L
                                Round = 1L } }
              let s, _ = Raft.step s (append 1L 0L 0L [ { Index = 1L; Term = 1L; Payload = Payload.Config withN4 } ])
              Expect.equal (Raft.configuration s) withN4 "in force as soon as it is in the log"
              let s, effects = Raft.step s (append 2L 0L 0L [ { Index = 1L; Term = 2L; Payload = Payload.Noop } ])
              Expect.equal (Raft.configuration s) cfg "reverted after truncation"
              Expect.isTrue
                  (effects
                   |> has (function
                       | Effect.ConfigurationChanged c -> c = cfg
                       | _ -> false))
                  "observers told"
          } ]

let reads =
    testList
        "Raft.Reads"
        [ test "read is answered after a heartbeat quorum" {
              let c = RaftElectionTests.elected ()
              let effects = c.Step(n1, Event.Read 1L)
              Expect.isFalse (effects |> has (readReady 1L)) "not answered before confirmation"
              Expect.isTrue
                  (sends effects
                   |> List.exists (fun e ->
                       match e.Message with
                       | Message.Append _ -> true
                       | _ -> false))
                  "round sent at once"
              c.Deliver()
              Expect.isTrue
                  ((c.Node n1).Effects
                   |> has (function
                       | Effect.ReadReady([ 1L ], 1L) -> true
                       | _ -> false))
                  "ready at the commit index"
          }
          test "read waits for heartbeat quorum" {
              let c = RaftElectionTests.elected ()
              c.DropWhere(fun env -> env.From <> n1)
              c.Step(n1, Event.Read 1L) |> ignore
              c.Deliver()
              c.Tick(n1, 3)
              Expect.isFalse ((c.Node n1).Effects |> has (readReady 1L)) "no quorum, no answer"
              c.DropWhere(fun _ -> false)
              c.Tick(n1, opts.HeartbeatTicks)
              Expect.isTrue ((c.Node n1).Effects |> has (readReady 1L)) "answered once a majority echoed a later round"
          }
          test "reads are batched while a round is outstanding" {
              let c = RaftElectionTests.elected ()
              c.Step(n1, Event.Read 1L) |> ignore
              let effects = c.Step(n1, Event.Read 2L)
              Expect.isEmpty (sends effects) "second read waits for the next round"
              c.Deliver()
              Expect.isTrue ((c.Node n1).Effects |> has (readReady 2L)) "and is answered after it"
          }
          test "read before first commit in term waits" {
              let c = Cluster([ n1; n2; n3 ], opts)
              c.DropWhere(fun env ->
                  match env.Message with
                  | Message.AppendReply _ -> true
                  | _ -> false)
              c.Elect n1
              c.Step(n1, Event.Read 1L) |> ignore
              c.Tick(n1, 2 * opts.HeartbeatTicks)
              Expect.isFalse ((c.Node n1).Effects |> has (readReady 1L)) "nothing of this term is committed yet"
              c.DropWhere(fun _ -> false)
              c.Tick(n1, 2 * opts.HeartbeatTicks)
              Expect.isTrue
                  ((c.Node n1).Effects
                   |> has (function
                       | Effect.ReadReady([ 1L ], i) -> i >= 1L
                       | _ -> false))
                  "answered after the Noop commits"
          }
          test "read on a follower is refused with a leader hint" {
              let c = RaftElectionTests.elected ()
              let effects = c.Step(n2, Event.Read 7L)
              Expect.isTrue (effects |> has (rejected 7L (Rejection.NotLeader(Some n1)))) "NotLeader"
          }
          test "pending reads are rejected with LeadershipLost on step-down" {
              let c = RaftElectionTests.elected ()
              c.Isolate n1
              c.Step(n1, Event.Read 8L) |> ignore
              c.Tick(n1, 2 * opts.ElectionTicksMin + 1)
              Expect.isTrue ((c.Node n1).Effects |> has (rejected 8L Rejection.LeadershipLost)) "rejected"
          }
          test "single voter answers reads at once" {
              let c = Cluster([ n1 ], opts)
              c.Deliver()
              let effects = c.Step(n1, Event.Read 9L)
              Expect.isTrue (effects |> has (readReady 9L)) "no round needed"
          } ]

let transfer =
    testList
        "Raft.Transfer"
        [ test "transfer sends TimeoutNow when target caught up" {
              let c = RaftElectionTests.elected ()
              let effects = c.Step(n1, Event.TransferLeadership(1L, n2))
              Expect.isTrue
                  (sends effects |> List.exists (fun e -> e.To = n2 && e.Message = Message.TimeoutNow(Raft.term (c.State n1))))
                  "TimeoutNow sent"
              c.Deliver()
              Expect.equal (Raft.role (c.State n2)) Role.Leader "target leads"
              Expect.isTrue ((c.Node n1).Effects |> has (completed 1L)) "transfer completed"
          }
          test "transfer catches the target up first" {
              let c = RaftElectionTests.elected ()
              c.Isolate n2
              for k in 1..5 do
                  c.Step(n1, Event.Propose(int64 k, [| byte k |])) |> ignore
                  c.Deliver()
              c.Heal n2
              let effects = c.Step(n1, Event.TransferLeadership(2L, n2))
              Expect.isFalse
                  (sends effects
                   |> List.exists (fun e ->
                       match e.Message with
                       | Message.TimeoutNow _ -> true
                       | _ -> false))
                  "not yet"
              c.Deliver()
              c.Tick(n1, opts.HeartbeatTicks)
              Expect.equal (Raft.role (c.State n2)) Role.Leader "target leads after catching up"
              Expect.equal (Raft.lastIndex (c.State n2)) 7L "with every entry (Noop, 5 commands, its own Noop)"
          }
          test "proposals refused during a transfer, accepted again after it times out" {
              let c = RaftElectionTests.elected ()
              // The target never catches up, so TimeoutNow is never sent (with it, the outcome would be unknown).
              c.Isolate n2
              c.Step(n1, Event.Propose(1L, [| 1uy |])) |> ignore
              c.Deliver()
              c.Step(n1, Event.TransferLeadership(3L, n2)) |> ignore
              let effects = c.Step(n1, Event.Propose(4L, [| 1uy |]))
              Expect.isTrue (effects |> has (rejected 4L Rejection.TransferInProgress)) "refused"
              c.Tick(n1, opts.ElectionTicksMax)
              Expect.isTrue
                  ((c.Node n1).Effects
                   |> has (function
                       | Effect.Reject(3L, Rejection.TransferTimedOut) -> true
                       | _ -> false))
                  "transfer abandoned as timed out"
              let effects = c.Step(n1, Event.Propose(5L, [| 1uy |]))
              Expect.isTrue
                  (effects
                   |> has (function
                       | Effect.Accepted(5L, _, _) -> true
                       | _ -> false))
                  "accepted again"
          } ]
