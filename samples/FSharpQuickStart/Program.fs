// The quick start in F#: an embedded node, Async calls, and a watch as an AsyncSeq.
open System
open System.IO
open System.Net
open FSharp.Control
open Skiff
open Skiff.FSharp

[<EntryPoint>]
let main argv =
    let port = if argv.Length > 0 then int argv[0] else 9400
    let dir = Path.Combine(Path.GetTempPath(), "skiff-fsharp-" + Guid.NewGuid().ToString("N"))
    let node = Node.create (SkiffOptions(DataDirectory = dir, Address = IPAddress.Loopback, Port = port))
    async {
        do! Node.start node
        do! node |> Node.waitForLeader (TimeSpan.FromSeconds 2.0)
        let! greetings = Kv.watch node "greeting"
        do! Kv.insert node "greeting" "hello world"
        let! value = Kv.tryGet<string> node "greeting"
        printfn "%s" (defaultArg value "<absent>")
        let! first = greetings |> AsyncSeq.take 1 |> AsyncSeq.toListAsync
        printfn "watched: %s" first.Head.Key
        do! Node.shutdown node
    }
    |> Async.RunSynchronously
    Directory.Delete(dir, true)
    0
