/// ConfigChange.UpdateServer (`skiff member update`): a member keeps its id and vote and gets a new address. Unit
/// tests of its refusals, a model test of every membership change against a map of id to address, and the
/// simulator's safety properties with address updates among the faults.
module Skiff.PropertyTests.AddressUpdateTests

open System
open System.Diagnostics
open Expecto
open FsCheck
open FsCheck.FSharp
open Skiff.Core
open Skiff.Simulation
open Skiff.PropertyTests.RaftHarness

let private n1, n2, n3, n4 = nid 1, nid 2, nid 3, nid 4

let private answer (rid: RequestId) (effects: seq<Effect>) : Result<unit, Rejection> option =
    effects
    |> Seq.tryPick (function
        | Effect.Completed i when i = rid -> Some(Ok())
        | Effect.Reject(i, r) when i = rid -> Some(Error r)
        | _ -> None)

let private addresses (c: Cluster) (id: NodeId) : Map<NodeId, string> =
    (Raft.configuration (c.State id)).Members |> Map.map (fun _ m -> m.Address)

/// Asks n1 (the leader) for a change and lets it commit; returns the leader's answer.
let private change (c: Cluster) (rid: RequestId) (ch: ConfigChange) : Result<unit, Rejection> option =
    c.Step(n1, Event.ChangeConfig(rid, ch)) |> ignore
    c.Deliver()
    c.Tick(n1, 2 * opts.HeartbeatTicks)
    answer rid (c.Node n1).Effects

let private isInvalid =
    function
    | Some(Error(Rejection.Invalid _)) -> true
    | _ -> false

let private unitTests =
    [ test "an update commits, changes only the address and keeps the vote" {
          let c = RaftElectionTests.elected ()
          Expect.equal (change c 1L (ConfigChange.UpdateServer(n2, "node-2.example:9500"))) (Some(Ok())) "completed"
          for id in [ n1; n2; n3 ] do
              let m = (Raft.configuration (c.State id)).Members[n2]
              Expect.equal m.Address "node-2.example:9500" (sprintf "%A has the new address" id)
              Expect.isTrue m.Voter "still a voter"
          Expect.equal (Raft.configuration (c.State n1)).Voters (set [ n1; n2; n3 ]) "the voters are the same"
      }
      test "an update of an unknown id is refused as invalid" {
          let c = RaftElectionTests.elected ()
          Expect.isTrue (isInvalid (change c 2L (ConfigChange.UpdateServer(n4, "n4:1")))) "not a member"
          Expect.isFalse ((Raft.configuration (c.State n1)).Members.ContainsKey n4) "nobody added"
      }
      test "an update to another member's address is refused as invalid" {
          let c = RaftElectionTests.elected ()
          Expect.isTrue (isInvalid (change c 3L (ConfigChange.UpdateServer(n2, string n3)))) "address taken"
          Expect.equal (Map.find n2 (addresses c n1)) (string n2) "unchanged"
      }
      test "an update to the member's own address is done at once" {
          let c = RaftElectionTests.elected ()
          let before = Raft.lastIndex (c.State n1)
          Expect.equal (change c 4L (ConfigChange.UpdateServer(n2, string n2))) (Some(Ok())) "completed"
          Expect.equal (Raft.lastIndex (c.State n1)) before "no entry appended"
      }
      test "an update waits its turn behind another change in flight" {
          let c = RaftElectionTests.elected ()
          c.DropWhere(fun env ->
              match env.Message with
              | Message.AppendReply _ -> true
              | _ -> false)
          c.Step(n1, Event.ChangeConfig(5L, ConfigChange.RemoveServer n3)) |> ignore
          let effects = c.Step(n1, Event.ChangeConfig(6L, ConfigChange.UpdateServer(n2, "n2:2")))
          Expect.equal (answer 6L effects) (Some(Error Rejection.ConfigChangeInProgress)) "second change refused"
      }
      test "a follower refuses an update with a leader hint" {
          let c = RaftElectionTests.elected ()
          let effects = c.Step(n2, Event.ChangeConfig(7L, ConfigChange.UpdateServer(n3, "n3:2")))
          Expect.equal (answer 7L effects) (Some(Error(Rejection.NotLeader(Some n1)))) "NotLeader with hint"
      }
      test "the leader may change its own address and goes on leading" {
          let c = RaftElectionTests.elected ()
          Expect.equal (change c 8L (ConfigChange.UpdateServer(n1, "n1:2"))) (Some(Ok())) "completed"
          Expect.equal (Raft.role (c.State n1)) Role.Leader "still the leader"
          Expect.equal (Map.find n1 (addresses c n3)) "n1:2" "followers know the new address"
      } ]

