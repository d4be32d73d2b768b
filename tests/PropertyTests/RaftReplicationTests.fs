/// Unit tests of replication: shipping on propose, pipelining, conflict backup, commit rules, apply.
module Skiff.PropertyTests.RaftReplicationTests

open Expecto
open Skiff.Core
open Skiff.PropertyTests.RaftHarness

let private n1, n2, n3 = nid 1, nid 2, nid 3

let private cmd (k: int) = Payload.Command [| byte k |]

let private appendsTo (peer: NodeId) (effects: seq<Effect>) =
    effects
    |> Seq.choose (function
        | Effect.Send { To = t; Message = Message.Append a } when t = peer -> Some a
        | _ -> None)
    |> List.ofSeq

let private entry i t = { Index = i; Term = t; Payload = cmd (int i) }

/// A three-node cluster whose nodes restart from the given stored logs and terms.
let private clusterWithLogs (options: Options) (logs: (NodeId * Term * Entry list) list) =
    let ids = logs |> List.map (fun (id, _, _) -> id)
    let cfg = votersConfig ids
    let c = Cluster([], options, cfg)
    for k, (id, term, entries) in List.indexed logs do
        let start = startFrom id options (uint64 (k + 11)) { Term = term; VotedFor = None } None entries 0L cfg
        c.Add start
        for e in entries do
            (c.Node id).Storage[ e.Index ] <- e
    c

