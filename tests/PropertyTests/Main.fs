module Skiff.PropertyTests.Main

open Expecto

let private smoke =
    testList "Harness" [ test "the counting line reaches build.fsx" { Expect.equal (1 + 1) 2 "arithmetic" } ]

[<EntryPoint>]
let main argv = Skiff.Tests.TestMain.run argv (testList "PropertyTests" [ smoke; LinearizabilityTests.tests ])
