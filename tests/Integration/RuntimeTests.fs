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

// Below the Linux ephemeral range (32768+), so an outgoing connection never holds a test's port.
let private portCounter = ref (20000 + Random.Shared.Next(0, 12000))

/// A fresh port for one test's cluster (all its nodes share it on different loopback IPs).
let nextPort () = Interlocked.Add(&portCounter.contents, 1)

let private tempDir () =
    let d = Path.Combine(Path.GetTempPath(), "skiff-it-" + Guid.NewGuid().ToString("N"))
    Directory.CreateDirectory d |> ignore
    d

let bytes (s: string) = Encoding.UTF8.GetBytes s
let text (b: byte[] | null) : string =
    match b with
    | null -> "<none>"
    | b -> Encoding.UTF8.GetString b

/// A change's value as text ("<none>" for a removal).
let changeText (v: Nullable<ReadOnlyMemory<byte>>) : string = if v.HasValue then Encoding.UTF8.GetString v.Value.Span else "<none>"

/// Options for node `n` (1..9) of a cluster on `port`.
let options (port: int) (n: int) (dir: string) (join: int list) =
    SkiffServerOptions(
        Bind = IPAddress.Parse(sprintf "127.0.0.%d" n),
        Port = port,
        DataDirectory = dir,
        JoinPeers = (join |> List.map (sprintf "127.0.0.%d") |> Array.ofList),
        RequestTimeout = TimeSpan.FromSeconds 5.0
    )

let start (o: SkiffServerOptions) =
    let s = new SkiffServer(o)
    s.StartAsync().Wait()
    s

/// Polls `condition` every 10 ms until it holds or `seconds` pass (then fails with `what`).
let waitUntil seconds what condition = StorageSupport.waitUntil seconds what condition

/// Stops a node as abruptly as a crash (no leadership hand-off).
let stop (s: SkiffServer) = s.ShutdownAsync(false).Wait()

/// A running test cluster: nodes by number (1..9), with their data directories kept for restarts.
type Cluster(port: int) =
    let nodes = Collections.Generic.Dictionary<int, SkiffServer>()
    let dirs = Collections.Generic.Dictionary<int, string>()
    member val RequestTimeout = TimeSpan.FromSeconds 5.0 with get, set
    /// Adjusts node n's options before it starts (TLS, say).
    member val Configure: int -> SkiffServerOptions -> unit = (fun _ _ -> ()) with get, set
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
        let o = options port n (this.Dir n) join
        o.RequestTimeout <- this.RequestTimeout
        this.Configure n o
        let s = start o
        nodes[n] <- s
        s
    member _.Stop(n: int) =
        let sw = Diagnostics.Stopwatch.StartNew()
        stop nodes[n]
        nodes.Remove n |> ignore
        if sw.Elapsed.TotalSeconds > 1.0 then
            eprintfn "slow shutdown of node %d: %.1f s" n sw.Elapsed.TotalSeconds
    member _.Running = nodes.Values |> List.ofSeq
    member this.Leader() = this.Running |> List.tryFind (fun s -> s.Role = Role.Leader)
    member this.WaitLeader(seconds: float) =
        waitUntil seconds "a leader known to every running node" (fun () ->
            match this.Leader() with
            | Some l -> this.Running |> List.forall (fun s -> s.LeaderId = Nullable l.Id)
            | None -> false)
        (this.Leader()).Value
    member this.WaitMembers(count: int, seconds: float) =
        waitUntil seconds (sprintf "%d voters on every running node" count) (fun () ->
            this.Running |> List.forall (fun s -> s.Members.Values |> Seq.filter (fun struct (_, v) -> v) |> Seq.length = count))
    interface IDisposable with
        member _.Dispose() =
            for s in nodes.Values do
                try
                    stop s
                with _ ->
                    ()
            for d in dirs.Values do
                try
                    Directory.Delete(d, true)
                with _ ->
                    ()

/// Starts node 1 alone, then nodes 2..n joining through node 1, each node's options adjusted by `configure`; waits
/// until all are voters.
let clusterOf (timeout: float) (configure: int -> SkiffServerOptions -> unit) (n: int) =
    let c = new Cluster(nextPort (), RequestTimeout = TimeSpan.FromSeconds timeout, Configure = configure)
    c.Start(1, []) |> ignore
    c.WaitLeader 10.0 |> ignore
    for i in 2..n do
        c.Start(i, [ 1 ]) |> ignore
    c.WaitMembers(n, 20.0)
    c.WaitLeader 10.0 |> ignore
    c

/// Starts node 1 alone, then nodes 2..n joining through node 1; waits until all are voters.
let clusterWith (timeout: float) (n: int) = clusterOf timeout (fun _ _ -> ()) n

let cluster n = clusterWith 5.0 n

