module Skiff.PropertyTests.Main

open Expecto

/// Every test list of this program. Each area keeps its lines between its own markers so parallel work merges.
let private all: Test list =
    [
      // checker:begin
      LinearizabilityTests.tests
      // checker:end

      // reducer:begin
      RaftElectionTests.tests
      RaftReplicationTests.tests
      RaftMembershipTests.membership
      RaftMembershipTests.reads
      RaftMembershipTests.transfer
      RaftSnapshotTests.snapshots
      RaftSnapshotTests.totality
      RaftSnapshotTests.restarts
      RaftChaosTests.tests
      RaftHardeningTests.tests
      AllocationTests.tests
      // reducer:end

      // simulator:begin
      SessionTests.tests
      AuthModelTests.tests
      Simulation.tests
      // simulator:end

      // liveness:begin
      PartialLivenessTests.tests
      // liveness:end

      // membership-liveness:begin
      MembershipLivenessTests.tests
      // membership-liveness:end

      // address-update:begin
      AddressUpdateTests.tests
      // address-update:end

      // model-checking:begin
      ModelCheckingTests.tests
      // model-checking:end
      ]

[<EntryPoint>]
let main argv =
    match List.ofArray argv with
    // `dotnet fsi build.fsx soak [count]`: run simulation schedules instead of the tests.
    | "--soak" :: rest -> SimulationTools.soak (rest |> List.tryHead |> Option.map int)
    // `dotnet fsi build.fsx replay '<schedule>'` (or a soak's seed): run one schedule again with a trace.
    | [ "--replay"; target ] -> SimulationTools.replay target
    | _ -> Skiff.Tests.TestMain.run argv (testList "PropertyTests" all)
