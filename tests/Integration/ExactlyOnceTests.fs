/// Exactly-once writes through client sessions (issue 11): a write sent again is applied once, across restarts,
/// snapshots and snapshot installs; sessions expire by log time; errors say whether a write may have applied; and a
/// counter incremented by compare-and-swap through followers stays exact while the leader is SIGKILLed.
module Skiff.Integration.ExactlyOnceTests

open System
open System.Collections.Concurrent
open System.IO
open System.Net
open System.Text
open System.Threading
open System.Threading.Tasks
open Expecto
open Skiff
open Skiff.Net.Runtime
open Skiff.Net.Storage.Ports
open Skiff.Integration.RuntimeTests

/// Request `sequence` of session `id`, with no reply acknowledged yet (so every result is kept).
let private stamp id sequence = Nullable(SessionRef(id, sequence, 1L))

/// A raw client of the members (no session of its own), for sending chosen session stamps.
let private rawClient (c: Cluster) = new SkiffGrpcClient(c.Running |> List.map (fun s -> s.Address))

/// Disposes a client (an IAsyncDisposable) at the end of a `use` scope.
let private disposing (c: Client) =
    { new IDisposable with
        member _.Dispose() = c.DisposeAsync().AsTask().Wait() }

let private expectKind (kinds: ErrorKind list) (what: string) (f: unit -> unit) : SkiffException =
    let check (e: SkiffException) =
        Expect.contains kinds e.Kind (sprintf "%s: kind of %s" what e.Message)
        e
    try
        f ()
        failtestf "%s: expected one of %A, but it succeeded" what kinds
    with
    | :? AggregateException as a ->
        match a.InnerException with
        | :? SkiffException as e -> check e
        | other -> failtestf "%s: expected a SkiffException, got %O" what other
    | :? SkiffException as e -> check e