let tests =
    testList
        "Raft.Replication"
        [ test "leader ships a proposal in the same step (no tick needed)" {
              let c = RaftElectionTests.elected ()
              let effects = c.Step(n1, Event.Propose(1L, [| 1uy |]))
              for peer in [ n2; n3 ] do
                  let carrying = appendsTo peer effects |> List.filter (fun a -> not a.Entries.IsEmpty)
                  Expect.equal carrying.Length 1 "one AppendEntries with the entry"
              let lastSend =
                  effects
                  |> List.findIndexBack (function
                      | Effect.Send _ -> true
                      | _ -> false)
              let persist =
                  effects
                  |> indexOf (function
                      | Effect.PersistEntries _ -> true
                      | _ -> false)
              Expect.isGreaterThan persist lastSend "the leader's own write comes after its sends (parallel write)"
              Expect.isTrue
                  (effects
                   |> List.exists (function
                       | Effect.Accepted(1L, 2L, _) -> true
                       | _ -> false))
                  "accepted at index 2"
          }
          test "follower persists before acknowledging" {
              let c = RaftElectionTests.elected ()
              c.Step(n1, Event.Propose(1L, [| 1uy |])) |> ignore
              c.Deliver()
              let effects = List.ofSeq (c.Node n2).Effects
              let persist =
                  effects
                  |> List.findIndexBack (function
                      | Effect.PersistEntries _ -> true
                      | _ -> false)
              let reply =
                  effects
                  |> List.findIndexBack (function
                      | Effect.Send { Message = Message.AppendReply _ } -> true
                      | _ -> false)
              Expect.isLessThan persist reply "PersistEntries precedes the reply"
          }
          test "proposal commits and is applied everywhere" {
              let c = RaftElectionTests.elected ()
              for k in 1..10 do
                  c.Step(n1, Event.Propose(int64 k, [| byte k |])) |> ignore
                  c.Deliver()
              c.Tick(n1, opts.HeartbeatTicks)
              for id in [ n1; n2; n3 ] do
                  Expect.equal (Raft.commitIndex (c.State id)) 11L "all committed"
                  Expect.equal ((c.Node id).Applied |> Seq.map (fun e -> e.Index) |> List.ofSeq) [ 1L .. 11L ] "all applied in order"
          }
          test "leader does not count itself before Persisted" {
              let c = Cluster([ n1 ], opts)
              c.Deliver()
              Expect.equal (Raft.commitIndex (c.State n1)) 1L "Noop committed once persisted"
              c.HoldPersist n1
              c.Step(n1, Event.Propose(1L, [| 1uy |])) |> ignore
              c.Deliver()
              Expect.equal (Raft.commitIndex (c.State n1)) 1L "not committed before the leader's own write"
              Expect.equal (c.Node n1).Applied.Count 1 "nothing more applied"
              c.Release n1
              c.Deliver()
              Expect.equal (Raft.commitIndex (c.State n1)) 2L "committed after Persisted"
              Expect.equal (c.Node n1).Applied.Count 2 "and applied"
          }
          test "follower applies only what it has persisted" {
              let c = RaftElectionTests.elected ()
              let appliedBefore = (c.Node n2).Applied.Count
              c.HoldPersist n2
              c.Step(n1, Event.Propose(1L, [| 1uy |])) |> ignore
              c.Deliver()
              c.Tick(n1, opts.HeartbeatTicks)
              Expect.equal (Raft.commitIndex (c.State n2)) 2L "n2 learnt the commit"
              Expect.equal (c.Node n2).Applied.Count appliedBefore "but applied nothing unpersisted"
              c.Release n2
              c.Deliver()
              Expect.equal (c.Node n2).Applied.Count 2 "applied after Persisted"
          }
          test "entry from previous term does not commit by counting replicas" {
              let options = { opts with MaxEntriesPerAppend = 1 }
              let c = clusterWithLogs options [ n1, 2L, [ entry 1L 1L; entry 2L 2L ]; n2, 1L, [ entry 1L 1L ]; n3, 1L, [ entry 1L 1L ] ]
              // n3 is away; n2 gets index 2 (term 2) but its acknowledgement of index 3 (the new Noop) is lost.
              c.Isolate n3
              c.DropWhere(fun env ->
                  match env.Message with
                  | Message.AppendReply r -> r.Success && r.MatchIndex >= 3L
                  | _ -> false)
              c.Elect n1
              c.Tick(n1, 3 * opts.HeartbeatTicks)
              Expect.equal (Raft.progress n2 (c.State n1) |> Option.map (fun p -> p.Match)) (Some 2L) "index 2 is on a majority"
              Expect.equal (Raft.commitIndex (c.State n1)) 0L "but it is from an earlier term: not committed"
              c.DropWhere(fun _ -> false)
              c.Tick(n1, 3 * opts.HeartbeatTicks)
              Expect.equal (Raft.commitIndex (c.State n1)) 3L "commits with the Noop of the current term"
          }
          test "conflict hint backs nextIndex up by term" {
              let c =
                  clusterWithLogs
                      opts
                      [ n1, 3L, [ entry 1L 1L; entry 2L 1L; entry 3L 3L ]
                        n2, 2L, [ entry 1L 1L; entry 2L 2L; entry 3L 2L; entry 4L 2L; entry 5L 2L ]
                        n3, 3L, [ entry 1L 1L; entry 2L 1L; entry 3L 3L ] ]
              c.Elect n1
              c.Tick(n1, opts.HeartbeatTicks)
              let rejections =
                  (c.Node n2).Effects
                  |> Seq.filter (function
                      | Effect.Send { Message = Message.AppendReply r } -> not r.Success
                      | _ -> false)
                  |> Seq.length
              Expect.isLessThanOrEqual rejections 2 "the whole conflicting term is skipped at once"
              let terms id = [ 1L .. Raft.lastIndex (c.State id) ] |> List.map (fun i -> Raft.termAt i (c.State id))
              Expect.equal (terms n2) (terms n1) "n2's log now equals the leader's"
          }
          test "follower answers a conflict with the first index of the conflicting term" {
              let start =
                  startFrom
                      n2
                      opts
                      5UL
                      { Term = 2L; VotedFor = None }
                      None
                      [ entry 1L 1L; entry 2L 2L; entry 3L 2L; entry 4L 2L ]
                      0L
                      (votersConfig [ n1; n2; n3 ])
              let s, _ = Raft.init start
              let append =
                  Event.Receive
                      { From = n1
                        To = n2
                        Message =
                          Message.Append
                              { Term = 3L; Leader = n1; PrevLogIndex = 4L; PrevLogTerm = 3L; Entries = []; LeaderCommit = 0L; Round = 1L } }
              let _, effects = Raft.step s append
              match sends effects with
              | [ { Message = Message.AppendReply r } ] ->
                  Expect.isFalse r.Success "rejected"
                  Expect.equal r.ConflictTerm (Some 2L) "conflicting term"
                  Expect.equal r.ConflictIndex 2L "its first index"
              | other -> failtestf "expected one reply, got %A" other
          }
          test "a follower does not answer an empty append that brings no new round and nothing new to claim" {
              let start =
                  startFrom n2 opts 5UL { Term = 1L; VotedFor = None } None [ entry 1L 1L; entry 2L 1L ] 0L (votersConfig [ n1; n2; n3 ])
              let s, _ = Raft.init start
              // An empty append at the follower's last entry, in term 1 (the round and commit index vary).
              let empty: AppendRequest =
                  { Term = 1L; Leader = n1; PrevLogIndex = 2L; PrevLogTerm = 1L; Entries = []; LeaderCommit = 0L; Round = 0L }
              let append round commit =
                  Event.Receive { From = n1; To = n2; Message = Message.Append { empty with LeaderCommit = commit; Round = round } }
              let replies effects = sends effects |> List.filter (fun e -> e.Message.IsAppendReply)
              let s, first = Raft.step s (append 1L 1L)
              Expect.equal (replies first).Length 1 "the first append of a round is answered"
              let s, notice = Raft.step s (append 1L 2L)
              Expect.isEmpty (replies notice) "a commit notice of the same round, nothing new to claim: no answer"
              Expect.equal (Raft.commitIndex s) 2L "the notice still moved the commit index"
              let _, probe = Raft.step s (append 1L 2L)
              Expect.equal (replies probe).Length 1 "an empty append of the same round with no newer commit (a probe) is answered"
              let _, heartbeat = Raft.step s (append 2L 2L)
              Expect.equal (replies heartbeat).Length 1 "a new round (a heartbeat) is always answered"
          }
          test "in-flight window caps outstanding appends" {
              let options = { opts with MaxInflight = 2; MaxEntriesPerAppend = 1 }
              let c = Cluster([ n1; n2; n3 ], options)
              c.Elect n1
              c.Tick(n1, options.HeartbeatTicks)
              c.DropWhere(fun env -> env.To = n2 || env.From = n2)
              let before = (c.Node n1).Effects.Count
              for k in 1..6 do
                  c.Step(n1, Event.Propose(int64 k, [| byte k |])) |> ignore
                  c.Deliver()
              let sent = appendsTo n2 (Seq.skip before (c.Node n1).Effects) |> List.filter (fun a -> not a.Entries.IsEmpty)
              Expect.equal sent.Length 2 "at most MaxInflight appends outstanding"
              let toN3 = appendsTo n3 (Seq.skip before (c.Node n1).Effects) |> List.filter (fun a -> not a.Entries.IsEmpty)
              Expect.isGreaterThanOrEqual toN3.Length 6 "a responsive follower keeps getting entries"
          }
          test "a partitioned follower catches up after healing" {
              let c = RaftElectionTests.elected ()
              c.Isolate n3
              for k in 1..20 do
                  c.Step(n1, Event.Propose(int64 k, [| byte k |])) |> ignore
                  c.Deliver()
              c.Heal n3
              for _ in 1..10 do
                  c.TickAll()
              Expect.equal (Raft.lastIndex (c.State n3)) (Raft.lastIndex (c.State n1)) "caught up"
              Expect.equal (c.Node n3).Applied.Count (c.Node n1).Applied.Count "and applied the same"
          }
          test "entries outside the in-memory window are loaded from storage" {
              let options = { opts with WindowSize = 4 }
              let c = Cluster([ n1; n2; n3 ], options)
              c.Elect n1
              c.Isolate n3
              for k in 1..20 do
                  c.Step(n1, Event.Propose(int64 k, [| byte k |])) |> ignore
                  c.Deliver()
              c.Heal n3
              for _ in 1..20 do
                  c.TickAll()
              let loads =
                  (c.Node n1).Effects
                  |> Seq.filter (function
                      | Effect.LoadEntries(LoadPurpose.Replicate _, _, _) -> true
                      | _ -> false)
                  |> Seq.length
              Expect.isGreaterThan loads 0 "the leader asked storage for old entries"
              Expect.equal (Raft.lastIndex (c.State n3)) (Raft.lastIndex (c.State n1)) "n3 caught up"
              Expect.equal ((c.Node n3).Applied |> Seq.map (fun e -> e.Index) |> List.ofSeq) [ 1L .. 21L ] "and applied everything in order"
          }
          test "follower does not acknowledge entries still being written by an earlier step" {
              let s = Raft.init (Start.fresh n2 opts 1UL (votersConfig [ n1; n2; n3 ])) |> fst
              let append (leader: NodeId) term prev prevTerm entries =
                  Event.Receive
                      { From = leader
                        To = n2
                        Message =
                          Message.Append
                              { Term = term
                                Leader = leader
                                PrevLogIndex = prev
                                PrevLogTerm = prevTerm
                                Entries = entries
                                LeaderCommit = 0L
                                Round = 1L } }
              let matches effects =
                  effects
                  |> List.choose (function
                      | Effect.Send { Message = Message.AppendReply r } when r.Success -> Some r.MatchIndex
                      | _ -> None)
              let s, first = Raft.step s (append n1 1L 0L 0L [ entry 1L 1L ])
              Expect.equal (matches first) [ 1L ] "claims the entry it writes in the same step"
              // A new leader probes before the write is durable: the entry must not be claimed yet.
              let s, probe = Raft.step s (append n3 2L 1L 1L [])
              Expect.equal (matches probe) [ 0L ] "nothing claimed beyond what is durable"
              let s, persisted = Raft.step s (Event.Persisted(1L, 1L))
              Expect.equal (sends persisted |> List.map (fun e -> e.To)) [ n3 ] "acknowledged to the new leader once Persisted"
              Expect.equal (matches persisted) [ 1L ] "with the durable match"
              let _, again = Raft.step s (Event.Persisted(1L, 1L))
              Expect.isEmpty (matches again) "no duplicate acknowledgement"
          } ]
