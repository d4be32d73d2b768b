module Skiff.Integration.Main

open Expecto

[<EntryPoint>]
let main argv =
    match argv with
    // The crash tests start this same program as their child process.
    | [| "--crash-writer"; dir; run; seed |] -> CrashWriter.run dir (int64 run) (int seed)
    | _ -> Skiff.Tests.TestMain.run argv (testList "Integration" [ StorageTests.tests; CrashTests.tests ])