/// Runs `f` and expects a SkiffException of one of `kinds` (possibly wrapped in AggregateException).
/// Runs `f`, which must fail with a SkiffException of one of `kinds`; returns it.
let expectFailure (kinds: ErrorKind list) (what: string) (f: unit -> unit) : SkiffException =
    let rec unwrap (e: exn) =
        match e with
        | :? AggregateException as a ->
            match a.InnerException with
            | null -> e
            | inner -> unwrap inner
        | e -> e
    try
        f ()
        failtestf "%s: expected %A, but it succeeded" what kinds
    with
    | :? AssertException -> reraise ()
    | e ->
        match unwrap e with
        | :? SkiffException as s when List.contains s.Kind kinds -> s
        | other -> failtestf "%s: expected %A, got %O" what kinds other

let expectError (kinds: ErrorKind list) (what: string) (f: unit -> unit) = expectFailure kinds what f |> ignore

let put (s: SkiffServer) k v = s.InsertAsync(k, bytes v).Result |> ignore
let staleGet (s: SkiffServer) k = text (s.GetAsync(k, ReadConsistency.Stale).Result)

/// Options with a small snapshot threshold, so compaction and snapshot transfer happen in tests.
let snappy (o: SkiffServerOptions) =
    o.Raft <- { Options.defaults with SnapshotThreshold = 50L; CompactionTail = 10L }
    o

/// The first `count` changes of a watch on `s` under `prefix` from `from` (fails after `seconds`).
let watchTake (s: SkiffServer) (prefix: string) (from: int64) (count: int) (seconds: float) : Change list =
    use cts = new CancellationTokenSource(TimeSpan.FromSeconds seconds)
    let e = s.WatchAsync(prefix, from, cts.Token).GetAsyncEnumerator(cts.Token)
    let got = ResizeArray<Change>()
    try
        try
            while got.Count < count && e.MoveNextAsync().AsTask().Result do
                got.Add e.Current
        with ex when cts.IsCancellationRequested ->
            failtestf "watch from %d under '%s' gave %d of %d changes within %.0f s (%s)" from prefix got.Count count seconds ex.Message
    finally
        cts.Cancel()
    List.ofSeq got

/// A watch from index 0 collecting every change under `prefix` in the background.
let watchAll (s: SkiffServer) (prefix: string) (ct: CancellationToken) =
    let seen = Collections.Concurrent.ConcurrentQueue<Change>()
    let e = s.WatchAsync(prefix, 0L, ct).GetAsyncEnumerator(ct)
    let run =
        task {
            try
                let mutable go = true
                while go do
                    let! more = e.MoveNextAsync()
                    if more then seen.Enqueue e.Current else go <- false
            with _ ->
                ()
        }
    seen, run

/// A watch event as comparable values.
let shown (e: Change) = e.Index, e.Key, changeText e.Value

/// The newest snapshot index whose metadata a FASTER node wrote (0 if none).
let snapshotIndexOn (dir: string) =
    let metaDir = Path.Combine(dir, "snapmeta")
    if not (Directory.Exists metaDir) then
        0L
    else
        Directory.GetFiles(metaDir, "*.meta")
        |> Array.map (fun f -> Int64.Parse(nonNull (Path.GetFileNameWithoutExtension f)))
        |> Array.fold max 0L

/// Waits until node `s` (data in `dir`) has a snapshot at or after `index`, then commits one more write, which is
/// applied only after that snapshot finished (the applier takes snapshots in line with applying).
let awaitSnapshotPast (s: SkiffServer) (dir: string) (index: int64) =
    waitUntil 15.0 (sprintf "a snapshot at or after index %d" index) (fun () ->
        if snapshotIndexOn dir >= index then
            true
        else
            put s "pad/more" "x"
            false)
    put s "pad/after-snapshot" "x"

/// Starts three nodes with `snappy` options (node 1 first, the others joining it), then stops one follower.
/// Returns the leader and the stopped node's number.
let snappyClusterOneFollowerDown (c: Cluster) =
    c.Nodes[1] <- start (snappy (options c.Port 1 (c.Dir 1) []))
    c.WaitLeader 5.0 |> ignore
    for n in [ 2; 3 ] do
        c.Nodes[n] <- start (snappy (options c.Port n (c.Dir n) [ 1 ]))
    c.WaitMembers(3, 20.0)
    let leader = c.WaitLeader 5.0
    let n = c.Nodes |> Seq.find (fun kv -> kv.Value <> leader) |> fun kv -> kv.Key
    c.Stop n
    leader, n

