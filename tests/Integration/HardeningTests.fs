/// Issue 13 (hardening): no request or peer message can stop a member, the host process keeps its signals, and a
/// fail-stop is visible (task, log, metric, exit code).
module Skiff.Integration.HardeningTests

open System
open System.Diagnostics
open System.Diagnostics.Metrics
open System.IO
open System.Net
open System.Runtime.InteropServices
open System.Threading
open System.Threading.Tasks
open Expecto
open Google.Protobuf
open Grpc.Core
open Grpc.Net.Client
open Microsoft.Extensions.Logging
open Skiff
open Skiff.Core
open Skiff.Net.Runtime
open Skiff.Integration.RuntimeTests

[<DllImport("libc", EntryPoint = "kill", SetLastError = true)>]
extern int private sysKill(int pid, int signal)

// ------------------------------------------------------------------ a raw gRPC client (not the library)

let private rawChannel (address: string) =
    GrpcChannel.ForAddress(
        "http://" + address,
        GrpcChannelOptions(MaxSendMessageSize = Nullable(), MaxReceiveMessageSize = Nullable(64 <<< 20))
    )

let private rawClient (channel: GrpcChannel) = Skiff.Net.Protocol.Skiff.SkiffClient(channel)

let private deadline () = Nullable(DateTime.UtcNow.AddSeconds 30.0)

/// Runs a raw call expected to fail with `kind` in the `skiff-error` trailer and one of `statuses`.
let private expectRawError (what: string) (kind: ErrorKind) (statuses: StatusCode list) (call: unit -> unit) =
    try
        call ()
        failtestf "%s: succeeded, expected %A" what kind
    with
    | :? AssertException -> reraise ()
    | e ->
        let rec rpc (e: exn) =
            match e with
            | :? RpcException as r -> Some r
            | :? AggregateException as a ->
                match a.InnerException with
                | null -> None
                | inner -> rpc inner
            | _ -> None
        match rpc e with
        | Some r ->
            Expect.contains statuses r.StatusCode (sprintf "%s: gRPC status (%s)" what r.Status.Detail)
            Expect.equal (r.Trailers.GetValue ErrorMapping.KindTrailer) (string kind) (sprintf "%s: skiff-error trailer (%O)" what r.Status)
        | None -> failtestf "%s: expected an RpcException, got %O" what e

let private tooLarge = [ StatusCode.InvalidArgument; StatusCode.ResourceExhausted ]

let private insertRequest (key: string) (size: int) =
    Skiff.Net.Protocol.InsertRequest(Key = key, Value = UnsafeByteOperations.UnsafeWrap(ReadOnlyMemory(Array.zeroCreate<byte> size)))

