/// Unit tests of elections: votes, pre-votes, leader stickiness, CheckQuorum, term rules.
module Skiff.PropertyTests.RaftElectionTests

open Expecto
open Skiff.Core
open Skiff.PropertyTests.RaftHarness

let private n1, n2, n3 = nid 1, nid 2, nid 3
let private cfg = votersConfig [ n1; n2; n3 ]

let private fresh (id: NodeId) = Raft.init (Start.fresh id opts 42UL cfg) |> fst

let private vote (from: NodeId) (toNode: NodeId) term lastIndex lastTerm preVote transfer =
    Event.Receive
        { From = from
          To = toNode
          Message =
            Message.Vote
                { Term = term
                  Candidate = from
                  LastLogIndex = lastIndex
                  LastLogTerm = lastTerm
                  PreVote = preVote
                  Transfer = transfer } }

let private voteReplies (effects: Effect list) =
    effects
    |> List.choose (function
        | Effect.Send { Message = Message.VoteReply r } -> Some r
        | _ -> None)

/// Elects n1 in a fresh three-node cluster.
let elected () =
    let c = Cluster([ n1; n2; n3 ], opts)
    c.Elect n1
    c

let tests =
    testList
        "Raft.Election"
        [ test "follower grants one vote per term" {
              let s = fresh n2
              let s, e1 = Raft.step s (vote n1 n2 1L 0L 0L false false)
              let _, e2 = Raft.step s (vote n3 n2 1L 0L 0L false false)
              Expect.equal (voteReplies e1 |> List.map (fun r -> r.Granted)) [ true ] "first candidate gets the vote"
              Expect.equal (voteReplies e2 |> List.map (fun r -> r.Granted)) [ false ] "second candidate is refused"
          }
          test "vote persisted before reply (PersistHardState precedes Send in the effect list)" {
              let _, effects = Raft.step (fresh n2) (vote n1 n2 1L 0L 0L false false)
              let persist =
                  effects
                  |> indexOf (function
                      | Effect.PersistHardState h -> h.VotedFor = Some n1 && h.Term = 1L
                      | _ -> false)
              let reply =
                  effects
                  |> indexOf (function
                      | Effect.Send _ -> true
                      | _ -> false)
              Expect.isGreaterThanOrEqual persist 0 "vote is persisted"
              Expect.isLessThan persist reply "persisted before the reply"
          }
          test "a repeated vote grant persists again before replying" {
              let s, _ = Raft.step (fresh n2) (vote n1 n2 1L 0L 0L false false)
              let _, effects = Raft.step s (vote n1 n2 1L 0L 0L false false)
              let persist =
                  effects
                  |> indexOf (function
                      | Effect.PersistHardState h -> h.VotedFor = Some n1
                      | _ -> false)
              let reply =
                  effects
                  |> indexOf (function
                      | Effect.Send { Message = Message.VoteReply r } -> r.Granted
                      | _ -> false)
              Expect.isGreaterThanOrEqual persist 0 "the vote is written again"
              Expect.isLessThan persist reply "before the reply (the first write may not be durable yet)"
          }
          test "a candidate outside the voter's configuration, not ahead of its log, gets no vote" {
              let stranger = nid 9
              for preVote in [ false; true ] do
                  let s, effects = Raft.step (fresh n2) (vote stranger n2 5L 0L 0L preVote false)
                  Expect.equal (voteReplies effects |> List.map (fun r -> r.Granted)) [ false ] "refused"
                  // A voter that knows no leader follows a real campaign's term (finding 10), not a pre-vote's.
                  Expect.equal (Raft.term s) (if preVote then 0L else 5L) "term"
                  Expect.isNone (Raft.votedFor s) "no vote recorded"
          }
          test "a follower that knows its leader keeps its term for a candidate outside its configuration" {
              let c = elected ()
              let before = Raft.term (c.State n2)
              let effects = c.Step(n2, vote (nid 9) n2 (before + 5L) 0L 0L false false)
              Expect.equal (voteReplies effects |> List.map (fun r -> r.Granted)) [ false ] "refused"
              Expect.equal (Raft.term (c.State n2)) before "term unchanged: a removed node unseats no leader"
          }
          test "a candidate outside the voter's configuration but ahead of its log may be voted for" {
              // Its log may hold the configuration that added it, which this voter has not received yet.
              let _, effects = Raft.step (fresh n2) (vote (nid 9) n2 5L 10L 3L false false)
              Expect.equal (voteReplies effects |> List.map (fun r -> r.Granted)) [ true ] "granted by the usual rules"
          }
          test "pre-vote does not raise the term" {
              let s, effects = Raft.step (fresh n2) (vote n1 n2 1L 0L 0L true false)
              Expect.equal (Raft.term s) 0L "term unchanged"
              Expect.equal (Raft.votedFor s) None "no vote recorded"
              Expect.isFalse
                  (effects
                   |> List.exists (function
                       | Effect.PersistHardState _ -> true
                       | _ -> false))
                  "nothing to persist"
              Expect.equal (voteReplies effects |> List.map (fun r -> r.Granted, r.PreVote)) [ true, true ] "pre-vote granted"
          }
          test "pre-candidate keeps its term until it wins the pre-vote" {
              let mutable s = fresh n1
              for _ in 1 .. opts.ElectionTicksMax do
                  s <- fst (Raft.step s Event.Tick)
              Expect.equal (Raft.role s) Role.PreCandidate "asks for pre-votes first"
              Expect.equal (Raft.term s) 0L "term not raised"
          }
          test "three nodes elect a leader with a Noop of its term" {
              let c = elected ()
              let s = c.State n1
              Expect.equal (Raft.role s) Role.Leader "n1 leads"
              Expect.equal (Raft.leader (c.State n2)) (Some n1) "n2 knows the leader"
              Expect.equal (Raft.commitIndex s) 1L "the Noop committed"
              Expect.equal (Raft.termAt 1L (c.State n3)) (Some(Raft.term s)) "followers hold the Noop"
          }
          test "single voter elects itself at once" {
              let s, _ = Raft.init (Start.fresh n1 opts 1UL (votersConfig [ n1 ]))
              Expect.equal (Raft.role s) Role.Leader "sole voter leads"
          }
          test "node that heard from leader recently rejects pre-vote" {
              let c = elected ()
              let term = Raft.term (c.State n1)
              let last = Raft.lastIndex (c.State n2)
              let _, effects = Raft.step (c.State n2) (vote n3 n2 (term + 1L) last term true false)
              Expect.equal (voteReplies effects |> List.map (fun r -> r.Granted)) [ false ] "refused: leader is alive"
              let s, effects = Raft.step (c.State n2) (vote n3 n2 (term + 1L) last term false true)
              Expect.equal (voteReplies effects |> List.map (fun r -> r.Granted)) [ true ] "a transfer vote is granted"
              Expect.equal (Raft.term s) (term + 1L) "and moves to the new term"
          }
          test "vote refused to a candidate with a less up-to-date log" {
              let c = elected ()
              let term = Raft.term (c.State n1)
              c.Isolate n1
              // n2 forgets the leader after an election timeout; n3 asks with a shorter log.
              let mutable s = c.State n2
              for _ in 1 .. opts.ElectionTicksMin do
                  s <- fst (Raft.step s Event.Tick)
              let _, effects = Raft.step s (vote n3 n2 (term + 1L) 0L 0L false false)
              Expect.equal (voteReplies effects |> List.map (fun r -> r.Granted)) [ false ] "log check fails"
          }
          test "stale-term messages are ignored and answered with the current term" {
              let s, _ = Raft.step (fresh n2) (vote n1 n2 5L 0L 0L false false)
              let append =
                  Event.Receive
                      { From = n3
                        To = n2
                        Message =
                          Message.Append
                              { Term = 2L
                                Leader = n3
                                PrevLogIndex = 0L
                                PrevLogTerm = 0L
                                Entries = [ { Index = 1L; Term = 2L; Payload = Payload.Noop } ]
                                LeaderCommit = 1L
                                Round = 1L } }
              let s2, effects = Raft.step s append
              Expect.equal (Raft.term s2) 5L "term kept"
              Expect.equal (Raft.lastIndex s2) 0L "entries ignored"
              Expect.equal (Raft.leader s2) None "stale leader not followed"
              match sends effects with
              | [ { Message = Message.AppendReply r } ] ->
                  Expect.equal r.Term 5L "answered with the current term"
                  Expect.isFalse r.Success "refused"
              | other -> failtestf "expected one AppendReply, got %A" other
          }
          test "check-quorum steps down an isolated leader" {
              let c = elected ()
              c.Isolate n1
              c.Tick(n1, 2 * opts.ElectionTicksMin + 1)
              Expect.equal (Raft.role (c.State n1)) Role.Follower "isolated leader stepped down"
          }
          test "a partitioned node cannot disrupt a healthy cluster when it returns" {
              let c = elected ()
              let term = Raft.term (c.State n1)
              c.Isolate n3
              for _ in 1..100 do
                  c.TickAll()
              Expect.equal (Raft.term (c.State n3)) term "pre-vote kept its term from growing"
              c.Heal n3
              for _ in 1..50 do
                  c.TickAll()
              Expect.equal (Raft.role (c.State n1)) Role.Leader "leader unchanged"
              Expect.equal (Raft.term (c.State n1)) term "term unchanged"
          }
          test "higher-term vote reply makes a candidate step down" {
              let mutable s = fresh n1
              for _ in 1 .. opts.ElectionTicksMax do
                  s <- fst (Raft.step s Event.Tick)
              let reply =
                  Event.Receive { From = n2; To = n1; Message = Message.VoteReply { Term = 7L; Granted = false; PreVote = false } }
              let s, _ = Raft.step s reply
              Expect.equal (Raft.role s) Role.Follower "stepped down"
              Expect.equal (Raft.term s) 7L "adopted the term"
          }
          test "a new leader is elected after the leader is cut off" {
              let c = elected ()
              c.Isolate n1
              for _ in 1..100 do
                  c.TickAll()
              let leaders = [ n2; n3 ] |> List.filter (fun id -> Raft.role (c.State id) = Role.Leader)
              Expect.equal leaders.Length 1 "one of the others leads"
          } ]