let tests =
    testSequenced
    <| testList
        "runtime"
        [ test "a single node elects itself and serves writes and reads" {
              use c = new Cluster(nextPort ())
              let s = c.Start(1, [])
              c.WaitLeader 5.0 |> ignore
              let index = s.InsertAsync("a/b", bytes "1").Result
              Expect.isGreaterThan index 0L "a commit index"
              Expect.equal (text (s.GetAsync("a/b").Result)) "1" "read back"
              Expect.equal (s.GetAsync("missing").Result) null "absent key"
          }

          test "keys, prefixes, delete and compare-and-swap" {
              use c = new Cluster(nextPort ())
              let s = c.Start(1, [])
              c.WaitLeader 5.0 |> ignore
              put s "parent/foo" "1"
              put s "grandparent/parent/foo" "2"
              put s "top" "3"
              Expect.equal (List.ofSeq (s.GetPrefixesAsync().Result)) [ "grandparent/parent"; "parent" ] "prefixes"
              Expect.equal (List.ofSeq (s.ListKeysAsync("parent").Result)) [ "parent/foo" ] "list keys"
              Expect.equal (Seq.length (s.ListKeysAsync("").Result)) 3 "all keys"
              s.RemoveAsync("parent/foo").Wait()
              s.RemoveAsync("never-there").Wait()
              Expect.equal (List.ofSeq (s.GetPrefixesAsync().Result)) [ "grandparent/parent" ] "prefix gone with its last key"
              let struct (swapped, _) = s.CompareAndSwapAsync("top", bytes "3", bytes "4").Result.ToTuple() |> fun (a, b) -> struct (a, b)
              Expect.isTrue swapped "cas with the right value"
              let struct (swapped2, _) =
                  s.CompareAndSwapAsync("top", bytes "3", bytes "5").Result.ToTuple() |> fun (a, b) -> struct (a, b)
              Expect.isFalse swapped2 "cas with a stale value"
              Expect.equal (staleGet s "top") "4" "cas result"
              let struct (created, _) = s.CompareAndSwapAsync("new", null, bytes "x").Result.ToTuple() |> fun (a, b) -> struct (a, b)
              Expect.isTrue created "cas on an absent key"
          }

          test "a two-node cluster: both nodes answer, writes reach both" {
              use c = cluster 2
              for s in c.Running do
                  put s ("from-" + string s.Id) "x"
              for s in c.Running do
                  for t in c.Running do
                      waitUntil 5.0 "replicated" (fun () -> staleGet s ("from-" + string t.Id) = "x")
          }

          test "a three-node cluster: writes from every node (forwarded to the leader) reach every node" {
              use c = cluster 3
              let leader = c.WaitLeader 5.0
              for s in c.Running do
                  let k = sprintf "node/%O" s.Id
                  put s k "v"
                  // A linearizable read from any node sees the write at once.
                  for t in c.Running do
                      Expect.equal (text (t.GetAsync(k).Result)) "v" "linearizable read after the write"
              Expect.equal (c.Running |> List.filter (fun s -> s.Role = Role.Leader) |> List.length) 1 "one leader"
              let ids = c.Running |> List.map (fun s -> s.Members.Keys |> Set.ofSeq)
              Expect.allEqual ids (ids.Head) "the same membership on every node"
              Expect.equal leader.Members.Count 3 "three members"
          }

          test "leader failure: the others elect a new leader and keep serving" {
              use c = cluster 3
              let old = c.WaitLeader 5.0
              put old "before" "1"
              let n = c.Nodes |> Seq.find (fun kv -> kv.Value = old) |> fun kv -> kv.Key
              c.Stop n
              let next = c.WaitLeader 10.0
              Expect.notEqual next.Id old.Id "a new leader"
              Expect.isGreaterThan next.Term 1L "a later term"
              put next "after" "2"
              for s in c.Running do
                  Expect.equal (text (s.GetAsync("before").Result)) "1" "old data kept"
                  Expect.equal (text (s.GetAsync("after").Result)) "2" "new writes"
          }

          test "a crashed follower restarts with the same id and catches up" {
              use c = cluster 3
              let leader = c.WaitLeader 5.0
              let n = c.Nodes |> Seq.find (fun kv -> kv.Value <> leader) |> fun kv -> kv.Key
              let id = c.Node(n).Id
              c.Stop n
              for i in 1..20 do
                  put leader (sprintf "k%d" i) (string i)
              let back = c.Start(n, [ 1 ])
              Expect.equal back.Id id "same id after restart"
              waitUntil 10.0 "the restarted follower caught up" (fun () -> staleGet back "k20" = "20")
              Expect.equal leader.Members.Count 3 "still three members (rejoin is a no-op)"
          }

          test "concurrent inserts from many clients on every node all commit" {
              use c = cluster 3
              c.WaitLeader 5.0 |> ignore
              let nodes = c.Running |> Array.ofList
              let tasks = [| for i in 0..199 -> nodes[i % nodes.Length].InsertAsync(sprintf "c/%03d" i, bytes (string i)) :> Task |]
              Task.WaitAll tasks
              for s in nodes do
                  waitUntil 10.0 "all inserts everywhere" (fun () -> s.ListKeysAsync("c/", ReadConsistency.Stale).Result.Count = 200)
          }

          test "server removal: a follower, then the leader (leadership is handed over first)" {
              use c = cluster 3
              let leader = c.WaitLeader 5.0
              let follower = c.Running |> List.find (fun s -> s.Role <> Role.Leader)
              leader.RemoveServerAsync(follower.Id).Wait()
              c.Stop(c.Nodes |> Seq.find (fun kv -> kv.Value = follower) |> fun kv -> kv.Key)
              c.WaitMembers(2, 10.0)
              put leader "after-removal" "1"
              // Remove the leader itself, asked through the other node.
              let other = c.Running |> List.find (fun s -> s.Id <> leader.Id)
              other.RemoveServerAsync(leader.Id).Wait()
              waitUntil 10.0 "the other node leads alone" (fun () -> other.Role = Role.Leader && other.Members.Count = 1)
              put other "alone" "1"
              Expect.equal (text (other.GetAsync("after-removal").Result)) "1" "data kept"
          }

          test "restart persistence: a whole cluster restarts with its data" {
              use c = cluster 3
              let leader = c.WaitLeader 5.0
              for i in 1..10 do
                  put leader (sprintf "p/%d" i) (string i)
              let ids = c.Running |> List.map (fun s -> s.Id) |> Set.ofList
              for n in [ 1; 2; 3 ] do
                  c.Stop n
              c.Start(1, []) |> ignore
              c.Start(2, [ 1 ]) |> ignore
              c.Start(3, [ 1 ]) |> ignore
              let again = c.WaitLeader 10.0
              Expect.equal (c.Running |> List.map (fun s -> s.Id) |> Set.ofList) ids "same ids"
              for s in c.Running do
                  Expect.equal (text (s.GetAsync("p/10").Result)) "10" "data survived"
              put again "p/11" "11"
          }

          test "watch on a follower streams inserts and deletes in commit order, and resumes from an index" {
              use c = cluster 3
              let leader = c.WaitLeader 5.0
              let follower = c.Running |> List.find (fun s -> s.Role <> Role.Leader)
              use client = new SkiffGrpcClient([ follower.Address ])
              use cts = new CancellationTokenSource(TimeSpan.FromSeconds 20.0)
              let seen = Collections.Concurrent.ConcurrentQueue<Change>()
              // Resuming from the next index makes the stream complete whenever the server registers the watch.
              let from0 = leader.CommitIndex + 1L
              let watching =
                  task {
                      let e = client.WatchAsync("w/", from0, cts.Token).GetAsyncEnumerator(cts.Token)
                      let mutable go = true
                      while go do
                          let! more = e.MoveNextAsync()
                          if more then seen.Enqueue e.Current else go <- false
                  }
              put leader "w/a" "1"
              put leader "other" "x"
              put leader "w/b" "2"
              leader.RemoveAsync("w/a").Wait()
              waitUntil 5.0 "three changes seen" (fun () -> seen.Count >= 3)
              let events = List.ofSeq seen
              Expect.equal (events |> List.map (fun e -> e.Key)) [ "w/a"; "w/b"; "w/a" ] "keys in commit order"
              Expect.equal (events |> List.map (fun e -> changeText e.Value)) [ "1"; "2"; "<none>" ] "values; delete has none"
              Expect.isTrue (events |> List.pairwise |> List.forall (fun (a, b) -> a.Index < b.Index)) "indexes grow"
              // Resume from the second change's index.
              let from = events[1].Index
              use cts2 = new CancellationTokenSource(TimeSpan.FromSeconds 10.0)
              let replay =
                  task {
                      let e = follower.WatchAsync("w/", from, cts2.Token).GetAsyncEnumerator(cts2.Token)
                      let! _ = e.MoveNextAsync()
                      let first = e.Current
                      let! _ = e.MoveNextAsync()
                      return first, e.Current
                  }
              let a, b = replay.Result
              Expect.equal (a.Key, a.Index) ("w/b", from) "replay starts at the index"
              Expect.equal b.Key "w/a" "then the delete"
              cts.Cancel()
              try
                  watching.Wait()
              with _ ->
                  ()
          }

          test "a restarted node resumes a watch from an index it applied before the restart, then streams live changes" {
              use c = new Cluster(nextPort ())
              let s1 = start (snappy (options c.Port 1 (c.Dir 1) []))
              c.Nodes[1] <- s1
              c.WaitLeader 5.0 |> ignore
              use cts = new CancellationTokenSource(TimeSpan.FromSeconds 60.0)
              let seen, watching = watchAll s1 "w/" cts.Token
              for i in 1..60 do
                  put s1 (sprintf "w/%02d" (i % 20)) (string i)
                  put s1 (sprintf "other/%d" i) "x"
                  if i % 7 = 0 then
                      s1.RemoveAsync(sprintf "w/%02d" ((i - 1) % 20)).Wait()
              waitUntil 5.0 "the live stream saw every change" (fun () -> seen.Count >= 60 + 8)
              let live = List.ofSeq seen
              // Resume from the fifth change: well inside what the node's snapshot covers, so after a restart it is
              // older than anything the node re-applies (and so holds in memory).
              let from = live[4].Index
              awaitSnapshotPast s1 (c.Dir 1) (live |> List.last).Index
              cts.Cancel()
              try
                  watching.Wait()
              with _ ->
                  ()
              c.Stop 1
              let s2 = start (snappy (options c.Port 1 (c.Dir 1) []))
              c.Nodes[1] <- s2
              c.WaitLeader 5.0 |> ignore
              let expected = live |> List.filter (fun e -> e.Index >= from) |> List.map shown
              use cts2 = new CancellationTokenSource(TimeSpan.FromSeconds 20.0)
              let e = s2.WatchAsync("w/", from, cts2.Token).GetAsyncEnumerator(cts2.Token)
              let replayed =
                  [ for _ in expected ->
                        (Expect.isTrue (e.MoveNextAsync().AsTask().Result) "more"
                         shown e.Current) ]
              Expect.equal replayed expected "the changes from that index, in commit order, with their indexes"
              let index = s2.InsertAsync("w/live", bytes "new").Result
              Expect.isTrue (e.MoveNextAsync().AsTask().Result) "a live change follows"
              Expect.equal (shown e.Current) (index, "w/live", "new") "then the live change, with no gap and no duplicate"
              cts2.Cancel()
          }

          test "a watch resumed from a node's history shows exactly what the live stream showed, across a snapshot install" {
              use c = new Cluster(nextPort ())
              let leader, n = snappyClusterOneFollowerDown c
              use cts = new CancellationTokenSource(TimeSpan.FromSeconds 60.0)
              let seen, watching = watchAll leader "w/" cts.Token
              let cas (k: string) (expected: string option) (next: string option) =
                  let b (v: string option) : byte[] | null =
                      match v with
                      | Some v -> bytes v
                      | None -> null
                  leader.CompareAndSwapAsync(k, b expected, b next).Result |> ignore
              let first = leader.InsertAsync("w/a", bytes "1").Result
              cas "w/a" (Some "wrong") (Some "2") // does not match: no change
              leader.RemoveAsync("w/absent").Wait() // nothing to delete: no change
              cas "w/new" None (Some "x") // matches an absent key: a put
              cas "w/a" (Some "1") None // matches: a delete
              leader.RemoveAsync("w/a").Wait() // already gone: no change
              cas "w/gone" None None // matches, changes nothing
              put leader "w/b" "3"
              for i in 1..150 do
                  put leader (sprintf "pad/%03d" i) "x"
              waitUntil 5.0 "the live stream saw the four changes" (fun () -> seen.Count >= 4)
              let live = List.ofSeq seen |> List.map shown
              Expect.equal
                  (live |> List.map (fun (_, k, v) -> k, v))
                  [ "w/a", "1"; "w/new", "x"; "w/a", "<none>"; "w/b", "3" ]
                  "what the live stream showed"
              // The stopped follower catches up by a snapshot that covers all of it.
              c.Nodes[n] <- start (snappy (options c.Port n (c.Dir n) [ 1 ]))
              let back = c.Node n
              waitUntil 15.0 "caught up by snapshot" (fun () -> staleGet back "pad/150" = "x")
              let fromFollower = watchTake back "w/" first live.Length 10.0 |> List.map shown
              Expect.equal fromFollower live "resumed on the follower that installed a snapshot: the same changes and indexes"
              let fromLeader = watchTake leader "w/" first live.Length 10.0 |> List.map shown
              Expect.equal fromLeader live "resumed on the leader"
              // After a restart the follower serves it from the installed snapshot's history on disk.
              c.Stop n
              c.Nodes[n] <- start (snappy (options c.Port n (c.Dir n) [ 1 ]))
              let again = c.Node n
              let afterRestart = watchTake again "w/" first live.Length 10.0 |> List.map shown
              Expect.equal afterRestart live "resumed on the follower after its restart"
              cts.Cancel()
              try
                  watching.Wait()
              with _ ->
                  ()
          }

          test "a live watch on a follower that catches up by snapshot sees every change, with no gap" {
              use c = new Cluster(nextPort ())
              let s1 = start (snappy (options c.Port 1 (c.Dir 1) []))
              c.Nodes[1] <- s1
              c.WaitLeader 5.0 |> ignore
              for n in [ 2; 3 ] do
                  c.Nodes[n] <- start (snappy (options c.Port n (c.Dir n) [ 1 ]))
              c.WaitMembers(3, 20.0)
              let leader = c.WaitLeader 5.0
              let follower = c.Running |> List.find (fun s -> s.Role <> Role.Leader)
              use cts = new CancellationTokenSource(TimeSpan.FromSeconds 60.0)
              let onLeader, w1 = watchAll leader "w/" cts.Token
              let onFollower, w2 = watchAll follower "w/" cts.Token
              put leader "w/before" "0"
              waitUntil 5.0 "the follower saw the first change" (fun () -> onFollower.Count = 1)
              // Cut the follower off while the others commit and compact the log past it.
              follower.Isolated <- true
              for i in 1..150 do
                  put leader (sprintf "w/%03d" (i % 40)) (string i)
                  if i % 9 = 0 then
                      leader.RemoveAsync(sprintf "w/%03d" ((i - 1) % 40)).Wait()
              let last = leader.InsertAsync("w/last", bytes "x").Result
              follower.Isolated <- false
              waitUntil 20.0 "the follower caught up" (fun () -> follower.AppliedIndex >= last)
              waitUntil 5.0 "both streams reached the last change" (fun () ->
                  onFollower |> Seq.exists (fun e -> e.Index = last) && onLeader |> Seq.exists (fun e -> e.Index = last))
              Expect.equal
                  (List.ofSeq onFollower |> List.map shown)
                  (List.ofSeq onLeader |> List.map shown)
                  "the follower's live stream equals the leader's"
              cts.Cancel()
              for w in [ w1; w2 ] do
                  try
                      w.Wait()
                  with _ ->
                      ()
          }

          test "resuming from an index older than the durable history is refused, naming the oldest index available" {
              use c = new Cluster(nextPort ())
              let o () =
                  let o = snappy (options c.Port 1 (c.Dir 1) [])
                  o.WatchHistory <- 10
                  o
              let s1 = start (o ())
              c.Nodes[1] <- s1
              c.WaitLeader 5.0 |> ignore
              use cts = new CancellationTokenSource(TimeSpan.FromSeconds 60.0)
              let seen, watching = watchAll s1 "" cts.Token
              let mutable last = 0L
              for i in 1..30 do
                  last <- s1.InsertAsync(sprintf "k/%02d" i, bytes "v").Result
              awaitSnapshotPast s1 (c.Dir 1) last
              let last = s1.InsertAsync("k/last", bytes "v").Result
              waitUntil 5.0 "the live stream saw every change" (fun () -> seen |> Seq.exists (fun e -> e.Index = last))
              let live = List.ofSeq seen
              cts.Cancel()
              try
                  watching.Wait()
              with _ ->
                  ()
              c.Stop 1
              let s2 = start (o ())
              c.Nodes[1] <- s2
              c.WaitLeader 5.0 |> ignore
              waitUntil 5.0 "the restarted node re-applied its log" (fun () -> s2.AppliedIndex >= last)
              // Every write changed a key; the node keeps the newest 10 changes.
              let newest = live |> List.skip (live.Length - 10) |> List.map shown
              let trimmed = live[live.Length - 11].Index
              let message =
                  try
                      s2.WatchAsync("", live[0].Index, CancellationToken.None) |> ignore
                      failtest "resuming from the first change should be refused"
                  with :? SkiffException as e ->
                      Expect.equal e.Kind ErrorKind.StreamClosed "the error kind"
                      e.Message
              let m = Text.RegularExpressions.Regex.Match(message, "oldest index still available is (\\d+)")
              Expect.isTrue m.Success (sprintf "the message names the oldest index available: %s" message)
              let oldest = int64 m.Groups[1].Value
              // The oldest available is right after the newest change that was trimmed: resuming there works.
              Expect.equal oldest (trimmed + 1L) "the oldest index available follows the last trimmed change"
              let kept = watchTake s2 "" oldest 10 10.0 |> List.map shown
              Expect.equal kept newest "the ten newest changes, from the durable history"
              expectError [ ErrorKind.StreamClosed ] "one index earlier" (fun () ->
                  s2.WatchAsync("", oldest - 1L, CancellationToken.None) |> ignore)
          }

          test "an insert fails without a quorum, within its deadline" {
              use c = clusterWith 1.5 3
              let leader = c.WaitLeader 5.0
              let ln = c.Nodes |> Seq.find (fun kv -> kv.Value = leader) |> fun kv -> kv.Key
              for n in [ 1; 2; 3 ] |> List.filter ((<>) ln) do
                  c.Stop n
              let sw = Diagnostics.Stopwatch.StartNew()
              expectError [ ErrorKind.NoQuorum; ErrorKind.Timeout ] "insert without quorum" (fun () ->
                  leader.InsertAsync("nope", bytes "1").Wait())
              Expect.isLessThan sw.Elapsed.TotalSeconds 4.0 "failed within the deadline"
          }

          test "a node far behind catches up by snapshot" {
              use c = new Cluster(nextPort ())
              let leader, n = snappyClusterOneFollowerDown c
              let tasks = [| for i in 1..400 -> leader.InsertAsync(sprintf "s/%03d" i, bytes (string i)) :> Task |]
              Task.WaitAll tasks
              // Snapshots are taken beside applying, so the leader's first may still be under way: without one
              // (and the log compacted behind it) the follower would simply be sent the entries.
              let leaderNo = c.Nodes |> Seq.find (fun kv -> obj.ReferenceEquals(kv.Value, leader)) |> fun kv -> kv.Key
              awaitSnapshotPast leader (c.Dir leaderNo) 200L
              c.Nodes[n] <- start (snappy (options c.Port n (c.Dir n) [ 1 ]))
              let back = c.Node n
              waitUntil 15.0 "caught up by snapshot" (fun () -> staleGet back "s/400" = "400")
              Expect.equal (back.ListKeysAsync("s/", ReadConsistency.Stale).Result.Count) 400 "every key"
              let installed = back.LatestSnapshotIndex
              Expect.isGreaterThan installed 0L "it holds a snapshot"
              // The installed snapshot is durable: restart the node again. It opens at that snapshot (or a later one
              // of its own) and applies the entries after it up to the commit index its log recorded, the rest once
              // the leader tells it they are committed, which is why the keys are awaited rather than counted at
              // once (the leader's newest snapshot may be well behind its last write now that snapshots are taken
              // beside applying).
              c.Stop n
              c.Nodes[n] <- start (snappy (options c.Port n (c.Dir n) [ 1 ]))
              let again = c.Node n
              Expect.isGreaterThanOrEqual again.LatestSnapshotIndex installed "the snapshot survived the restart"
              Expect.isGreaterThanOrEqual again.AppliedIndex installed "the state machine opened at that snapshot"
              waitUntil 10.0 "every key after a restart" (fun () -> again.ListKeysAsync("s/", ReadConsistency.Stale).Result.Count = 400)
              put leader "s/401" "401"
              waitUntil 10.0 "new writes after the restart" (fun () -> staleGet again "s/401" = "401")
              // A brand-new member gets the snapshot too, not the whole history.
              c.Nodes[4] <- start (snappy (options c.Port 4 (c.Dir 4) [ 1 ]))
              waitUntil 15.0 "a new member caught up" (fun () -> staleGet (c.Node 4) "s/401" = "401")
          }

          test "a partitioned old leader cannot serve a linearizable read or acknowledge a write" {
              use c = clusterWith 1.0 3
              let old = c.WaitLeader 5.0
              put old "x" "1"
              old.Isolated <- true
              let others = c.Running |> List.filter (fun s -> s.Id <> old.Id)
              waitUntil 10.0 "a new leader on the majority side" (fun () -> others |> List.exists (fun s -> s.Role = Role.Leader))
              let fresh = others |> List.find (fun s -> s.Role = Role.Leader)
              put fresh "x" "2"
              expectError [ ErrorKind.NoQuorum; ErrorKind.Timeout; ErrorKind.NotLeader ] "write on the old leader" (fun () ->
                  old.InsertAsync("y", bytes "1").Wait())
              expectError [ ErrorKind.NoQuorum; ErrorKind.Timeout; ErrorKind.NotLeader ] "read on the old leader" (fun () ->
                  old.GetAsync("x", ReadConsistency.Linearizable).Wait())
              Expect.equal (staleGet old "x") "1" "a stale read is served locally, and is stale"
              old.Isolated <- false
              waitUntil 10.0 "the old leader follows again" (fun () -> staleGet old "x" = "2")
              Expect.equal (c.Running |> List.filter (fun s -> s.Role = Role.Leader) |> List.length) 1 "one leader after healing"
          }

          test "leadership transfer to a chosen voter" {
              use c = cluster 3
              let leader = c.WaitLeader 5.0
              let target = c.Running |> List.find (fun s -> s.Id <> leader.Id)
              let got = leader.TransferLeadershipAsync(Nullable target.Id).Result
              Expect.equal got target.Id "the reply names the target"
              waitUntil 5.0 "the target leads" (fun () -> target.Role = Role.Leader)
              put leader "after-transfer" "1"
          }

          test "a five-node cluster survives two failures" {
              use c = cluster 5
              let leader = c.WaitLeader 5.0
              put leader "five" "1"
              let victims = c.Nodes |> Seq.map (fun kv -> kv.Key) |> Seq.filter (fun n -> n <> 1) |> Seq.truncate 2 |> List.ofSeq
              for n in victims do
                  c.Stop n
              let next = c.WaitLeader 10.0
              put next "five" "2"
              for s in c.Running do
                  Expect.equal (text (s.GetAsync("five").Result)) "2" "served by the three left"
          }

          test "several nodes joining at once all get in" {
              use c = new Cluster(nextPort ())
              c.Start(1, []) |> ignore
              c.WaitLeader 5.0 |> ignore
              let joins = [ 2; 3; 4 ] |> List.map (fun n -> Task.Run(fun () -> c.Start(n, [ 1 ]) |> ignore))
              Task.WaitAll(Array.ofList joins)
              c.WaitMembers(4, 20.0)
              // Through a follower, after an unreachable peer: the request is forwarded to the leader.
              let viaFollower = c.Running |> List.find (fun s -> s.Role <> Role.Leader)
              let fn = c.Nodes |> Seq.find (fun kv -> kv.Value = viaFollower) |> fun kv -> kv.Key
              c.Start(5, [ 9; fn ]) |> ignore
              c.WaitMembers(5, 20.0)
          }

          test "joining fails with ClusterJoinFailed when no member answers" {
              let dir = tempDir ()
              let o = options (nextPort ()) 2 dir [ 9 ]
              o.JoinTimeout <- TimeSpan.FromSeconds 1.0
              expectError [ ErrorKind.ClusterJoinFailed ] "join" (fun () -> start o |> ignore)
              // The data directory was released.
              let o2 = options (nextPort ()) 2 dir []
              let s = start o2
              stop s
          }

          test "a port in use gives RpcBindFailed; a locked data directory gives DataDirectoryLocked" {
              use c = new Cluster(nextPort ())
              let s = c.Start(1, [])
              let o = options c.Port 1 (tempDir ()) []
              expectError [ ErrorKind.RpcBindFailed ] "bind" (fun () -> start o |> ignore)
              let o2 = options (nextPort ()) 1 (c.Dir 1) []
              expectError [ ErrorKind.DataDirectoryLocked ] "lock" (fun () -> start o2 |> ignore)
              ignore s
          }

          test "a slow watcher is dropped with a clear error; resuming from a forgotten index is refused" {
              use c = new Cluster(nextPort ())
              let o = options c.Port 1 (c.Dir 1) []
              o.WatchBufferCapacity <- 5
              o.WatchHistory <- 10
              let s = start o
              c.Nodes[1] <- s
              c.WaitLeader 5.0 |> ignore
              use cts = new CancellationTokenSource(TimeSpan.FromSeconds 10.0)
              let e = s.WatchAsync("", 0L, cts.Token).GetAsyncEnumerator(cts.Token)
              for i in 1..30 do
                  put s (sprintf "slow/%02d" i) "v"
              let mutable got = 0
              expectError [ ErrorKind.StreamClosed ] "slow watcher" (fun () ->
                  while e.MoveNextAsync().AsTask().Result do
                      got <- got + 1)
              Expect.isLessThanOrEqual got 5 "no more than the buffer was delivered"
              expectError [ ErrorKind.StreamClosed ] "resume from a forgotten index" (fun () ->
                  let r = s.WatchAsync("", 1L, cts.Token).GetAsyncEnumerator(cts.Token)
                  r.MoveNextAsync().AsTask().Wait())
          }

          test "shutdown is fast and fails calls in flight" {
              use c = clusterWith 30.0 3
              let leader = c.WaitLeader 5.0
              let ln = c.Nodes |> Seq.find (fun kv -> kv.Value = leader) |> fun kv -> kv.Key
              for n in [ 1; 2; 3 ] |> List.filter ((<>) ln) do
                  c.Stop n
              let pending = leader.InsertAsync("stuck", bytes "1")
              Thread.Sleep 100
              Expect.isFalse pending.IsCompleted "the write waits for a quorum"
              let sw = Diagnostics.Stopwatch.StartNew()
              c.Stop ln
              Expect.isLessThan sw.Elapsed.TotalSeconds 2.0 "shutdown took under 2 s"
              expectError [ ErrorKind.StreamClosed ] "the write in flight" (fun () -> pending.Wait())
              // The data directory is free again.
              let again = c.Start(ln, [])
              ignore again
          }

          test "the gRPC client works against any node" {
              use c = cluster 3
              use client = new SkiffGrpcClient(c.Running |> List.map (fun s -> s.Address))
              client.InsertAsync("g/1", bytes "a").Wait()
              Expect.equal (text (client.GetAsync("g/1").Result)) "a" "get"
              Expect.equal (List.ofSeq (client.ListKeysAsync("g/").Result)) [ "g/1" ] "list"
              Expect.equal (List.ofSeq (client.GetPrefixesAsync().Result)) [ "g" ] "prefixes"
              Expect.isTrue (client.CompareAndSwapAsync("g/1", bytes "a", bytes "b").Result) "cas"
              client.RemoveAsync("g/1").Wait()
              Expect.equal (client.GetAsync("g/1").Result) null "deleted"
              let status = client.ClusterStatusAsync().Result
              Expect.equal status.Members.Count 3 "status lists members"
              // Errors keep their kind across gRPC.
              expectError [ ErrorKind.InvalidKey ] "an empty key" (fun () -> client.InsertAsync("", bytes "x").Wait())
              expectError [ ErrorKind.InvalidKey ] "a key with NUL" (fun () -> client.InsertAsync("a\000b", bytes "x").Wait())
              use dead = new SkiffGrpcClient([ sprintf "127.0.0.9:%d" c.Port ])
              expectError [ ErrorKind.ClientConnectFailed ] "no member reachable" (fun () -> dead.GetAsync("k").Wait())
          } ]
