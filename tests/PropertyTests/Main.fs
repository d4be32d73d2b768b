module Skiff.PropertyTests.Main

open Expecto

/// Every test list of this program. Each area keeps its lines between its own markers so parallel work merges.
let private all: Test list =
    [
      // checker:begin
      LinearizabilityTests.tests
      // checker:end

      // reducer:begin
      // reducer:end

      // simulator:begin
      // simulator:end
    ]

[<EntryPoint>]
let main argv =
    Skiff.Tests.TestMain.run argv (testList "PropertyTests" all)
