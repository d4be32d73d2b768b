/// Unit tests of issue 14's reducer items (liveness under partial failure, bounded memory, the open review
/// findings). Each test failed on the reducer before its fix (the commit that fixed it says so).
module Skiff.PropertyTests.RaftHardeningTests

open Expecto
open Skiff.Core
open Skiff.PropertyTests.RaftHarness

let private n1, n2, n3, n4 = nid 1, nid 2, nid 3, nid 4

let private appendsTo (peer: NodeId) (effects: seq<Effect>) =
    effects
    |> Seq.choose (function
        | Effect.Send { To = t; Message = Message.Append a } when t = peer -> Some a
        | _ -> None)
    |> List.ofSeq

let private appendReplies (effects: seq<Effect>) =
    effects
    |> Seq.choose (function
        | Effect.Send { Message = Message.AppendReply r } -> Some r
        | _ -> None)
    |> List.ofSeq

let private rejections (effects: seq<Effect>) =
    effects
    |> Seq.choose (function
        | Effect.Reject(id, r) -> Some(id, r)
        | _ -> None)
    |> List.ofSeq

let private isCase (name: string) (r: Rejection) = sprintf "%A" r = name

let private propose (c: Cluster) (leader: NodeId) (id: int64) (bytes: byte[]) =
    let effects = c.Step(leader, Event.Propose(id, bytes))
    c.Deliver()
    effects

/// The voter that leads in the highest term, among `ids`.
let private leaderAmong (c: Cluster) (ids: NodeId list) =
    ids
    |> List.filter (fun id -> Raft.role (c.State id) = Role.Leader)
    |> List.sortByDescending (fun id -> Raft.term (c.State id))
    |> List.tryHead

