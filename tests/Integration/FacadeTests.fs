/// The public C# facade as an application uses it: Builder, SkiffNode, Client, Subscriber, Rx, typed values and
/// the clear errors promised for bad input.
module Skiff.Integration.FacadeTests

open System
open System.IO
open System.Net
open System.Threading
open System.Threading.Tasks
open Expecto
open Skiff
open Skiff.Hosting
open Microsoft.Extensions.DependencyInjection
open Microsoft.Extensions.Hosting

type Alice = { Name: string; Age: int }

let private tempDir () = Path.Combine(Path.GetTempPath(), "skiff-facade-" + Guid.NewGuid().ToString("N"))

let private ip n = IPAddress.Parse(sprintf "127.0.0.%d" n)

/// A started single-node cluster on a fresh port; disposed (and its directory removed) by the caller's `use`.
type private OneNode() =
    let port = RuntimeTests.nextPort ()
    let dir = tempDir ()
    let node = Builder().SetDir(dir).Bind(ip 1).Port(port).Build()
    do
        node.StartAsync().Wait()
        node.WaitForLeaderAsync(TimeSpan.FromSeconds 10.0).Wait()
    member _.Node = node
    member _.Port = port
    interface IDisposable with
        member _.Dispose() =
            node.DisposeAsync().AsTask().Wait()
            try
                Directory.Delete(dir, true)
            with _ ->
                ()

/// Runs `f` and returns the SkiffException it throws (unwrapping task aggregation), failing if it throws none.
let private expectSkiff (what: string) (f: unit -> Task) : SkiffException =
    let error =
        try
            f().GetAwaiter().GetResult()
            None
        with :? SkiffException as e ->
            Some e
    match error with
    | Some e -> e
    | None -> failtestf "%s: expected a SkiffException, got success" what

let private expectKind (kind: ErrorKind) (what: string) (f: unit -> Task) =
    let e = expectSkiff what f
    Expect.equal e.Kind kind (sprintf "%s: %s" what e.Message)