let private sessionTests =
    [ test "a committed command the applier cannot decode stops the member instead of being skipped" {
          // A member older than the others cannot read their session commands: skipping one would make its state
          // differ from theirs for ever. The real applier, on real storage:
          let dir = Path.Combine(Path.GetTempPath(), "skiff-applier-" + Guid.NewGuid().ToString("N"))
          use storage = Skiff.Net.Storage.NodeStorage.Open dir
          let sm = new KvStateMachineAdapter(storage.Kv)
          use snapshots = new CheckpointSnapshotStore(storage.Kv, Path.Combine(dir, "snapmeta"))
          let fatal = TaskCompletionSource<exn>()
          let applier = Applier(sm, snapshots, ignore, 100, 100, fun e -> fatal.TrySetResult e |> ignore)
          applier.Initialise()
          let entry index payload : Skiff.Core.Entry = { Index = index; Term = 1L; Payload = payload }
          let put (k: string) =
              Skiff.Core.Payload.Command(
                  Skiff.Core.LogCommandCodec.encode (Skiff.Core.LogCommand.Plain(Skiff.Core.Command.Insert(k, bytes "v")))
              )
          applier.Apply [ entry 1L (put "a"); entry 2L (Skiff.Core.Payload.Command [| 3uy; 1uy; 0uy; 0uy |]); entry 3L (put "b") ]
          Expect.isTrue (fatal.Task.Wait(TimeSpan.FromSeconds 10.0)) "the applier reported a fatal error"
          match fatal.Task.Result with
          | :? SkiffException as e ->
              Expect.equal e.Kind ErrorKind.StorageCorrupted (sprintf "the kind: %s" e.Message)
              Expect.stringContains e.Message "entry 2" "names the entry"
          | other -> failtestf "not a SkiffException: %O" other
          Expect.equal sm.AppliedIndex 1L "stopped before the entry it cannot read"
          Expect.isNull (sm.Get "b") "and applied nothing after it"
          applier.DisposeAsync(SkiffException(ErrorKind.StreamClosed, "test over")).AsTask().Wait()
          try
              Directory.Delete(dir, true)
          with _ ->
              ()
      }

      test "a write sent again in its session is applied once; a compare-and-swap repeats its first answer" {
          use c = cluster 3
          let leader = c.WaitLeader 5.0
          use raw = rawClient c
          let id = raw.OpenSessionAsync(TimeSpan.Zero).Result
          let first = raw.InsertOnceAsync("k", bytes "1", stamp id 1L, CancellationToken.None).Result
          put leader "k" "2" // another client's later write: a second application of request 1 would undo it
          let again = raw.InsertOnceAsync("k", bytes "1", stamp id 1L, CancellationToken.None).Result
          Expect.equal again first "the retry gets the first attempt's index"
          Expect.equal (text (leader.GetAsync("k").Result)) "2" "the later write stands"
          let struct (swapped, at) =
              raw.CompareAndSwapOnceAsync("k", bytes "2", bytes "3", stamp id 2L, CancellationToken.None).Result
          Expect.isTrue swapped "the swap happened"
          let struct (swappedAgain, atAgain) =
              raw.CompareAndSwapOnceAsync("k", bytes "2", bytes "3", stamp id 2L, CancellationToken.None).Result
          Expect.equal (swappedAgain, atAgain) (true, at) "the retry reports the swap (the key no longer holds 2, but it did swap)"
          // Through every member: a follower forwards the retry to the leader, which answers from the session.
          for s in c.Running do
              use one = new SkiffGrpcClient([ s.Address ])
              Expect.equal
                  (one.InsertOnceAsync("k", bytes "1", stamp id 1L, CancellationToken.None).Result)
                  first
                  (sprintf "through %s" s.Address)
          Expect.equal (text (leader.GetAsync("k").Result)) "3" "nothing applied again"
      }

      test "sessions survive a restart and a snapshot, and a follower installing a snapshot learns them" {
          use c = new Cluster(nextPort ())
          let leader, down = snappyClusterOneFollowerDown c
          use raw = new SkiffGrpcClient([ leader.Address ])
          let id = raw.OpenSessionAsync(TimeSpan.Zero).Result
          let first = raw.InsertOnceAsync("s/k", bytes "once", stamp id 1L, CancellationToken.None).Result
          put leader "s/k" "later"
          // Enough writes for snapshots and compaction past the session's request.
          for i in 1..120 do
              put leader (sprintf "pad/%03d" i) "x"
          awaitSnapshotPast leader (c.Dir(c.Nodes |> Seq.find (fun kv -> kv.Value = leader) |> fun kv -> kv.Key)) (first + 60L)
          // The stopped follower comes back and catches up by a snapshot; then it leads.
          let back = start (snappy (options c.Port down (c.Dir down) [ 1 ]))
          c.Nodes[down] <- back
          waitUntil 20.0 "the follower caught up" (fun () -> back.AppliedIndex >= leader.CommitIndex)
          back.TransferLeadershipAsync(Nullable back.Id).Wait()
          waitUntil 10.0 "the follower leads" (fun () -> back.Role = Skiff.Core.Role.Leader)
          use toBack = new SkiffGrpcClient([ back.Address ])
          Expect.equal
              (toBack.InsertOnceAsync("s/k", bytes "once", stamp id 1L, CancellationToken.None).Result)
              first
              "the new leader (installed from a snapshot) answers the retry from the session"
          Expect.equal (text (back.GetAsync("s/k").Result)) "later" "and did not apply it again"
          // Every member restarts; the session is still there.
          let numbers = c.Nodes.Keys |> List.ofSeq
          for n in numbers do
              c.Stop n
          for n in numbers do
              c.Nodes[n] <- start (snappy (options c.Port n (c.Dir n) (if n = 1 then [] else [ 1 ])))
          c.WaitLeader 10.0 |> ignore
          use again = rawClient c
          Expect.equal
              (again.InsertOnceAsync("s/k", bytes "once", stamp id 1L, CancellationToken.None).Result)
              first
              "after a restart of every member"
          Expect.equal (text ((c.WaitLeader 5.0).GetAsync("s/k").Result)) "later" "still applied once"
      }

      test "a session expires by log time; a new write opens a new session, a cut-off retry is SessionExpired" {
          use c = cluster 1
          let node = c.WaitLeader 5.0
          let idle = (new Client([ IPAddress.Parse "127.0.0.1" ])).WithPort(c.Port).WithSessionTimeout(TimeSpan.FromSeconds 1.0)
          use _idle = disposing idle
          idle.InsertAsync("e/a", "1").Wait()
          let first = idle.SessionId
          Expect.isGreaterThan first 0L "a session was opened"
          // Log time moves only with writes stamped by the leader: wait past the timeout, then let someone write.
          Thread.Sleep 1500
          put node "e/other" "x"
          use raw = rawClient c
          let e =
              expectKind [ ErrorKind.SessionExpired ] "a retry in the expired session" (fun () ->
                  raw.InsertOnceAsync("e/a", bytes "1", stamp first 1L, CancellationToken.None).Wait())
          Expect.equal e.Outcome WriteOutcome.NotApplied "that attempt did nothing (the raw caller knows whether an earlier one ran)"
          idle.InsertAsync("e/a", "2").Wait()
          Expect.notEqual idle.SessionId first "the client opened a new session by itself"
          Expect.equal (idle.GetAsync<string>("e/a").Result) "2" "and the write took effect"
      }

      test "closing a session forgets it; the node's own writes and session-less calls use the node's session" {
          use c = cluster 3
          let leader = c.WaitLeader 5.0
          use raw = rawClient c
          let id = raw.OpenSessionAsync(TimeSpan.Zero).Result
          raw.InsertOnceAsync("c/k", bytes "1", stamp id 1L, CancellationToken.None).Wait()
          raw.CloseSessionAsync(id).Wait()
          expectKind [ ErrorKind.SessionExpired ] "a write in a closed session" (fun () ->
              raw.InsertOnceAsync("c/k", bytes "1", stamp id 2L, CancellationToken.None).Wait())
          |> ignore
          // A session-less write (a skiff-rs call) through a follower still works, at most once.
          let follower = c.Running |> List.find (fun s -> s.Id <> leader.Id)
          use plain = new SkiffGrpcClient([ follower.Address ])
          plain.InsertAsync("c/plain", bytes "p").Wait()
          Expect.equal (text (leader.GetAsync("c/plain").Result)) "p" "applied"
      }

      test "errors say whether a write may have taken effect" {
          use c = clusterWith 1.0 3
          let leader = c.WaitLeader 5.0
          let client =
              (new Client([ IPAddress.Parse "127.0.0.1"; IPAddress.Parse "127.0.0.2"; IPAddress.Parse "127.0.0.3" ]))
                  .WithPort(c.Port)
                  .WithTimeout(TimeSpan.FromSeconds 2.0)
          use _client = disposing client
          client.InsertAsync("o/k", "1").Wait()
          put leader "o/k" "opens the leader's own session"
          let invalid = expectKind [ ErrorKind.InvalidKey ] "an invalid key" (fun () -> leader.InsertAsync("", bytes "x").Wait())
          Expect.equal invalid.Outcome WriteOutcome.NotApplied "refused before proposing"
          let nobody = (new Client([ IPAddress.Parse "127.0.0.9" ])).WithPort(c.Port).WithTimeout(TimeSpan.FromSeconds 1.0)
          use _nobody = disposing nobody
          let unreachable =
              expectKind [ ErrorKind.Timeout; ErrorKind.ClientConnectFailed ] "no member reachable" (fun () ->
                  nobody.InsertAsync("o/k", "2").Wait())
          Expect.equal unreachable.Outcome WriteOutcome.NotApplied "never reached a member"
          // The leader alone: it proposes, and cannot commit.
          for n in c.Nodes.Keys |> List.ofSeq do
              if c.Nodes[n].Id <> leader.Id then
                  c.Stop n
          let lost =
              expectKind [ ErrorKind.Timeout; ErrorKind.NoQuorum; ErrorKind.NotLeader ] "a write without quorum" (fun () ->
                  leader.InsertAsync("o/k", bytes "3").Wait())
          Expect.equal lost.Outcome WriteOutcome.Unknown (sprintf "proposed, so it may still commit: %s" lost.Message)
      } ]

