module Skiff.Integration.Main

open Expecto

/// Every test list of this program. Each area keeps its lines between its own markers so parallel work merges.
let private all: Test list =
    [
      // storage:begin
      // storage:end

      // runtime:begin
      Skiff.Integration.RuntimeTests.tests
      // runtime:end

      // facade:begin
      FacadeTests.tests
      FSharpApiTests.tests
      SamplesTests.tests
      // facade:end
    ]

[<EntryPoint>]
let main argv =
    Skiff.Tests.TestMain.run argv (testList "Integration" all)