let private run (t: Task) = t.GetAwaiter().GetResult()
let private get (t: Task<'T>) = t.GetAwaiter().GetResult()

let tests =
    testSequenced
    <| testList
        "Facade"
        [ test "an embedded node stores typed values without a client" {
              use one = new OneNode()
              let node = one.Node
              run (node.InsertAsync("users/alice", { Name = "Alice"; Age = 30 }))
              let back = get (node.GetAsync<Alice>("users/alice"))
              Expect.equal back { Name = "Alice"; Age = 30 } "the record comes back"
              Expect.isNull (box (get (node.GetAsync<Alice>("users/bob")))) "an absent key gives default(T)"
              Expect.equal (get (node.GetAsync<Nullable<int>>("nothing"))) (Nullable()) "int? tells absent from zero"
              run (node.RemoveAsync("users/alice"))
              run (node.RemoveAsync("users/alice")) // removing an absent key is fine
              Expect.isNull (box (get (node.GetAsync<Alice>("users/alice")))) "removed"
          }

          test "keys list by prefix and levels list as prefixes" {
              use one = new OneNode()
              let node = one.Node
              for k in [ "parent/foo"; "grandparent/parent/foo"; "parent/bar"; "top" ] do
                  run (node.InsertAsync(k, 1))
              Expect.sequenceEqual (get (node.ListKeysAsync("parent/"))) [ "parent/bar"; "parent/foo" ] "keys under parent/"
              Expect.sequenceEqual (get (node.GetPrefixesAsync())) [ "grandparent/parent"; "parent" ] "prefixes"
              run (node.RemoveAsync("grandparent/parent/foo"))
              Expect.sequenceEqual (get (node.GetPrefixesAsync())) [ "parent" ] "a prefix goes with its last key"
          }

          test "compare-and-swap swaps only on a match" {
              use one = new OneNode()
              let node = one.Node
              run (node.InsertAsync("k", 1))
              Expect.isFalse (get (node.CompareAndSwapAsync("k", 2, 3))) "2 is not the value"
              Expect.isTrue (get (node.CompareAndSwapAsync("k", 1, 3))) "1 is"
              Expect.equal (get (node.GetAsync<int>("k"))) 3 "swapped"
              Expect.isTrue
                  (get (node.CompareAndSwapBytesAsync("new", Nullable(), Nullable(ReadOnlyMemory(Text.Encoding.UTF8.GetBytes "x")))))
                  "absent expected creates"
          }

          test "a value that is not a T is DeserializeFailed" {
              use one = new OneNode()
              run (one.Node.InsertAsync("k", "not a number"))
              expectKind ErrorKind.DeserializeFailed "get as int" (fun () -> one.Node.GetAsync<int>("k"))
          }

          test "one key rule set: the facade, the server's storage and Skiff.Core agree on every key" {
              // Before the rules moved to Skiff.Core the facade let a NUL through (the storage refused it) and the
              // storage took an unpaired surrogate (the facade refused it).
              let keys =
                  [ ""
                    "a"
                    "a/b/c"
                    "a\u0000b"
                    String([| 'b'; char 0xD800; 'k' |])
                    String('k', 4096)
                    String('k', 4097)
                    String('\u00e9', 2048)
                    String('\u00e9', 2049)
                    "/"
                    "trailing/" ]
              let refuses (validate: string -> unit) key =
                  try
                      validate key
                      false
                  with :? SkiffException as e when e.Kind = ErrorKind.InvalidKey ->
                      true
              for key in keys do
                  let core = (Skiff.Core.Keys.problem key).IsSome
                  Expect.equal (refuses KeyRules.ValidateKey key) core (sprintf "facade and core on a key of %d chars" key.Length)
                  Expect.equal
                      (refuses Skiff.Net.Storage.KvStateMachine.ValidateKey key)
                      core
                      (sprintf "storage and core on a key of %d chars" key.Length)
              Expect.isSome (Skiff.Core.Keys.problem "a\u0000b") "NUL is reserved for the storage's own records"
              Expect.isSome (Skiff.Core.Keys.problem (String([| 'b'; char 0xD800; 'k' |]))) "an unpaired surrogate is refused"
          }

          test "bad input is refused before anything is stored" {
              use one = new OneNode()
              let node = one.Node
              expectKind ErrorKind.InvalidKey "empty key" (fun () -> node.InsertAsync("", 1))
              expectKind ErrorKind.InvalidKey "long key" (fun () -> node.InsertAsync(String('k', 4097), 1))
              expectKind ErrorKind.InvalidKey "unpaired surrogate" (fun () -> node.InsertAsync(String([| 'b'; char 0xD800; 'k' |]), 1))
              expectKind ErrorKind.ValueTooLarge "2 MiB value" (fun () ->
                  node.InsertBytesAsync("big", ReadOnlyMemory(Array.zeroCreate<byte>(2 <<< 20))))
              Expect.isEmpty (get (node.ListKeysAsync(""))) "nothing was stored"
              expectKind ErrorKind.InvalidAddress "port -1" (fun () -> Task.Run(fun () -> Builder().Port(-1).Build() |> ignore))
              expectKind ErrorKind.InvalidArgument "negative timeout" (fun () ->
                  Task.Run(fun () -> Builder().WithTimeout(TimeSpan.FromSeconds -1.0).Build() |> ignore))
              expectKind ErrorKind.InvalidAddress "no client addresses" (fun () -> Task.Run(fun () -> new Client([]) |> ignore))
          }

          test "a client talks to a node over gRPC, and a watch sees what commits after it returns" {
              use one = new OneNode()
              let client = (new Client([ ip 1 ])).WithPort(one.Port)
              try
                  run (client.ConnectAsync())
                  let sub = get (client.WatchAsync("users/"))
                  run (client.InsertAsync("users/alice", { Name = "Alice"; Age = 30 }))
                  run (client.InsertAsync("other/x", 1))
                  run (client.RemoveAsync("users/alice"))
                  let struct (key, value) = get (sub.RecvAsync<Alice>())
                  Expect.equal key "users/alice" "the insert under the prefix"
                  Expect.equal value { Name = "Alice"; Age = 30 } "with its value"
                  let deleted = get (sub.RecvChangeAsync())
                  Expect.equal deleted.Kind ChangeKind.Remove "then the delete; other/x was filtered out"
                  Expect.isTrue (deleted.Index > 0L) "changes carry their index"
                  run (sub.DisposeAsync().AsTask())
                  expectKind ErrorKind.StreamClosed "recv after dispose" (fun () -> sub.RecvChangeAsync() :> Task)
                  let members = get (client.GetClusterAsync())
                  Expect.equal members[one.Node.Id] (ip 1) "the cluster map names the node by id"
              finally
                  run (client.DisposeAsync().AsTask())
          }

          test "a client with no node to talk to fails ClientConnectFailed" {
              let client = (new Client([ ip 9 ])).WithPort(RuntimeTests.nextPort ()).WithTimeout(TimeSpan.FromSeconds 2.0)
              expectKind ErrorKind.ClientConnectFailed "connect" (fun () -> client.ConnectAsync())
          }

          test "node.Changes streams every applied change in commit order" {
              use one = new OneNode()
              let seen = Collections.Concurrent.ConcurrentQueue<Change>()
              use _ = one.Node.Changes.Subscribe(fun c -> seen.Enqueue c)
              for i in 1..20 do
                  run (one.Node.InsertAsync(sprintf "k/%02d" i, i))
              RuntimeTests.waitUntil 5.0 "20 changes observed" (fun () -> seen.Count >= 20)
              let changes = List.ofSeq seen
              Expect.sequenceEqual (changes |> List.map (fun c -> c.Key)) [ for i in 1..20 -> sprintf "k/%02d" i ] "in order"
              Expect.isTrue (changes |> List.pairwise |> List.forall (fun (a, b) -> a.Index < b.Index)) "indexes increase"
              Expect.equal (changes |> List.last |> fun c -> c.ValueAs<int>()) 20 "values decode"
          }

          test "a cancelled call throws OperationCanceledException, not a timeout" {
              use one = new OneNode()
              use cts = new CancellationTokenSource()
              cts.Cancel()
              Expect.throwsT<OperationCanceledException> (fun () -> run (one.Node.InsertAsync("k", 1, cts.Token))) "cancelled"
          }

          test "AddSkiff runs the node with the host and serves IKeyValueStore" {
              let port = RuntimeTests.nextPort ()
              let dir = tempDir ()
              let builder = Host.CreateApplicationBuilder([||])
              builder.Services.AddSkiff(fun o ->
                  o.DataDirectory <- dir
                  o.Address <- ip 1
                  o.Port <- port)
              |> ignore
              use host = builder.Build()
              run (host.StartAsync())
              try
                  let node = host.Services.GetRequiredService<SkiffNode>()
                  run (node.WaitForLeaderAsync(TimeSpan.FromSeconds 10.0))
                  let store = host.Services.GetRequiredService<IKeyValueStore>()
                  run (store.InsertAsync("hosted", 42))
                  Expect.equal (get (store.GetAsync<int>("hosted"))) 42 "the store is the node"
              finally
                  run (host.StopAsync())
                  try
                      Directory.Delete(dir, true)
                  with _ ->
                      ()
          }

          test "the Skiff meter publishes term, role and indexes" {
              use one = new OneNode()
              run (one.Node.InsertAsync("m", 1))
              let seen = Collections.Concurrent.ConcurrentDictionary<string, int64>()
              use listener = new Diagnostics.Metrics.MeterListener()
              listener.InstrumentPublished <-
                  fun instrument l ->
                      if instrument.Meter.Name = Skiff.Diagnostics.SkiffMetrics.MeterName then
                          l.EnableMeasurementEvents instrument
              listener.SetMeasurementEventCallback<int64>(fun instrument value _ _ -> seen[instrument.Name] <- value)
              listener.SetMeasurementEventCallback<int>(fun instrument value _ _ -> seen[instrument.Name] <- int64 value)
              listener.Start()
              listener.RecordObservableInstruments()
              Expect.equal seen["skiff.role"] 2L "a single node leads"
              Expect.isGreaterThanOrEqual seen["skiff.term"] 1L "term"
              Expect.isGreaterThanOrEqual seen["skiff.applied_index"] 2L "the noop and the write are applied"
              Expect.isGreaterThanOrEqual seen["skiff.commit_index"] seen["skiff.applied_index"] "commit is at least applied"
          }

          test "writes are counted and timed on the Skiff meter, fsyncs too" {
              let doubles = Collections.Concurrent.ConcurrentDictionary<string, int>()
              let longs = Collections.Concurrent.ConcurrentDictionary<string, int64>()
              use listener = new Diagnostics.Metrics.MeterListener()
              listener.InstrumentPublished <-
                  fun instrument l ->
                      if instrument.Meter.Name = Skiff.Diagnostics.SkiffMetrics.MeterName then
                          l.EnableMeasurementEvents instrument
              listener.SetMeasurementEventCallback<float>(fun instrument _ _ _ ->
                  doubles.AddOrUpdate(instrument.Name, 1, (fun _ n -> n + 1)) |> ignore)
              listener.SetMeasurementEventCallback<int64>(fun instrument value _ _ ->
                  longs.AddOrUpdate(instrument.Name, value, (fun _ n -> n + value)) |> ignore)
              listener.Start()
              let count (d: Collections.Concurrent.ConcurrentDictionary<string, 'n>) name (zero: 'n) =
                  match d.TryGetValue name with
                  | true, v -> v
                  | _ -> zero
              use one = new OneNode()
              for i in 1..5 do
                  run (one.Node.InsertAsync(sprintf "w/%d" i, i))
              Expect.isGreaterThanOrEqual (count longs "skiff.proposals" 0L) 5L "five proposals counted"
              Expect.isGreaterThanOrEqual (count doubles "skiff.commit_latency" 0) 5 "five write latencies recorded"
              Expect.isGreaterThanOrEqual (count doubles "skiff.fsync_latency" 0) 1 "durable writes timed"
          }

          test "the leader reports each follower's lag" {
              let port = RuntimeTests.nextPort ()
              let dir1, dir2 = tempDir (), tempDir ()
              let node1 = Builder().SetDir(dir1).Bind(ip 1).Port(port).Build()
              let node2 = Builder().SetDir(dir2).Bind(ip 2).Port(port).JoinCluster([ ip 1 ]).Build()
              try
                  run (node1.StartAsync())
                  run (node1.WaitForLeaderAsync(TimeSpan.FromSeconds 10.0))
                  run (node2.StartAsync())
                  run (node1.InsertAsync("lag", 1))
                  RuntimeTests.waitUntil 10.0 "the leader tracks node 2 with no lag" (fun () ->
                      match node1.PeerLag().TryGetValue node2.Id with
                      | true, lag -> lag = 0L
                      | _ -> false)
                  Expect.isEmpty (node2.PeerLag()) "a follower reports no lags"
              finally
                  node2.DisposeAsync().AsTask().Wait()
                  node1.DisposeAsync().AsTask().Wait()
                  for d in [ dir1; dir2 ] do
                      try
                          Directory.Delete(d, true)
                      with _ ->
                          ()
          } ]