// ----- the SIGKILL counter test

/// Three `skiff serve` processes that can be killed and restarted on their data directories.
type private KillableCluster() =
    let port = nextPort ()
    let root = Path.Combine(Path.GetTempPath(), "skiff-once-" + Guid.NewGuid().ToString("N"))
    let procs = Collections.Generic.Dictionary<int, CliTests.ServeProcess>()
    let startNode n =
        procs[n] <-
            new CliTests.ServeProcess(
                CliTests.serveArgs n port (Path.Combine(root, sprintf "n%d" n)) (if n = 1 then None else Some "127.0.0.1")
            )
    let status =
        (new Client([ for n in 1..3 -> IPAddress.Parse(sprintf "127.0.0.%d" n) ])).WithPort(port).WithTimeout(TimeSpan.FromSeconds 1.0)
    member _.Port = port
    member _.Start() =
        startNode 1
        CliTests.waitUntil 30.0 "node 1 leads" (fun () ->
            try
                status.GetStatusAsync().Result.LeaderId.HasValue
            with _ ->
                false)
        startNode 2
        startNode 3
    member _.WaitFormed() =
        CliTests.waitUntil 60.0 "3 voters, all up, one leader" (fun () ->
            try
                let s = status.GetStatusAsync().Result
                s.LeaderId.HasValue
                && s.Members.Count = 3
                && s.Members |> Seq.forall (fun m -> m.Reachable && m.Voter && m.LeaderId = s.LeaderId)
            with _ ->
                false)
    /// The number of the member that leads, if one is known.
    member _.Leader() =
        try
            let s = status.GetStatusAsync().Result
            s.Members
            |> Seq.tryFind (fun m -> Nullable m.Id = s.LeaderId && m.Reachable)
            |> Option.map (fun m -> int ((m.Address.Split(':')[0]).Split('.')[3]))
        with _ ->
            None
    member _.Kill n =
        procs[n].Process.Kill()
        procs[n].Process.WaitForExit()
        (procs[n] :> IDisposable).Dispose()
    member _.Restart n = startNode n
    /// SIGSTOP / SIGCONT: the member stops answering without closing its connections, as a paused VM or a long GC.
    member _.Pause n = CliTests.signal procs[n].Process.Id 19
    member _.Resume n = CliTests.signal procs[n].Process.Id 18
    member _.Output n = procs[n].Output
    interface IDisposable with
        member _.Dispose() =
            for p in procs.Values do
                (p :> IDisposable).Dispose()
            status.DisposeAsync().AsTask().Wait()
            try
                Directory.Delete(root, true)
            with _ ->
                ()

