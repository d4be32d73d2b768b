/// Real nodes on 127.0.0.x: the runtime's cluster behaviour (the floor is skiff-rs's own suite).
module Skiff.Integration.RuntimeTests

open System
open System.IO
open System.Net
open System.Text
open System.Threading
open System.Threading.Tasks
open Expecto
open Skiff
open Skiff.Core
open Skiff.Net.Runtime

let private portCounter = ref (20000 + Random.Shared.Next(0, 20000))

/// A fresh port for one test's cluster (all its nodes share it on different loopback IPs).
let nextPort () = Interlocked.Add(&portCounter.contents, 1)

let private tempDir () =
    let d = Path.Combine(Path.GetTempPath(), "skiff-it-" + Guid.NewGuid().ToString("N"))
    Directory.CreateDirectory d |> ignore
    d

let bytes (s: string) = Encoding.UTF8.GetBytes s
let text (b: byte[] | null) : string = match b with null -> "<none>" | b -> Encoding.UTF8.GetString b

/// Options for node `n` (1..9) of a cluster on `port`.
let options (port: int) (n: int) (dir: string) (join: int list) =
    SkiffServerOptions(
        Bind = IPAddress.Parse(sprintf "127.0.0.%d" n),
        Port = port,
        DataDirectory = dir,
        JoinPeers = (join |> List.map (sprintf "127.0.0.%d") |> Array.ofList),
        RequestTimeout = TimeSpan.FromSeconds 5.0)

let start (o: SkiffServerOptions) =
    let s = new SkiffServer(o)
    s.StartAsync().Wait()
    s

/// Polls `condition` every 10 ms until it holds or `seconds` pass (then fails with `what`).
let waitUntil (seconds: float) (what: string) (condition: unit -> bool) =
    let deadline = DateTime.UtcNow.AddSeconds seconds
    let mutable ok = condition ()
    while not ok && DateTime.UtcNow < deadline do
        Thread.Sleep 10
        ok <- condition ()
    if not ok then failtestf "timed out after %.1f s waiting for: %s" seconds what

let stop (s: SkiffServer) = s.ShutdownAsync().Wait()

/// A running test cluster: nodes by number (1..9), with their data directories kept for restarts.
type Cluster(port: int) =
    let nodes = Collections.Generic.Dictionary<int, SkiffServer>()
    let dirs = Collections.Generic.Dictionary<int, string>()
    member _.Port = port
    member _.Nodes = nodes
    member _.Node n = nodes[n]
    member _.Dir n =
        match dirs.TryGetValue n with
        | true, d -> d
        | _ ->
            let d = tempDir ()
            dirs[n] <- d
            d
    member this.Start(n: int, join: int list) =
        let s = start (options port n (this.Dir n) join)
        nodes[n] <- s
        s
    member _.Stop(n: int) =
        stop nodes[n]
        nodes.Remove n |> ignore
    member _.Running = nodes.Values |> List.ofSeq
    member this.Leader() =
        this.Running |> List.tryFind (fun s -> s.Role = Role.Leader)
    member this.WaitLeader(seconds: float) =
        waitUntil seconds "a leader known to every running node" (fun () ->
            match this.Leader() with
            | Some l -> this.Running |> List.forall (fun s -> s.LeaderId = Nullable l.Id)
            | None -> false)
        (this.Leader()).Value
    member this.WaitMembers(count: int, seconds: float) =
        waitUntil seconds (sprintf "%d voters on every running node" count) (fun () ->
            this.Running
            |> List.forall (fun s -> s.Members.Values |> Seq.filter (fun struct (_, v) -> v) |> Seq.length = count))
    interface IDisposable with
        member _.Dispose() =
            for s in nodes.Values do
                try stop s with _ -> ()
            for d in dirs.Values do
                try Directory.Delete(d, true) with _ -> ()

/// Starts node 1 alone, then nodes 2..n joining through node 1; waits until all are voters.
let cluster (n: int) =
    let c = new Cluster(nextPort ())
    c.Start(1, []) |> ignore
    c.WaitLeader 10.0 |> ignore
    for i in 2..n do
        c.Start(i, [ 1 ]) |> ignore
    c.WaitMembers(n, 20.0)
    c.WaitLeader 10.0 |> ignore
    c

let tests =
    testSequenced
    <| testList
        "runtime"
        [ test "a single node elects itself and serves writes and reads" {
              use c = new Cluster(nextPort ())
              let s = c.Start(1, [])
              c.WaitLeader 5.0 |> ignore
              let index = s.PutAsync("a/b", bytes "1").Result
              Expect.isGreaterThan index 0L "a commit index"
              Expect.equal (text (s.GetAsync("a/b").Result)) "1" "read back"
          }
          test "a three-node cluster replicates writes to every node" {
              use c = cluster 3
              let leader = c.WaitLeader 5.0
              leader.PutAsync("k", bytes "v").Wait()
              for s in c.Running do
                  waitUntil 5.0 "the write on every node" (fun () -> text (s.GetAsync("k", ReadConsistency.Stale).Result) = "v")
          } ]