let private limitTests =
    testList
        "limits"
        [ test "a raw gRPC client's values at the limit, over it, 8, 32 and 63 MiB: typed errors, no member stops, writes go on" {
              use c = cluster 3
              let limit = KeyRules.DefaultMaxValueBytes
              let sizes = [ limit + 1; 8 <<< 20; 32 <<< 20; 63 <<< 20 ]
              let addresses = c.Running |> List.map (fun s -> s.Address)
              let channels = addresses |> List.map rawChannel
              try
                  // Every member (the leader, and followers that forward) refuses every over-limit write.
                  for channel, address in List.zip channels addresses do
                      let client = rawClient channel
                      client.Insert(insertRequest ("at-limit/" + address) limit, deadline = deadline ()) |> ignore
                      for size in sizes do
                          expectRawError (sprintf "insert of %d bytes at %s" size address) ErrorKind.ValueTooLarge tooLarge (fun () ->
                              client.Insert(insertRequest "big" size, deadline = deadline ()) |> ignore)
                  // Compare-and-swap: an over-limit new value, an over-limit expected value.
                  let client = rawClient channels.Head
                  for size in [ limit + 1; 8 <<< 20 ] do
                      let big = UnsafeByteOperations.UnsafeWrap(ReadOnlyMemory(Array.zeroCreate<byte> size))
                      expectRawError (sprintf "cas with a new value of %d bytes" size) ErrorKind.ValueTooLarge tooLarge (fun () ->
                          client.CompareAndSwap(Skiff.Net.Protocol.CompareAndSwapRequest(Key = "cas", Value = big), deadline = deadline ())
                          |> ignore)
                      expectRawError (sprintf "cas expecting %d bytes" size) ErrorKind.ValueTooLarge tooLarge (fun () ->
                          client.CompareAndSwap(
                              Skiff.Net.Protocol.CompareAndSwapRequest(Key = "cas", Expected = big, Value = ByteString.CopyFromUtf8 "x"),
                              deadline = deadline ()
                          )
                          |> ignore)
                  // Keys: empty, too long, with a NUL; for writes, reads and listings.
                  for key in [ ""; String('k', 4097); "a\u0000b" ] do
                      expectRawError
                          (sprintf "insert under a bad key of %d chars" key.Length)
                          ErrorKind.InvalidKey
                          [ StatusCode.InvalidArgument ]
                          (fun () -> client.Insert(insertRequest key 1, deadline = deadline ()) |> ignore)
                      expectRawError "get of a bad key" ErrorKind.InvalidKey [ StatusCode.InvalidArgument ] (fun () ->
                          client.Get(Skiff.Net.Protocol.GetRequest(Key = key), deadline = deadline ()) |> ignore)
                      expectRawError "delete of a bad key" ErrorKind.InvalidKey [ StatusCode.InvalidArgument ] (fun () ->
                          client.Delete(Skiff.Net.Protocol.DeleteRequest(Key = key), deadline = deadline ()) |> ignore)
                  // Nothing stopped, nothing over the limit was stored, and every member still takes writes.
                  for s in c.Running do
                      Expect.isNull s.FatalError (sprintf "node at %s did not fail-stop" s.Address)
                  for channel, address in List.zip channels addresses do
                      let client = rawClient channel
                      client.Insert(
                          Skiff.Net.Protocol.InsertRequest(Key = "after/" + address, Value = ByteString.CopyFromUtf8 "ok"),
                          deadline = deadline ()
                      )
                      |> ignore
                      let got = client.Get(Skiff.Net.Protocol.GetRequest(Key = "at-limit/" + address), deadline = deadline ())
                      Expect.equal got.Value.Length limit "the value at the limit was stored"
                      let big = client.Get(Skiff.Net.Protocol.GetRequest(Key = "big"), deadline = deadline ())
                      Expect.isFalse big.HasValue "no over-limit value was stored"
                  for s in c.Running do
                      waitUntil 10.0 "every write applied on every member" (fun () ->
                          addresses |> List.forall (fun a -> staleGet s ("after/" + a) = "ok"))
              finally
                  for ch in channels do
                      ch.Dispose()
          }

          test "a peer append carrying an entry larger than the log takes is dropped, not written: the member stays up" {
              use c = cluster 3
              let leader = c.WaitLeader 10.0
              put leader "before" "x"
              let follower = c.Running |> List.find (fun s -> s.Id <> leader.Id)
              waitUntil 10.0 "the follower caught up" (fun () -> follower.AppliedIndex = leader.AppliedIndex)
              let last = follower.CommitIndex
              let entry = { Index = last + 1L; Term = leader.Term; Payload = Payload.Command(Array.zeroCreate (5 <<< 20)) }
              let append =
                  { Term = leader.Term
                    Leader = leader.Id
                    PrevLogIndex = last
                    PrevLogTerm = leader.Term
                    Entries = [ entry ]
                    LeaderCommit = last
                    Round = 0L }
              let envelope =
                  nonNull (WireCodec.ToWire({ From = leader.Id; To = follower.Id; Message = Skiff.Core.Message.Append append }: Envelope))
              use channel = rawChannel follower.Address
              let peer = Skiff.Net.Protocol.Peer.PeerClient(channel)
              use call = peer.Stream(deadline = deadline ())
              call.RequestStream.WriteAsync(envelope).Wait()
              call.RequestStream.CompleteAsync().Wait()
              call.ResponseAsync.Wait()
              put leader "after" "y"
              waitUntil 10.0 "the follower applied a later write" (fun () -> staleGet follower "after" = "y")
              Expect.isNull follower.FatalError "the follower did not fail-stop"
          }

          test "a node's MaxValueBytes is its own limit, and one too large for the log is refused at build" {
              let dir = Path.Combine(Path.GetTempPath(), "skiff-it-" + Guid.NewGuid().ToString("N"))
              try
                  expectError [ ErrorKind.InvalidArgument ] "MaxValueBytes of 3 MiB (a CAS of two would not fit a 4 MiB page)" (fun () ->
                      let o = options (nextPort ()) 1 dir []
                      o.MaxValueBytes <- 3 <<< 20
                      (new SkiffServer(o)).ShutdownAsync().Wait())
                  let o = options (nextPort ()) 1 dir []
                  o.MaxValueBytes <- 1000
                  let s = start o
                  s.WaitForLeaderAsync(TimeSpan.FromSeconds 10.0).Wait()
                  use channel = rawChannel s.Address
                  let client = rawClient channel
                  client.Insert(insertRequest "k" 1000, deadline = deadline ()) |> ignore
                  expectRawError "1001 bytes over a 1000-byte limit" ErrorKind.ValueTooLarge tooLarge (fun () ->
                      client.Insert(insertRequest "k" 1001, deadline = deadline ()) |> ignore)
                  expectRawError "a request far over MaxReceiveMessageSize" ErrorKind.ValueTooLarge tooLarge (fun () ->
                      client.Insert(insertRequest "k" (1 <<< 20), deadline = deadline ()) |> ignore)
                  // The in-process API of the node checks the same limit.
                  expectError [ ErrorKind.ValueTooLarge ] "an in-process put over the limit" (fun () ->
                      s.InsertAsync("k", Array.zeroCreate 1001).Wait())
                  expectError [ ErrorKind.ValueTooLarge ] "an in-process compare-and-swap over the limit" (fun () ->
                      s.CompareAndSwapAsync("k", null, Array.zeroCreate 1001).Wait())
                  s.ShutdownAsync().Wait()
              finally
                  try
                      Directory.Delete(dir, true)
                  with _ ->
                      ()
          } ]

