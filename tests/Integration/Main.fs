module Skiff.Integration.Main

open Expecto

[<EntryPoint>]
let main argv = Skiff.Tests.TestMain.run argv (testList "Integration" [])