let tests =
    testList
        "Raft.Hardening"
        [ // 1. Without CheckQuorum a leader is never deposed by silence, so a follower's lease would protect a leader
          //    that cannot commit: the lease is honoured only with CheckQuorum (as etcd).
          test "without CheckQuorum a follower's lease does not protect a leader that cannot commit" {
              let o = { opts with PreVote = false; CheckQuorum = false }
              let c = Cluster([ n1; n2; n3 ], o)
              c.Elect n1
              propose c n1 1L [| 1uy |] |> ignore
              // n2 hears n1 but n1 never hears n2; n1 and n3 are cut both ways. n2 and n3 talk both ways.
              c.DropWhere(fun env -> (env.From = n2 && env.To = n1) || (env.From = n1 && env.To = n3) || (env.From = n3 && env.To = n1))
              propose c n1 2L [| 2uy |] |> ignore
              propose c n1 3L [| 3uy |] |> ignore
              for _ in 1..150 do
                  c.TickAll()
              match leaderAmong c [ n2; n3 ] with
              | None -> failtestf "no leader among n2, n3 (n2 %A, n3 %A)" (Raft.role (c.State n2)) (Raft.role (c.State n3))
              | Some leader ->
                  let effects = propose c leader 9L [| 9uy |]
                  let index =
                      effects
                      |> List.pick (function
                          | Effect.Accepted(9L, i, _) -> Some i
                          | _ -> None)
                  c.Tick(leader, o.HeartbeatTicks)
                  Expect.isGreaterThanOrEqual (Raft.commitIndex (c.State leader)) index "a write commits in the majority"
          }
          test "with CheckQuorum a follower still refuses to unseat a leader it heard from recently" {
              let c = RaftElectionTests.elected ()
              let term = Raft.term (c.State n2)
              let request =
                  { Term = term + 1L; Candidate = n3; LastLogIndex = 100L; LastLogTerm = term; PreVote = false; Transfer = false }
              let s, effects = Raft.step (c.State n2) (Event.Receive { From = n3; To = n2; Message = Message.Vote request })
              Expect.equal (Raft.term s) term "term kept"
              Expect.isTrue
                  (effects
                   |> List.exists (function
                       | Effect.Send { Message = Message.VoteReply r } -> not r.Granted
                       | _ -> false))
                  "refused"
          }

          // 2. A learner that caught up and then went silent must not be promoted.
          test "a caught-up learner that has gone silent is not promoted, and is once it answers again" {
              let c = Cluster([ n1; n2; n3 ], opts)
              c.Elect n1
              propose c n1 1L [| 1uy |] |> ignore
              c.Add(Start.fresh n4 opts 99UL Configuration.Empty)
              // The AddServer entry cannot commit while n2 and n3 are away, which holds promotion back.
              c.Isolate n2
              c.Isolate n3
              c.Step(n1, Event.ChangeConfig(10L, ConfigChange.AddServer(n4, "n4"))) |> ignore
              c.Deliver()
              Expect.equal
                  (Raft.progress n4 (c.State n1) |> Option.map (fun p -> p.Match))
                  (Some(Raft.lastIndex (c.State n1)))
                  "the learner caught up"
              // Now the learner crashes (silent) and the voters come back: the change commits.
              c.Isolate n4
              c.Heal n2
              c.Heal n3
              c.Tick(n1, 5 * opts.HeartbeatTicks)
              let voter () = (Raft.configuration (c.State n1)).Members |> Map.tryFind n4 |> Option.map (fun m -> m.Voter)
              Expect.isGreaterThanOrEqual (Raft.commitIndex (c.State n1)) 3L "the AddServer entry (index 3) committed"
              Expect.equal (voter ()) (Some false) "a silent learner stays a learner"
              c.Heal n4
              c.Tick(n1, 5 * opts.HeartbeatTicks)
              Expect.equal (voter ()) (Some true) "promoted once it answers again"
          }

          // 3. Entries read back from storage are cut by bytes, not only by count.
          test "entries loaded from storage for a follower are sent in appends within MaxBytesPerAppend" {
              let o = { opts with MaxBytesPerAppend = 100; WindowSize = 2; MaxEntriesPerAppend = 64 }
              let c = Cluster([ n1; n2; n3 ], o)
              c.Elect n1
              c.Isolate n3
              for k in 1..10 do
                  propose c n1 (int64 k) (Array.create 60 (byte k)) |> ignore
              c.Heal n3
              for _ in 1..20 do
                  c.TickAll()
              Expect.equal (Raft.lastIndex (c.State n3)) (Raft.lastIndex (c.State n1)) "n3 caught up"
              Expect.isTrue
                  ((c.Node n1).Effects
                   |> Seq.exists (function
                       | Effect.LoadEntries(LoadPurpose.Replicate p, _, _) -> p = n3
                       | _ -> false))
                  "through storage"
              for a in appendsTo n3 (c.Node n1).Effects do
                  if a.Entries.Length > 1 then
                      let bytes = a.Entries |> List.sumBy LogView.entrySize
                      Expect.isLessThanOrEqual
                          bytes
                          o.MaxBytesPerAppend
                          (sprintf "append of %d entries after %d" a.Entries.Length a.PrevLogIndex)
          }

          // 4. A pre-vote grant counts only for the campaign at this node's term + 1.
          test "a pre-vote grant from an older campaign is not counted" {
              let cfg = votersConfig [ n1; n2; n3 ]
              let s = Raft.init (Start.fresh n1 opts 5UL cfg) |> fst
              let heartbeat =
                  Message.Append
                      { Term = 1L; Leader = n2; PrevLogIndex = 0L; PrevLogTerm = 0L; Entries = []; LeaderCommit = 0L; Round = 1L }
              let s0, _ = Raft.step s (Event.Receive { From = n2; To = n1; Message = heartbeat })
              let mutable s = s0
              Expect.equal (Raft.term s) 1L "follows n2 in term 1"
              let mutable k = 0
              while Raft.role s <> Role.PreCandidate && k < 100 do
                  s <- fst (Raft.step s Event.Tick)
                  k <- k + 1
              Expect.equal (Raft.role s) Role.PreCandidate "campaigns for term 2"
              let grant term =
                  Event.Receive { From = n2; To = n1; Message = Message.VoteReply { Term = term; Granted = true; PreVote = true } }
              let stale, _ = Raft.step s (grant 1L)
              Expect.equal (Raft.role stale) Role.PreCandidate "a grant for term 1 (an older campaign) is not counted"
              let fresh, _ = Raft.step s (grant 2L)
              Expect.equal (Raft.role fresh) Role.Candidate "a grant for term 2 is"
          }

          // 5. A follower receiving a snapshot gets heartbeats (for reads and CheckQuorum), but their answers do not
          //    end Snapshot mode while the follower is still behind the compaction point.
          test "a heartbeat answered during a snapshot does not send a second snapshot" {
              let o = { opts with SnapshotThreshold = 5L; CompactionTail = 0L }
              let c = Cluster([ n1; n2; n3 ], o)
              c.Elect n1
              for k in 1..2 do
                  propose c n1 (int64 k) [| byte k |] |> ignore
              c.Tick(n1, o.HeartbeatTicks)
              Expect.equal (Raft.commitIndex (c.State n3)) 3L "n3 holds and knows 3 committed"
              c.Isolate n3
              for k in 3..14 do
                  propose c n1 (int64 k) [| byte k |] |> ignore
              // A new leader (fresh progress, Match 0) that has compacted past n3's log.
              c.Step(n1, Event.TransferLeadership(100L, n2)) |> ignore
              c.Deliver()
              Expect.equal (Raft.role (c.State n2)) Role.Leader "n2 leads"
              Expect.isGreaterThan (Raft.firstIndex (c.State n2)) 4L "n2 compacted past n3's log"
              // The snapshot never arrives (still streaming); heartbeats do.
              c.DropWhere(fun env ->
                  env.To = n3
                  && (match env.Message with
                      | Message.Snapshot _ -> true
                      | _ -> false))
              c.Heal n3
              c.Tick(n2, 4 * o.HeartbeatTicks)
              let offers =
                  (c.Node n2).Effects
                  |> Seq.filter (function
                      | Effect.SendSnapshot(t, _, _) -> t = n3
                      | _ -> false)
                  |> Seq.length
              Expect.equal offers 1 "one snapshot offer, until it times out"
              Expect.equal
                  (Raft.progress n3 (c.State n2) |> Option.map (fun p -> p.Mode))
                  (Some ProgressMode.Snapshot)
                  "still waiting for it"
          }

          // 6. A transfer whose TimeoutNow went out is not reported as "timed out, the leader is unchanged".
          test "a transfer that sent TimeoutNow and still leads an election timeout later reports an unknown outcome" {
              let c = RaftElectionTests.elected ()
              c.DropWhere(fun env ->
                  match env.Message with
                  | Message.TimeoutNow _ -> true
                  | _ -> false)
              c.Step(n1, Event.TransferLeadership(3L, n2)) |> ignore
              c.Tick(n1, opts.ElectionTicksMax)
              let answers = rejections (c.Node n1).Effects |> List.filter (fun (id, _) -> id = 3L)
              Expect.equal
                  (answers |> List.map (snd >> sprintf "%A"))
                  [ "TransferOutcomeUnknown" ]
                  "TimeoutNow was sent: leadership may still move"
              let effects = c.Step(n1, Event.Propose(5L, [| 1uy |]))
              Expect.isTrue
                  (effects
                   |> List.exists (function
                       | Effect.Accepted(5L, _, _) -> true
                       | _ -> false))
                  "proposals accepted again"
          }
          test "a transfer whose target never caught up times out as TransferTimedOut" {
              let c = RaftElectionTests.elected ()
              c.Isolate n2
              propose c n1 1L [| 1uy |] |> ignore
              c.Step(n1, Event.TransferLeadership(3L, n2)) |> ignore
              c.Tick(n1, opts.ElectionTicksMax)
              Expect.isFalse
                  ((c.Node n1).Effects
                   |> Seq.exists (function
                       | Effect.Send { Message = Message.TimeoutNow _ } -> true
                       | _ -> false))
                  "no TimeoutNow"
              let answers = rejections (c.Node n1).Effects |> List.filter (fun (id, _) -> id = 3L)
              Expect.equal answers [ 3L, Rejection.TransferTimedOut ] "timed out: leadership does not move"
          }
          test "a transfer completes when the target wins after TimeoutNow" {
              let c = RaftElectionTests.elected ()
              c.Step(n1, Event.TransferLeadership(4L, n2)) |> ignore
              c.Deliver()
              Expect.isTrue
                  ((c.Node n1).Effects
                   |> Seq.exists (function
                       | Effect.Completed 4L -> true
                       | _ -> false))
                  "completed"
          }

          // 7. After installing a snapshot an idle follower answers heartbeats with its real match index, behind a
          //    barrier write so that the claim cannot overtake the install.
          test "an idle follower that installed a snapshot answers heartbeats with the snapshot index" {
              let cfg = votersConfig [ n1; n2; n3 ]
              let s = Raft.init (Start.fresh n2 opts 1UL cfg) |> fst
              let offer = { Term = 1L; Leader = n1; Meta = { Index = 10L; Term = 1L; Configuration = cfg }; Staged = "x" }
              let receive m = Event.Receive { From = n1; To = n2; Message = m }
              let s, _ = Raft.step s (receive (Message.Snapshot offer))
              let heartbeat =
                  Message.Append
                      { Term = 1L; Leader = n1; PrevLogIndex = 10L; PrevLogTerm = 1L; Entries = []; LeaderCommit = 10L; Round = 2L }
              let _, effects = Raft.step s (receive heartbeat)
              let reply =
                  effects
                  |> indexOf (function
                      | Effect.Send { Message = Message.AppendReply r } -> r.Success && r.MatchIndex = 10L
                      | _ -> false)
              let barrier =
                  effects
                  |> indexOf (function
                      | Effect.PersistHardState _ -> true
                      | _ -> false)
              Expect.isGreaterThanOrEqual reply 0 "claims the snapshot index"
              Expect.isTrue (barrier >= 0 && barrier < reply) "after a write that completes only after the install"
          }
          test "a follower whose snapshot install is known durable claims it without a barrier" {
              let c = Cluster([ n1; n2; n3 ], { opts with SnapshotThreshold = 5L; CompactionTail = 0L })
              c.Elect n1
              c.Isolate n3
              for k in 1..12 do
                  propose c n1 (int64 k) [| byte k |] |> ignore
              c.Heal n3
              for _ in 1..10 do
                  c.TickAll()
              Expect.equal (Raft.lastIndex (c.State n3)) (Raft.lastIndex (c.State n1)) "caught up after the snapshot"
              let effects =
                  c.Step(
                      n3,
                      Event.Receive
                          { From = n1
                            To = n3
                            Message =
                              Message.Append
                                  { Term = Raft.term (c.State n1)
                                    Leader = n1
                                    PrevLogIndex = Raft.lastIndex (c.State n1)
                                    PrevLogTerm = Raft.term (c.State n1)
                                    Entries = []
                                    LeaderCommit = Raft.commitIndex (c.State n1)
                                    Round = 99L } }
                  )
              Expect.isFalse
                  (effects
                   |> List.exists (function
                       | Effect.PersistHardState _ -> true
                       | _ -> false))
                  "no barrier"
              Expect.equal (appendReplies effects |> List.map (fun r -> r.MatchIndex)) [ Raft.lastIndex (c.State n1) ] "claims its log"
          }

          // 8. A rejection that does not answer the leader's current probe is stale (duplicated or reordered).
          test "a duplicated rejection does not restart probing" {
              let c = RaftElectionTests.elected ()
              propose c n1 1L [| 1uy |] |> ignore
              c.Isolate n2
              for k in 2..4 do
                  propose c n1 (int64 k) [| byte k |] |> ignore
              let term = Raft.term (c.State n1)
              let rejection =
                  Event.Receive
                      { From = n2
                        To = n1
                        Message =
                          Message.AppendReply
                              { Term = term; Success = false; MatchIndex = 4L; ConflictIndex = 3L; ConflictTerm = None; Round = 0L } }
              let first = c.Step(n1, rejection)
              Expect.equal (Raft.progress n2 (c.State n1) |> Option.map (fun p -> p.Mode)) (Some ProgressMode.Probe) "probing"
              Expect.isNonEmpty (appendsTo n2 first) "the rejection of an outstanding append starts a probe"
              let again = c.Step(n1, rejection)
              Expect.isEmpty (appendsTo n2 again) "its duplicate does not answer the probe: ignored"
              let probe = (appendsTo n2 first).Head
              let answer =
                  Event.Receive
                      { From = n2
                        To = n1
                        Message =
                          Message.AppendReply
                              { Term = term
                                Success = false
                                MatchIndex = probe.PrevLogIndex
                                ConflictIndex = 2L
                                ConflictTerm = None
                                Round = 0L } }
              Expect.isNonEmpty (appendsTo n2 (c.Step(n1, answer))) "a rejection of the probe itself is acted on"
          }
          test "a follower's rejection names the rejected request's PrevLogIndex" {
              let c = RaftElectionTests.elected ()
              let term = Raft.term (c.State n2)
              let append =
                  Message.Append
                      { Term = term; Leader = n1; PrevLogIndex = 7L; PrevLogTerm = term; Entries = []; LeaderCommit = 1L; Round = 5L }
              let effects = c.Step(n2, Event.Receive { From = n1; To = n2; Message = append })
              Expect.equal (appendReplies effects |> List.map (fun r -> r.Success, r.MatchIndex)) [ false, 7L ] "rejected, naming 7"
          }

          // 9. Finding 5: stale-log campaigns must not hold back the up-to-date nodes' own campaigns.
          test "a vote refused to a stale candidate moves the term but keeps the election timer" {
              let cfg = votersConfig [ n1; n2; n3 ]
              let s =
                  Raft.init (
                      startFrom n2 opts 3UL { Term = 1L; VotedFor = None } None [ { Index = 1L; Term = 1L; Payload = Payload.Noop } ] 0L cfg
                  )
                  |> fst
              let s = fst (Raft.step (fst (Raft.step s Event.Tick)) Event.Tick)
              let elapsed, timeout = s.ElectionElapsed, s.ElectionTimeout
              let request = { Term = 2L; Candidate = n3; LastLogIndex = 0L; LastLogTerm = 0L; PreVote = false; Transfer = false }
              let s2, effects = Raft.step s (Event.Receive { From = n3; To = n2; Message = Message.Vote request })
              Expect.equal (Raft.term s2) 2L "follows the term"
              Expect.isTrue
                  (effects
                   |> List.exists (function
                       | Effect.Send { Message = Message.VoteReply r } -> not r.Granted
                       | _ -> false))
                  "refused: its log is behind"
              Expect.equal (s2.ElectionElapsed, s2.ElectionTimeout) (elapsed, timeout) "the timer runs on"
          }
          test "a candidate that refused a more up-to-date candidate only for its own vote backs off" {
              let cfg = votersConfig [ n1; n2; n3 ]
              let s =
                  Raft.init (
                      startFrom n2 opts 3UL { Term = 1L; VotedFor = None } None [ { Index = 1L; Term = 1L; Payload = Payload.Noop } ] 0L cfg
                  )
                  |> fst
              let mutable s = { s with Standing = { s.Standing with Options = { s.Options with PreVote = false } } }
              let mutable k = 0
              while Raft.role s <> Role.Candidate && k < 100 do
                  s <- fst (Raft.step s Event.Tick)
                  k <- k + 1
              Expect.equal (Raft.role s) Role.Candidate "campaigns"
              let request = { Term = Raft.term s; Candidate = n3; LastLogIndex = 5L; LastLogTerm = 1L; PreVote = false; Transfer = false }
              let s2, effects = Raft.step s (Event.Receive { From = n3; To = n2; Message = Message.Vote request })
              Expect.isTrue
                  (effects
                   |> List.exists (function
                       | Effect.Send { Message = Message.VoteReply r } -> not r.Granted
                       | _ -> false))
                  "its vote is taken"
              Expect.equal (Raft.role s2) Role.Follower "stops campaigning"
              Expect.equal (Raft.votedFor s2) (Some n2) "the vote stays cast"
              Expect.isGreaterThan s2.ElectionTimeout opts.ElectionTicksMax "and waits longer than any timeout"
          }

          // 10. Bounded memory.
          test "a leader that cannot commit refuses proposals past MaxUncommittedBytes" {
              let c = RaftElectionTests.elected ()
              c.Isolate n2
              c.Isolate n3
              let mib = Array.zeroCreate<byte>(1024 * 1024)
              let mutable refused = None
              let mutable accepted = 0
              let mutable k = 0
              while refused.IsNone && k < 100 do
                  k <- k + 1
                  let effects = c.Step(n1, Event.Propose(int64 k, mib))
                  if
                      effects
                      |> List.exists (function
                          | Effect.Accepted _ -> true
                          | _ -> false)
                  then
                      accepted <- accepted + 1
                  refused <- rejections effects |> List.tryHead |> Option.map snd
              Expect.equal (refused |> Option.map (sprintf "%A")) (Some "Overloaded") "refused as overloaded"
              Expect.isLessThanOrEqual
                  (int64 accepted * int64 (LogView.entrySize { Index = 0L; Term = 0L; Payload = Payload.Command mib }))
                  Options.defaults.MaxUncommittedBytes
                  "within the cap"
              c.Heal n2
              c.Heal n3
              c.Tick(n1, 5 * opts.HeartbeatTicks)
              Expect.equal (Raft.commitIndex (c.State n1)) (Raft.lastIndex (c.State n1)) "everything committed"
              let effects = c.Step(n1, Event.Propose(1000L, mib))
              Expect.isTrue
                  (effects
                   |> List.exists (function
                       | Effect.Accepted _ -> true
                       | _ -> false))
                  "accepted again once committed"
          }
          test "a leader that cannot confirm its rounds refuses reads past MaxWaitingRequests" {
              let c = RaftElectionTests.elected ()
              c.Isolate n2
              c.Isolate n3
              let limit = Options.defaults.MaxWaitingRequests
              let mutable refused = []
              for k in 1 .. limit + 10 do
                  refused <- refused @ (c.Step(n1, Event.Read(int64 k)) |> rejections)
              Expect.isNonEmpty refused "some reads refused"
              Expect.isTrue (refused |> List.forall (snd >> isCase "Overloaded")) "as overloaded"
              Expect.isLessThanOrEqual refused.Length 11 "only those past the limit"
          }
          test "a leader with a change pending refuses repeated AddServer requests past MaxWaitingRequests" {
              let c = RaftElectionTests.elected ()
              c.Isolate n2
              c.Isolate n3
              c.Step(n1, Event.ChangeConfig(1L, ConfigChange.AddServer(n4, "n4"))) |> ignore
              let limit = Options.defaults.MaxWaitingRequests
              let mutable refused = []
              for k in 2 .. limit + 11 do
                  refused <- refused @ (c.Step(n1, Event.ChangeConfig(int64 k, ConfigChange.AddServer(n4, "n4"))) |> rejections)
              Expect.isNonEmpty refused "some refused"
              Expect.isTrue (refused |> List.forall (snd >> isCase "Overloaded")) "as overloaded"
          }
          test "the in-memory window is bounded in bytes" {
              let c = Cluster([ n1 ], opts)
              c.Deliver()
              let mib = Array.zeroCreate<byte>(1024 * 1024)
              for k in 1..100 do
                  propose c n1 (int64 k) mib |> ignore
              let log = (c.State n1).Log
              let held = log.LastIndex - log.WindowStart + 1L
              Expect.isLessThanOrEqual held 64L "at most 64 entries of 1 MiB in a 64 MiB window"
              Expect.isGreaterThan held 0L "the newest entries are kept"
          }
          test "entries every member has, applied and durable, leave the window; a lagging peer's stay" {
              let c = RaftElectionTests.elected ()
              let held (id: NodeId) =
                  let log = (c.State id).Log
                  log.LastIndex - log.WindowStart + 1L
              for k in 1..300 do
                  propose c n1 (int64 k) [| byte k |] |> ignore
                  c.Deliver()
              for id in [ n1; n2; n3 ] do
                  Expect.isGreaterThanOrEqual (Raft.lastIndex (c.State id)) 300L "everything replicated"
                  Expect.isGreaterThanOrEqual (Raft.appliedIndex (c.State id)) 300L "and applied"
                  // Left in the window, the entries of a busy node would live for thousands of writes (the
                  // window's size) and burden the collector; released, at most a chunk of them remains.
                  Expect.isLessThanOrEqual (held id) 64L $"{id} keeps no more than a chunk of entries"
              c.Isolate n3
              let before = Raft.lastIndex (c.State n1)
              for k in 301..500 do
                  propose c n1 (int64 k) [| byte k |] |> ignore
                  c.Deliver()
              Expect.isGreaterThanOrEqual (held n1) (Raft.lastIndex (c.State n1) - before) "the leader keeps what n3 lacks"
              Expect.isLessThanOrEqual (held n2) 64L "a follower keeps only a chunk"
          } ]
