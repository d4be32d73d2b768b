module Skiff.PropertyTests.Main

open Expecto

/// Every test list of this program. Each area keeps its lines between its own markers so parallel work merges.
let private all: Test list =
    [
      // checker:begin
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
      // reducer:end

      // simulator:begin
      // simulator:end
    ]

[<EntryPoint>]
let main argv =
    Skiff.Tests.TestMain.run argv (testList "PropertyTests" all)