let private counterTest =
    test "a counter incremented by compare-and-swap through followers stays exact while the leader is SIGKILLed" {
        let seed =
            match Environment.GetEnvironmentVariable "SKIFF_ONCE_SEED" with
            | null
            | "" -> Random.Shared.Next()
            | s -> int s
        let kills =
            match Environment.GetEnvironmentVariable "SKIFF_ONCE_KILLS" with
            | null
            | "" -> 6
            | s -> int s
        printfn "exactly-once kill test: seed=%d kills=%d (replay with SKIFF_ONCE_SEED=%d SKIFF_ONCE_KILLS=%d)" seed kills seed kills
        let rng = Random seed
        use cluster = new KillableCluster()
        cluster.Start()
        cluster.WaitFormed()
        let key = "counter"
        let acked = ConcurrentBag<string>() // the client was told: swapped
        let refused = ConcurrentBag<string>() // told: not swapped, or an error saying it did not take effect
        let unknown = ConcurrentBag<string>() // an error saying it may have taken effect
        let stop = new CancellationTokenSource()
        let parse (v: byte[] | null) : int * (byte[] | null) =
            match v with
            | null -> 0, null
            | v -> int ((Encoding.UTF8.GetString v).Split('|')[0]), v
        let client i =
            task {
                // Each client starts at a different member, so most calls go through a follower.
                let members = [ for k in 0..2 -> IPAddress.Parse(sprintf "127.0.0.%d" (1 + (i + k) % 3)) ]
                let c = (new Client(members)).WithPort(cluster.Port).WithTimeout(TimeSpan.FromSeconds 3.0)
                let mutable op = 0
                while not stop.IsCancellationRequested do
                    let! current =
                        task {
                            try
                                let! v = c.GetBytesAsync(key)
                                return Some(parse v)
                            with _ ->
                                return None
                        }
                    match current with
                    | None -> do! Task.Delay 20
                    | Some(count, bytesNow) ->
                        op <- op + 1
                        let token = sprintf "c%d-%d" i op
                        let next = Encoding.UTF8.GetBytes(sprintf "%d|%s" (count + 1) token)
                        try
                            let expected =
                                match bytesNow with
                                | null -> Nullable()
                                | b -> Nullable(ReadOnlyMemory b)
                            let! swapped = c.CompareAndSwapBytesAsync(key, expected, Nullable(ReadOnlyMemory next))
                            (if swapped then acked else refused).Add token
                        with
                        | :? SkiffException as e when e.Outcome = WriteOutcome.Unknown -> unknown.Add token
                        | :? SkiffException -> refused.Add token
                do! c.DisposeAsync()
            }
        let clients = [ for i in 0..7 -> client i ]
        let mutable killed = 0
        for _ in 1..kills do
            Thread.Sleep(800 + rng.Next 800) // the nemesis' schedule: time between faults, not a synchronisation
            match cluster.Leader() with
            | Some n ->
                cluster.Kill n
                killed <- killed + 1
                Thread.Sleep(200 + rng.Next 400)
                cluster.Restart n
            | None -> ()
        Thread.Sleep 1000
        stop.Cancel()
        Task.WaitAll(clients |> List.map (fun t -> t :> Task) |> Array.ofList, TimeSpan.FromSeconds 30.0) |> ignore
        cluster.WaitFormed()
        // Every value the counter ever held, in commit order, from the change history.
        use reader = new SkiffGrpcClient([ sprintf "127.0.0.1:%d" cluster.Port ])
        let final = reader.GetAsync(key).Result
        let finalCount, _ = parse (final: byte[] | null)
        use cts = new CancellationTokenSource(TimeSpan.FromSeconds 30.0)
        let chain = ResizeArray<string>()
        let e = reader.WatchAsync(key, 1L, cts.Token).GetAsyncEnumerator(cts.Token)
        while chain.Count < finalCount && e.MoveNextAsync().AsTask().Result do
            chain.Add(Encoding.UTF8.GetString(e.Current.Value.Value.Span))
        let counts = chain |> Seq.map (fun v -> int (v.Split('|')[0])) |> List.ofSeq
        let tokens = chain |> Seq.map (fun v -> v.Split('|')[1]) |> List.ofSeq
        printfn
            "exactly-once kill test: %d kills, %d increments acknowledged, %d refused, %d unknown (%d of them applied), counter %d"
            killed
            acked.Count
            refused.Count
            unknown.Count
            (tokens |> List.filter (fun t -> Seq.contains t unknown) |> List.length)
            finalCount
        Expect.equal counts [ 1..finalCount ] "the counter went up by one at each change"
        let twice = tokens |> List.countBy id |> List.filter (fun (_, n) -> n > 1)
        Expect.isEmpty twice "no increment applied twice"
        let inChain = Set.ofList tokens
        let lost = acked |> Seq.filter (fun t -> not (inChain.Contains t)) |> List.ofSeq
        Expect.isEmpty lost "every acknowledged increment is in the counter's history"
        let lied = refused |> Seq.filter inChain.Contains |> List.ofSeq
        Expect.isEmpty lied "no increment reported as not swapped (or not applied) took effect"
        Expect.equal
            finalCount
            (acked.Count + (unknown |> Seq.filter inChain.Contains |> Seq.length))
            "the counter equals the acknowledged increments plus the unknown ones that applied"
        Expect.isGreaterThan killed (kills / 2) "the leader was killed"
        Expect.isGreaterThan acked.Count 20 "the clients made progress"
    }

