module Skiff.Integration.Main

open Expecto

/// Every test list of this program. Each area keeps its lines between its own markers so parallel work merges.
let private all: Test list =
    [
      // storage:begin
      StorageTests.tests
      CrashTests.tests
      // storage:end

      // runtime:begin
      Skiff.Integration.RuntimeTests.tests
      // runtime:end

      // facade:begin
      FacadeTests.tests
      FSharpApiTests.tests
      SamplesTests.tests
      // facade:end

      // cli:begin
      CliTests.tests
      // cli:end

      // sessions:begin
      ExactlyOnceTests.tests
      // sessions:end
    ]

[<EntryPoint>]
let main argv =
    match argv with
    // The crash tests start this same program as their child process.
    | [| "--crash-writer"; dir; run; seed |] -> CrashWriter.run dir (int64 run) (int seed)
    | _ -> Skiff.Tests.TestMain.run argv (testList "Integration" all)