/// One operator request of the model test.
type private Op =
    | Add of int * string
    | Remove of int
    | Update of int * string

/// The model: what the configuration (id to address) becomes, or None when the change is refused as invalid.
let private expect (model: Map<NodeId, string>) (op: Op) : Map<NodeId, string> option =
    let holder address = model |> Map.tryFindKey (fun _ a -> a = address)
    match op with
    | Add(k, address) ->
        let id = nid k
        match Map.tryFind id model, holder address with
        | Some a, _ when a = address -> Some model
        | Some _, _ -> None
        | None, Some old when old = n1 -> None
        | None, Some old -> Some(model |> Map.remove old |> Map.add id address)
        | None, None -> Some(Map.add id address model)
    | Remove k -> if model.ContainsKey(nid k) then Some(Map.remove (nid k) model) else None
    | Update(k, address) ->
        let id = nid k
        match Map.tryFind id model, holder address with
        | None, _ -> None
        | Some _, Some other when other <> id -> None
        | Some _, _ -> Some(Map.add id address model)

let private genOps: Gen<Op list> =
    let pool = [ string n1; string n2; string n3; "a:1"; "b:1"; "c:1" ]
    let address = Gen.elements pool
    Gen.frequency
        [ 2, Gen.zip (Gen.choose (4, 6)) address |> Gen.map Add
          1, Gen.choose (2, 6) |> Gen.map Remove
          4, Gen.zip (Gen.choose (1, 6)) address |> Gen.map Update ]
    |> Gen.listOf
    |> Gen.map (List.truncate 12)

/// Runs the operations on an elected 3-node cluster; the first disagreement with the model, if any.
let private disagreement (ops: Op list) : string option =
    let c = RaftElectionTests.elected ()
    let mutable model = addresses c n1
    ops
    |> List.indexed
    |> List.tryPick (fun (i, op) ->
        let rid = int64 (100 + i)
        let ch =
            match op with
            | Add(k, a) -> ConfigChange.AddServer(nid k, a)
            | Remove k -> ConfigChange.RemoveServer(nid k)
            | Update(k, a) -> ConfigChange.UpdateServer(nid k, a)
        let got = change c rid ch
        let expected = expect model op
        let members = addresses c n1
        let distinct = (members |> Map.values |> Seq.distinct |> Seq.length) = members.Count
        match expected, got with
        | _ when not distinct -> Some(sprintf "after %A two members share an address: %A" op members)
        | Some next, Some(Ok()) when members = next ->
            model <- next
            // Every member still running agrees once the change has committed.
            [ n2; n3 ]
            |> List.filter members.ContainsKey
            |> List.tryPick (fun id ->
                if addresses c id = members then
                    None
                else
                    Some(sprintf "after %A %A has %A, the leader %A" op id (addresses c id) members))
        | None, Some(Error(Rejection.Invalid _)) when members = model -> None
        | _ -> Some(sprintf "after %A: expected %A, got %A with configuration %A" op expected got members))

/// Checks `property` on `count` cases from SKIFF_SEED (or a fresh seed), naming the seed on failure.
let private checkSeeded (what: string) (count: int) (property: Property) =
    let seed = Simulation.fsCheckSeed ()
    try
        Check.One(Simulation.seededConfig count seed, property)
    with e ->
        failtestf "%s failed (SKIFF_SEED=%d): %s" what seed e.Message
    seed

let private modelTest =
    testCase "membership changes with updates match the model of id to address"
    <| fun () ->
        Prop.forAll (Arb.fromGen genOps) (fun ops -> disagreement ops |> Option.iter failwith)
        |> checkSeeded "the model test" 300
        |> ignore

let private simulationTest =
    testCase "random schedules with address updates keep every safety property"
    <| fun () ->
        let watch = Stopwatch.StartNew()
        let mutable updates = 0
        let seed =
            Prop.forAll (Schedules.arbitraryWithUpdates Simulation.maxSteps) (fun schedule ->
                let result = Simulator.run Simulation.reducer Simulation.settings schedule
                updates <- updates + result.Stats.AddressUpdates
                result.Violation |> Option.iter (fun _ -> failwith (Simulation.report result)))
            |> checkSeeded "schedules with address updates" 200
        printfn "200 schedules with address updates in %.1f s (SKIFF_SEED=%d): %d updates completed" watch.Elapsed.TotalSeconds seed updates
        // Not vacuous: the schedules really updated addresses.
        Expect.isGreaterThan updates 10 "address updates completed across the schedules"

let tests = testList "Raft.AddressUpdate" (unitTests @ [ modelTest; simulationTest ])