// ------------------------------------------------------------------ the host keeps its signals

/// The child process of the signal tests: `Integration.dll --embedded-node <dir> <port> <mode>`, an application
/// that embeds a node through the public Builder and prints READY once it serves. Mode `handle`: its own SIGTERM
/// handler (PosixSignalRegistration) and Ctrl-C handler cancel the signal's default action and wake the main thread,
/// which shuts the node down and returns 0. Mode `default`: the same handlers shut the node down and let the
/// signal's default action end the process (the usual pattern of a service that cleans up on SIGTERM and relies on
/// the runtime to exit; the exit code is then 128 + the signal).
let runEmbeddedChild (dir: string) (port: int) (mode: string) : int =
    let cancel = (mode = "handle")
    let stop = TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously)
    let mutable node: SkiffNode option = None
    let shutDown (signal: string) =
        match node with
        | Some n when not cancel ->
            n.DisposeAsync().AsTask().Wait()
            Console.Out.WriteLine("STOPPED " + signal + " " + string (n.Stopped.IsCompleted && isNull n.Stopped.Result))
            Console.Out.Flush()
        | _ -> ()
        stop.TrySetResult signal |> ignore
    // Mode `default` leaves Cancel as the runtime passes it (false): whatever another handler set stands.
    use _term =
        PosixSignalRegistration.Create(
            PosixSignal.SIGTERM,
            fun ctx ->
                if cancel then
                    ctx.Cancel <- true
                shutDown "SIGTERM"
        )
    Console.CancelKeyPress.Add(fun e ->
        if cancel then
            e.Cancel <- true
        shutDown "SIGINT")
    let n = Builder().SetDir(dir).Bind(IPAddress.Loopback).Port(port).Build()
    node <- Some n
    n.StartAsync().Wait()
    n.WaitForLeaderAsync(TimeSpan.FromSeconds 10.0).Wait()
    n.InsertAsync("k", "v").Wait()
    Console.Out.WriteLine "READY"
    Console.Out.Flush()
    let signal = stop.Task.Result
    if cancel then
        n.DisposeAsync().AsTask().Wait()
        Console.Out.WriteLine("STOPPED " + signal + " " + string (n.Stopped.IsCompleted && isNull n.Stopped.Result))
        Console.Out.Flush()
    else
        Thread.Sleep Timeout.Infinite // the signal's default action ends the process
    0

