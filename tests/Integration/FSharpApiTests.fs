/// The F# surface: Async functions over a node, AsyncSeq watches and changes.
module Skiff.Integration.FSharpApiTests

open System
open System.IO
open System.Net
open Expecto
open FSharp.Control
open Skiff
open Skiff.FSharp

let tests =
    testSequenced
    <| testList
        "FSharpApi"
        [ testAsync "Async calls and AsyncSeq watches work on an embedded node" {
              let dir = Path.Combine(Path.GetTempPath(), "skiff-fs-" + Guid.NewGuid().ToString("N"))
              let node = Node.create (SkiffOptions(DataDirectory = dir, Address = IPAddress.Loopback, Port = RuntimeTests.nextPort ()))
              try
                  do! Node.start node
                  do! node |> Node.waitForLeader (TimeSpan.FromSeconds 10.0)
                  let changes = Node.changes node
                  let! watch = Kv.watch node "fs/"
                  let! watched = watch |> AsyncSeq.take 2 |> AsyncSeq.toListAsync |> Async.StartChild
                  do! Kv.insert node "fs/a" 1
                  do! Kv.insert node "fs/b" 2
                  let! a = Kv.tryGet<int> node "fs/a"
                  let! missing = Kv.tryGet<int> node "fs/none"
                  Expect.equal a (Some 1) "present"
                  Expect.equal missing None "absent is None"
                  let! swapped = Kv.compareAndSwap node "fs/a" 1 5
                  Expect.isTrue swapped "swapped"
                  let! keys = Kv.listKeys node "fs/"
                  Expect.equal keys [ "fs/a"; "fs/b" ] "keys"
                  let! levels = Kv.prefixes node
                  Expect.equal levels [ "fs" ] "prefixes"
                  let! firstTwo = changes |> AsyncSeq.take 2 |> AsyncSeq.toListAsync
                  Expect.equal (firstTwo |> List.map (fun c -> c.Key)) [ "fs/a"; "fs/b" ] "changes in commit order"
                  let! seen = watched
                  Expect.equal (seen |> List.map (fun c -> c.Key)) [ "fs/a"; "fs/b" ] "the watch saw both"
              finally
                  Node.shutdown node |> Async.RunSynchronously
                  try
                      Directory.Delete(dir, true)
                  with _ ->
                      ()
          } ]