let private pausedLeaderTest =
    test "a write waiting on a paused leader moves to the new leader instead of waiting for its deadline" {
        use cluster = new KillableCluster()
        cluster.Start()
        cluster.WaitFormed()
        let leader = (cluster.Leader()).Value
        let others = [ 1..3 ] |> List.filter ((<>) leader)
        // Through the followers only, with a long deadline: before, such a write waited for all of it.
        let client =
            (new Client([ for n in others -> IPAddress.Parse(sprintf "127.0.0.%d" n) ]))
                .WithPort(cluster.Port)
                .WithTimeout(TimeSpan.FromSeconds 8.0)
        use _client = disposing client
        client.InsertAsync("p/k", "before").Wait()
        cluster.Pause leader
        try
            let watch = Diagnostics.Stopwatch.StartNew()
            client.InsertAsync("p/k", "during").Wait()
            printfn "write during a paused leader took %.2f s" watch.Elapsed.TotalSeconds
            Expect.isLessThan watch.Elapsed.TotalSeconds 4.0 "answered by the new leader well before the 8 s deadline"
            Expect.equal (client.GetAsync<string>("p/k").Result) "during" "and it took effect"
        finally
            cluster.Resume leader
        cluster.WaitFormed()
    }

let tests = testSequenced (testList "exactly-once" (sessionTests @ [ pausedLeaderTest; counterTest ]))