let private selfDll = Reflection.Assembly.GetExecutingAssembly().Location

/// Whether this process ignores `signal` (its SigIgn mask in /proc/self/status). A child inherits that: a shell
/// without job control starts background commands with SIGINT ignored, and a test runner started that way (`cmd &`
/// from a script) cannot deliver Ctrl-C to the node it starts.
let private ignored (signal: int) =
    File.ReadLines "/proc/self/status"
    |> Seq.tryFind (fun line -> line.StartsWith "SigIgn:")
    |> Option.exists (fun line -> (Convert.ToUInt64(line.Substring(7).Trim(), 16) >>> (signal - 1)) &&& 1UL = 1UL)

let private signalTest (mode: string) (signal: int) (name: string) =
    if ignored signal then
        skiptestf "%s is ignored by this process (started in the background by a shell without job control), and so by the child" name
    let dir = Path.Combine(Path.GetTempPath(), "skiff-it-" + Guid.NewGuid().ToString("N"))
    let psi = ProcessStartInfo("dotnet", RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    for a in [ selfDll; "--embedded-node"; dir; string (nextPort ()); mode ] do
        psi.ArgumentList.Add a
    use p = new Process(StartInfo = psi)
    let lines = Collections.Concurrent.ConcurrentQueue<string>()
    let keep (e: DataReceivedEventArgs) =
        match e.Data with
        | null -> ()
        | line -> lines.Enqueue line
    p.OutputDataReceived.Add keep
    p.ErrorDataReceived.Add keep
    p.Start() |> ignore
    p.BeginOutputReadLine()
    p.BeginErrorReadLine()
    let output () = String.Join("\n", lines)
    try
        try
            waitUntil 30.0 "the child's node serving (READY)" (fun () -> Seq.contains "READY" lines || p.HasExited)
            Expect.isFalse p.HasExited (sprintf "the child runs; output:\n%s" (output ()))
            sysKill (p.Id, signal) |> ignore
            let sw = Stopwatch.StartNew()
            let exited = p.WaitForExit(TimeSpan.FromSeconds 5.0)
            Expect.isTrue exited (sprintf "the child exits within 5 s of %s; output:\n%s" name (output ()))
            p.WaitForExit()
            // `handle` returns 0 from main; `default` ends by the signal's default action: 128 + the signal number.
            let expected = if mode = "handle" then 0 else 128 + signal
            Expect.equal p.ExitCode expected (sprintf "exit code after %s; output:\n%s" name (output ()))
            Expect.contains
                lines
                (sprintf "STOPPED %s True" name)
                (sprintf
                    "its own %s handler ran and the node reported stopped (%.1f s); output:\n%s"
                    name
                    sw.Elapsed.TotalSeconds
                    (output ()))
            // The node released its data directory.
            use _lock = Skiff.Net.Storage.NodeStorage.AcquireLock dir
            ()
        finally
            if not p.HasExited then
                p.Kill true
    finally
        try
            Directory.Delete(dir, true)
        with _ ->
            ()

let private hostTests =
    testList
        "host"
        [ test "an application that embeds a node and handles SIGTERM itself exits 0 within 5 s" { signalTest "handle" 15 "SIGTERM" }
          test "an application that embeds a node and handles Ctrl-C (SIGINT) itself exits 0 within 5 s" { signalTest "handle" 2 "SIGINT" }
          test "an application that embeds a node and lets SIGTERM end it (after its own handler) exits within 5 s" {
              signalTest "default" 15 "SIGTERM"
          }
          test "an application that embeds a node and lets Ctrl-C (SIGINT) end it (after its own handler) exits within 5 s" {
              signalTest "default" 2 "SIGINT"
          }
          test "a node leaves the thread pool's minimum alone unless asked" {
              ThreadPool.GetMinThreads() |> ignore
              let workers, io = ThreadPool.GetMinThreads()
              let dir = Path.Combine(Path.GetTempPath(), "skiff-it-" + Guid.NewGuid().ToString("N"))
              try
                  // Lower the minimum first (the test program raises it), so that a node raising it would show.
                  ThreadPool.SetMinThreads(Environment.ProcessorCount, io) |> ignore
                  let s = start (options (nextPort ()) 1 dir [])
                  let after, _ = ThreadPool.GetMinThreads()
                  Expect.equal after Environment.ProcessorCount "the minimum is unchanged"
                  s.ShutdownAsync().Wait()
              finally
                  ThreadPool.SetMinThreads(workers, io) |> ignore
                  try
                      Directory.Delete(dir, true)
                  with _ ->
                      ()
          } ]

// ------------------------------------------------------------------ fail-stop visible

/// Collects log records at Critical.
type private CriticalLog() =
    let records = Collections.Concurrent.ConcurrentQueue<string>()
    member _.Records = List.ofSeq records
    interface ILoggerProvider with
        member _.CreateLogger(_: string) =
            { new ILogger with
                member _.BeginScope(_) = null
                member _.IsEnabled(level) = level = LogLevel.Critical
                member _.Log(level, _, state, ex, formatter) =
                    if level = LogLevel.Critical then
                        records.Enqueue(formatter.Invoke(state, ex)) }
        member _.Dispose() = ()

/// Counts `skiff.fail_stops` measurements.
let private countFailStops () =
    let count = ref 0L
    let listener = new MeterListener()
    listener.InstrumentPublished <-
        fun instrument l ->
            if instrument.Meter.Name = "Skiff" && instrument.Name = "skiff.fail_stops" then
                l.EnableMeasurementEvents instrument
    listener.SetMeasurementEventCallback<int64>(fun _ value _ _ -> Interlocked.Add(&count.contents, value) |> ignore)
    listener.Start()
    listener, count

let private failStopTests =
    testList
        "fail-stop"
        [ test "a fail-stop completes SkiffNode.Stopped with its cause, logs at Critical, counts on the meter, releases the directory" {
              let dir = Path.Combine(Path.GetTempPath(), "skiff-it-" + Guid.NewGuid().ToString("N"))
              let log = new CriticalLog()
              use factory = LoggerFactory.Create(fun b -> b.AddProvider(log) |> ignore)
              let listener, count = countFailStops ()
              use _listener = listener
              try
                  let node = Builder().SetDir(dir).Bind(IPAddress.Loopback).Port(nextPort ()).WithLoggerFactory(factory).Build()
                  node.StartAsync().Wait()
                  node.WaitForLeaderAsync(TimeSpan.FromSeconds 10.0).Wait()
                  Expect.isFalse node.Stopped.IsCompleted "running"
                  node.InjectFatal(IOException "injected: the disk went away")
                  Expect.isTrue (node.Stopped.Wait(TimeSpan.FromSeconds 10.0)) "Stopped completes"
                  match node.Stopped.Result with
                  | null -> failtest "Stopped carries the cause"
                  | e ->
                      Expect.equal e.Kind ErrorKind.StorageError "the cause's kind"
                      Expect.stringContains e.Message "the disk went away" "the cause's message"
                  Expect.exists log.Records (fun r -> r.Contains "the disk went away") "logged at Critical"
                  listener.RecordObservableInstruments()
                  Expect.isGreaterThanOrEqual count.Value 1L "counted on skiff.fail_stops"
                  use _lock = Skiff.Net.Storage.NodeStorage.AcquireLock dir
                  node.DisposeAsync().AsTask().Wait()
              finally
                  try
                      Directory.Delete(dir, true)
                  with _ ->
                      ()
          }

          test "a failed log read while applying fail-stops instead of stalling" {
              let dir = Path.Combine(Path.GetTempPath(), "skiff-it-" + Guid.NewGuid().ToString("N"))
              try
                  let port = nextPort ()
                  // A tiny window of recent entries, so that a restart must read the log back to apply it.
                  let small () =
                      let o = options port 1 dir []
                      o.Raft <- { Options.defaults with WindowSize = 4 }
                      o
                  let s = start (small ())
                  s.WaitForLeaderAsync(TimeSpan.FromSeconds 10.0).Wait()
                  for i in 1..40 do
                      put s (sprintf "k%d" i) "v"
                  stop s
                  let s = new SkiffServer(small ())
                  let fault: exn | null = IOException "injected: read error"
                  s.LoadFault <- fun purpose -> if purpose.IsApply then fault else null
                  s.StartAsync().Wait()
                  Expect.isTrue (s.Stopped.Wait(TimeSpan.FromSeconds 15.0)) "the node fail-stops"
                  Expect.stringContains (string s.Stopped.Result) "read error" "the cause names the failed read"
                  s.ShutdownAsync().Wait()
              finally
                  try
                      Directory.Delete(dir, true)
                  with _ ->
                      ()
          }

          test "skiff serve exits 8 when its node fail-stops" {
              let dir = Path.Combine(Path.GetTempPath(), "skiff-it-" + Guid.NewGuid().ToString("N"))
              try
                  let code, out, err =
                      CliTests.skiff
                          [ "serve"
                            "--dir"
                            dir
                            "--bind"
                            "127.0.0.1"
                            "--port"
                            string (nextPort ())
                            "--new-cluster"
                            "--fault-after-ms"
                            "1500" ]
                  Expect.equal code 8 (sprintf "exit code; stdout:\n%s\nstderr:\n%s" out err)
                  Expect.stringContains out "injected fault" "the cause is logged"
                  Expect.stringContains out "fatal" "at the fatal level"
              finally
                  try
                      Directory.Delete(dir, true)
                  with _ ->
                      ()
          } ]

// ------------------------------------------------------------------ directory fsyncs

/// Records every directory StorageIo syncs while `f` runs (the hook is process-wide: filter by path).
let private syncedDuring (f: unit -> unit) =
    let synced = Collections.Concurrent.ConcurrentQueue<string>()
    let hook = Action<string>(fun d -> synced.Enqueue d)
    Skiff.Net.Storage.StorageIo.DirectorySynced <-
        Delegate.Combine(Skiff.Net.Storage.StorageIo.DirectorySynced, hook) :?> (Action<string> | null)
    try
        f ()
    finally
        Skiff.Net.Storage.StorageIo.DirectorySynced <-
            Delegate.Remove(Skiff.Net.Storage.StorageIo.DirectorySynced, hook) :?> (Action<string> | null)
    List.ofSeq synced

let private durabilityTests =
    testList
        "directory fsyncs"
        [ test "creating a node's storage syncs the new data directory, its parent, and the log and kv directories" {
              use root = new StorageSupport.TempDir("dirsync")
              let dir = root.Sub "a/node"
              let synced =
                  syncedDuring (fun () ->
                      use _storage = Skiff.Net.Storage.NodeStorage.Open(dir, StorageSupport.smallOptions ())
                      ())
              for d in [ root.Path; root.Sub "a"; dir; Path.Combine(dir, "log"); Path.Combine(dir, "kv") ] do
                  Expect.contains synced (Path.GetFullPath d) (sprintf "%s was synced" d)
          }

          test "the first commit into a new log segment syncs the log directory" {
              use root = new StorageSupport.TempDir("segsync")
              let dir = root.Sub "log"
              let options = Skiff.Net.Storage.RaftLogOptions(SegmentSizeBits = 16)
              use log = Skiff.Net.Storage.RaftLog.Open(dir, options)
              let segments () = Directory.GetFiles(dir, "*.wal").Length
              let mutable next = 1L
              let synced =
                  syncedDuring (fun () ->
                      while segments () < 3 && next < 20000L do
                          StorageSupport.append log (StorageSupport.entries next (next + 49L) 1L)
                          next <- next + 50L)
              Expect.isGreaterThanOrEqual (segments ()) 3 "the log spans three segment files"
              let logSyncs = synced |> List.filter (fun d -> d = Path.GetFullPath dir) |> List.length
              Expect.isGreaterThanOrEqual logSyncs 2 "the log directory was synced for each new segment"
          }

          test "saving a snapshot's configuration side file syncs snapmeta after the rename" {
              let port = nextPort ()
              let dir = Path.Combine(Path.GetTempPath(), "skiff-it-" + Guid.NewGuid().ToString("N"))
              try
                  // Started first: creating snapmeta syncs it too, and only the sync after a rename is under test.
                  let s = start (snappy (options port 1 dir []))
                  let synced =
                      try
                          s.WaitForLeaderAsync(TimeSpan.FromSeconds 10.0).Wait()
                          syncedDuring (fun () -> awaitSnapshotPast s dir 1L)
                      finally
                          stop s
                  Expect.contains synced (Path.GetFullPath(Path.Combine(dir, "snapmeta"))) "snapmeta was synced"
              finally
                  try
                      Directory.Delete(dir, true)
                  with _ ->
                      ()
          } ]

// ------------------------------------------------------------------ joining means voter

let private joinTests =
    testList
        "join"
        [ test "a joining node's StartAsync returns once it is a voter: stopping it leaves the other without quorum (20 runs)" {
              for run in 1..20 do
                  let port = nextPort ()
                  let d1 = Path.Combine(Path.GetTempPath(), "skiff-it-" + Guid.NewGuid().ToString("N"))
                  let d2 = Path.Combine(Path.GetTempPath(), "skiff-it-" + Guid.NewGuid().ToString("N"))
                  let n1 = Builder().SetDir(d1).Bind(IPAddress.Parse "127.0.0.1").Port(port).WithTimeout(TimeSpan.FromSeconds 1.5).Build()
                  let n2 =
                      Builder().SetDir(d2).Bind(IPAddress.Parse "127.0.0.2").Port(port).JoinCluster([ IPAddress.Parse "127.0.0.1" ]).Build()
                  try
                      n1.StartAsync().Wait()
                      n1.WaitForLeaderAsync(TimeSpan.FromSeconds 10.0).Wait()
                      n1.InsertAsync("before", "1").Wait()
                      n2.StartAsync().Wait()
                      let self = n2.GetMembersAsync().Result |> Seq.find (fun m -> m.Id = n2.Id)
                      Expect.isTrue self.Voter (sprintf "run %d: the joined node is a voter when StartAsync returns" run)
                      Expect.equal self.Address (IPAddress.Parse "127.0.0.2") "an IP member's address"
                      n2.ShutdownAsync().Wait()
                      let sw = Stopwatch.StartNew()
                      expectError
                          [ ErrorKind.NoQuorum; ErrorKind.Timeout ]
                          (sprintf "run %d: insert with the second of two voters stopped" run)
                          (fun () -> n1.InsertAsync("nope", "1").Wait())
                      Expect.isLessThan sw.Elapsed.TotalSeconds 4.0 "failed within the deadline"
                  finally
                      n2.DisposeAsync().AsTask().Wait()
                      n1.DisposeAsync().AsTask().Wait()
                      for d in [ d1; d2 ] do
                          try
                              Directory.Delete(d, true)
                          with _ ->
                              ()
          } ]

let tests = testSequenced <| testList "Hardening" [ limitTests; hostTests; failStopTests; durabilityTests; joinTests ]
