/// Membership liveness (issue 15, the 30-minute fault run of seed 899178): learners promoted under load, members
/// that come back at their address with a new id.
module Skiff.PropertyTests.MembershipLivenessTests

open Expecto
open Skiff.Core
open Skiff.PropertyTests.RaftHarness

let private n1, n2, n3, n4 = nid 1, nid 2, nid 3, nid 4

let private isVoter (c: Cluster) (leader: NodeId) (id: NodeId) =
    (Raft.configuration (c.State leader)).Members |> Map.tryFind id |> Option.map (fun m -> m.Voter) = Some true

/// A steady write load where every follower's acknowledgement reaches the leader only after the next batch of
/// `batch` proposals (the answers of one iteration are held back and delivered in the next). Voters and learner are
/// treated alike, so the learner is exactly as current as the majority that commits.
let private underLoad (c: Cluster) (batch: int) (iterations: int) (onIteration: int -> unit) =
    let held = System.Collections.Generic.List<Envelope>()
    c.DropWhere(fun env ->
        match env.Message with
        | Message.AppendReply _ when env.To = n1 ->
            held.Add env
            true
        | _ -> false)
    let mutable req = 1000L
    for k in 1..iterations do
        for _ in 1..batch do
            req <- req + 1L
            c.Step(n1, Event.Propose(req, [| byte (req % 251L) |])) |> ignore
        c.Step(n1, Event.Tick) |> ignore
        // The answers to the previous batch arrive now, after this one was proposed.
        let late = List.ofSeq held
        held.Clear()
        for env in late do
            c.Step(n1, Event.Receive env) |> ignore
        c.Deliver()
        onIteration k
    c.DropWhere(fun _ -> false)

let tests =
    testList
        "membership liveness"
        [ test "a learner as current as the majority is promoted under a steady write load" {
              // Before: promotion required Match >= LastIndex - PromotionLag (64). The leader's last index includes what
              // it proposed an instant ago; under a load where an acknowledgement takes longer than 64 proposals, no
              // follower is ever that close, voters included, and the learner stayed a learner for as long as the load
              // lasted (in the fault run: rejoined members "not promoted to voter within 15 s").
              let c = Cluster([ n1; n2; n3 ], opts)
              c.Elect n1
              c.Add(Start.fresh n4 opts 99UL Configuration.Empty)
              let mutable promotedAt = None
              underLoad c 100 60 (fun k ->
                  if k = 5 then
                      c.Step(n1, Event.ChangeConfig(10L, ConfigChange.AddServer(n4, "n4"))) |> ignore
                  if promotedAt.IsNone && isVoter c n1 n4 then
                      promotedAt <- Some k)
              let s = c.State n1
              let pr = Raft.progress n4 s |> Option.map (fun p -> p.Match, p.Mode, p.AckRound)
              Expect.equal (Raft.role s) Role.Leader "n1 still leads"
              Expect.isTrue ((Raft.configuration s).Members.ContainsKey n4) "n4 was added"
              Expect.isSome
                  promotedAt
                  (sprintf
                      "n4 promoted while the load lasts (commit %d, last index %d, n4 at %A)"
                      (Raft.commitIndex s)
                      (Raft.lastIndex s)
                      pr)
          }

          test "a new id at a member's address replaces that member in one change, then is promoted" {
              // Issue 13 point 5, and the wiped members of the fault run: a member restarted with an empty data
              // directory comes back at its address with a new id. Before, it became a second member at that address
              // beside its old id, a voter that never answers again.
              let c = Cluster([ n1; n2; n3 ], opts)
              c.Elect n1
              c.Step(n1, Event.Propose(1L, [| 1uy |])) |> ignore
              c.Deliver()
              c.Isolate n3 // n3 lost its data: its old incarnation is gone for good
              c.Add(Start.fresh n4 opts 99UL Configuration.Empty)
              let before = (c.Node n1).Effects.Count
              c.Step(n1, Event.ChangeConfig(20L, ConfigChange.AddServer(n4, string n3))) |> ignore
              let proposed =
                  (c.Node n1).Effects
                  |> Seq.skip before
                  |> Seq.choose (function
                      | Effect.ConfigurationChanged cfg -> Some cfg
                      | _ -> None)
                  |> List.ofSeq
              Expect.equal proposed.Length 1 "one configuration change"
              let cfg = proposed.Head
              Expect.isFalse (cfg.Members.ContainsKey n3) "the old id is gone"
              Expect.equal
                  (cfg.Members |> Map.tryFind n4 |> Option.map (fun m -> m.Address, m.Voter))
                  (Some(string n3, false))
                  "the new id, a learner at the address"
              Expect.equal (cfg.Members |> Map.filter (fun _ m -> m.Voter) |> Map.count) 2 "one voter fewer, no other change"
              for _ in 1..10 do
                  c.Tick(n1, opts.HeartbeatTicks)
              Expect.isTrue
                  ((c.Node n1).Effects
                   |> Seq.exists (function
                       | Effect.Completed 20L -> true
                       | _ -> false))
                  "the change completed"
              let members = (Raft.configuration (c.State n1)).Members
              Expect.equal
                  (members |> Map.toList |> List.map (fun (_, m) -> m.Address) |> List.distinct |> List.length)
                  members.Count
                  "never two members at one address"
              Expect.isTrue (isVoter c n1 n4) "the new id promoted once caught up"
              Expect.equal (Raft.configuration (c.State n4)) (Raft.configuration (c.State n1)) "the newcomer agrees"
          }
          test "a new id at the leader's own address is refused (only one process serves an address)" {
              let c = Cluster([ n1 ], opts)
              c.Elect n1
              c.Deliver()
              let e = c.Step(n1, Event.ChangeConfig(21L, ConfigChange.AddServer(n4, string n1)))
              Expect.isTrue
                  (e
                   |> List.exists (function
                       | Effect.Reject(21L, Rejection.Invalid _) -> true
                       | _ -> false))
                  "the leader's own address"
          } ]
