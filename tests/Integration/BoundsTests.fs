/// Issue 13 (hardening), "nothing is unbounded": listings come in bounded pages, watches are capped per node,
/// a lagging follower catches up by appends however large its backlog's entries, and overload is refused with a
/// typed error while the leader's memory stays bounded.
module Skiff.Integration.BoundsTests

open System
open System.Diagnostics
open System.IO
open System.Net
open System.Threading
open System.Threading.Tasks
open Expecto
open Google.Protobuf
open Grpc.Core
open Grpc.Net.Client
open Skiff
open Skiff.Core
open Skiff.Net.Runtime
open Skiff.Net.Storage
open Skiff.Integration.RuntimeTests

let private rawClient (address: string) =
    let channel = GrpcChannel.ForAddress("http://" + address, GrpcChannelOptions(MaxReceiveMessageSize = Nullable(64 <<< 20)))
    channel, Skiff.Net.Protocol.Skiff.SkiffClient(channel)

let private callDeadline () = Nullable(DateTime.UtcNow.AddSeconds 30.0)

/// The `skiff-error` and `skiff-outcome` trailers of the RpcException `call` throws (fails if it succeeds).
let private rawError (what: string) (call: unit -> unit) : StatusCode * string * string =
    try
        call ()
        failtestf "%s: succeeded, expected an error" what
    with
    | :? AssertException -> reraise ()
    | :? RpcException as r ->
        r.StatusCode, string (r.Trailers.GetValue ErrorMapping.KindTrailer), string (r.Trailers.GetValue ErrorMapping.OutcomeTrailer)

let private ordinal (xs: string seq) = xs |> Seq.sortWith (fun a b -> String.CompareOrdinal(a, b)) |> List.ofSeq

/// Runs `work i` for i in 0..count-1 with at most `parallel` at a time.
let private inParallel (width: int) (count: int) (work: int -> Task) =
    use gate = new SemaphoreSlim(width)
    let all =
        [| for i in 0 .. count - 1 ->
               task {
                   do! gate.WaitAsync()
                   try
                       do! work i
                   finally
                       gate.Release() |> ignore
               }
               :> Task |]
    Task.WaitAll all

/// Runs `body` against a started one-node cluster (options adjusted by `configure`) and a library client of it.
let private withOneNode (name: string) (configure: SkiffServerOptions -> unit) (body: SkiffServer -> Client -> unit) =
    let port = nextPort ()
    let dir = Path.Combine(Path.GetTempPath(), sprintf "skiff-%s-%s" name (Guid.NewGuid().ToString("N")))
    let o = options port 1 dir []
    configure o
    let s = start o
    let client = (new Client([ IPAddress.Loopback ])).WithPort(port)
    try
        body s client
    finally
        client.DisposeAsync().AsTask().Wait()
        stop s
        Directory.Delete(dir, true)

// ------------------------------------------------------------------ paging

let private keyIndexTests =
    testList
        "key index pages"
        [ test "pages of keys and prefixes from any start agree with a sorted model (random keys, prefixes, starts, limits)" {
              let rng = Random 1313
              let alphabet = [| "a"; "b"; "ab"; "a/"; "b/c"; "\uffff"; "z" |]
              let word () = String.Join("", Array.init (rng.Next(1, 5)) (fun _ -> alphabet[rng.Next alphabet.Length]))
              for round in 1..200 do
                  let index = KeyIndex()
                  let keys = Collections.Generic.HashSet<string>(StringComparer.Ordinal)
                  for _ in 1 .. rng.Next(0, 60) do
                      let k = word ()
                      if rng.Next 4 = 0 && keys.Count > 0 then
                          let gone = Seq.item (rng.Next keys.Count) keys
                          keys.Remove gone |> ignore
                          index.Remove gone |> ignore
                      else if keys.Add k then
                          index.Add k
                  let prefix = if rng.Next 3 = 0 then "" else word ()
                  let startAfter: string | null = if rng.Next 3 = 0 then null else word ()
                  let limit = rng.Next(0, 8)
                  let after (s: string | null) (x: string) = isNull s || String.CompareOrdinal(x, s) > 0
                  let expected =
                      ordinal keys
                      |> List.filter (fun k -> k.StartsWith(prefix, StringComparison.Ordinal) && after startAfter k)
                      |> List.truncate limit
                  Expect.equal
                      (List.ofSeq (index.List(prefix, startAfter, limit)))
                      expected
                      (sprintf "round %d: keys '%s' after '%s' (%d)" round prefix startAfter limit)
                  let dirs = keys |> Seq.choose (fun k -> Option.ofObj (KeyIndex.DirectoryOf k)) |> Seq.distinct |> ordinal
                  let expectedDirs = dirs |> List.filter (after startAfter) |> List.truncate limit
                  Expect.equal
                      (List.ofSeq (index.Prefixes(startAfter, limit)))
                      expectedDirs
                      (sprintf "round %d: prefixes after '%s' (%d)" round startAfter limit)
          } ]

/// 10,000 keys in 2,500 directories on a one-node cluster whose largest page is 1,000.
let private pagingTests =
    testList
        "listing pages"
        [ test "10,000 keys: pages of 333, the walks, and a raw client asking for everything, zero or a negative limit" {
              withOneNode "pages" (fun o -> o.MaxListPage <- 1000) (fun s client ->
                  let keys = [| for i in 0..9999 -> sprintf "d%04d/k%d" (i / 4) (i % 4) |]
                  inParallel 64 keys.Length (fun i -> s.InsertAsync(keys[i], bytes "v"))
                  let sorted = ordinal keys
                  // Pages of 333 through the library: every key exactly once, in order, no page over the limit.
                  let seen = ResizeArray<string>()
                  let mutable next: string | null = null
                  let mutable pages = 0
                  let mutable go = true
                  while go do
                      let page = client.ListKeysAsync("d", 333, next).Result
                      Expect.isLessThanOrEqual page.Items.Count 333 "a page holds at most the limit"
                      seen.AddRange page.Items
                      pages <- pages + 1
                      next <- page.Next
                      go <- page.HasMore
                  Expect.equal (List.ofSeq seen) sorted "paging gives every key once, in order"
                  Expect.equal pages 31 "10,000 keys in pages of 333"
                  // A limit over the node's largest page gets that page, with a continuation.
                  let big = client.ListKeysAsync("", 5000).Result
                  Expect.equal big.Items.Count 1000 "at most the node's largest page"
                  Expect.equal big.Next sorted[999] "the continuation is the page's last key"
                  // The whole-listing calls walk the pages; the enumeration reads them as it goes.
                  Expect.equal (List.ofSeq (client.ListKeysAsync("").Result)) sorted "ListKeysAsync(prefix) walks every page"
                  let enumerated = ResizeArray<string>()
                  let e = client.EnumerateKeysAsync("d0").GetAsyncEnumerator()
                  while e.MoveNextAsync().AsTask().Result do
                      enumerated.Add e.Current
                  Expect.equal (List.ofSeq enumerated) (sorted |> List.filter (fun k -> k.StartsWith "d0")) "EnumerateKeysAsync"
                  let dirs = [ for d in 0..2499 -> sprintf "d%04d" d ]
                  Expect.equal (List.ofSeq (client.GetPrefixesAsync().Result)) dirs "GetPrefixesAsync walks every page"
                  let firstDirs = client.GetPrefixesAsync(10, "d0100").Result
                  Expect.equal (List.ofSeq firstDirs.Items) dirs[101..110] "a page of prefixes after one"
                  // A client of the proto (not the library): asking for everything, or sending no limit, gets one page.
                  let channel, raw = rawClient s.Address
                  use _ = channel
                  for limit in [ Int32.MaxValue; 0 ] do
                      let reply = raw.ListKeys(Skiff.Net.Protocol.ListKeysRequest(Prefix = "", Limit = limit), deadline = callDeadline ())
                      Expect.equal reply.Keys.Count 1000 (sprintf "limit %d: the node's largest page" limit)
                      Expect.isTrue reply.More (sprintf "limit %d: more follow" limit)
                  let prefixes = raw.GetPrefixes(Skiff.Net.Protocol.PrefixesRequest(), deadline = callDeadline ())
                  Expect.equal (prefixes.Prefixes.Count, prefixes.More) (1000, true) "prefixes without a limit: one page, more follow"
                  let last = raw.ListKeys(Skiff.Net.Protocol.ListKeysRequest(StartAfter = sorted[9990]), deadline = callDeadline ())
                  Expect.equal (List.ofSeq last.Keys, last.More) (sorted[9991..], false) "the last page says nothing follows"
                  let status, kind, _ =
                      rawError "a negative limit" (fun () ->
                          raw.ListKeys(Skiff.Net.Protocol.ListKeysRequest(Limit = -1), deadline = callDeadline ()) |> ignore)
                  Expect.equal (status, kind) (StatusCode.InvalidArgument, string ErrorKind.InvalidArgument) "a negative limit is refused"
                  let status, kind, _ =
                      rawError "a negative prefix limit" (fun () ->
                          raw.GetPrefixes(Skiff.Net.Protocol.PrefixesRequest(Limit = -7), deadline = callDeadline ()) |> ignore)
                  Expect.equal
                      (status, kind)
                      (StatusCode.InvalidArgument, string ErrorKind.InvalidArgument)
                      "a negative prefix limit is refused"
                  Expect.throwsT<ArgumentOutOfRangeException>
                      (fun () -> client.ListKeysAsync("", -1).Wait())
                      "the library refuses it before sending")
          } ]

// ------------------------------------------------------------------ watchers

let private watcherTests =
    testList
        "watchers"
        [ test "MaxWatchers: one watch over the cap is Overloaded, the others go on, and an ended watch frees its slot" {
              withOneNode "watchers" (fun o -> o.MaxWatchers <- 3) (fun s client ->
                  /// Opens a watch through the client and ends it at once: None, or the kind of the refusal.
                  let refusal () =
                      try
                          let sub = client.WatchAsync("w/").Result
                          sub.DisposeAsync().AsTask().Wait()
                          None
                      with e ->
                          match e.GetBaseException() with
                          | :? SkiffException as x -> Some x.Kind
                          | other -> raise other
                  let a = client.WatchAsync("w/").Result
                  let b = client.WatchAsync("w/").Result
                  // An embedded watch whose consumer will stop after one change (leaving the enumeration early).
                  let early = s.WatchAsync("w/", 0L, CancellationToken.None).GetAsyncEnumerator()
                  let firstChange = early.MoveNextAsync().AsTask()
                  Expect.equal (refusal ()) (Some ErrorKind.Overloaded) "a fourth watch is refused, typed"
                  // The watches already open are unaffected.
                  s.InsertAsync("w/1", bytes "one").Wait()
                  let next (sub: Subscriber) =
                      use cts = new CancellationTokenSource(TimeSpan.FromSeconds 10.0)
                      sub.RecvChangeAsync(cts.Token).Result.Key
                  Expect.equal (next a, next b) ("w/1", "w/1") "both client watches see the change"
                  Expect.isTrue (firstChange.Wait(TimeSpan.FromSeconds 10.0) && firstChange.Result) "the embedded watch sees it"
                  Expect.equal early.Current.Key "w/1" "the embedded watch's change"
                  // Its consumer stops: the slot is free at once (the watch is forgotten, not left to fill its buffer).
                  early.DisposeAsync().AsTask().Wait()
                  let c = client.WatchAsync("w/").Result
                  Expect.equal (refusal ()) (Some ErrorKind.Overloaded) "full again with the new watch"
                  // A client's watch that ends frees its slot once the member sees its stream end.
                  a.DisposeAsync().AsTask().Wait()
                  waitUntil 10.0 "the ended client watch's slot is free" (fun () -> refusal () = None)
                  s.InsertAsync("w/2", bytes "two").Wait()
                  Expect.equal (next b, next c) ("w/2", "w/2") "the remaining watches go on"
                  b.DisposeAsync().AsTask().Wait()
                  c.DisposeAsync().AsTask().Wait())
          } ]

// ------------------------------------------------------------------ a lagging follower

/// MiB of 1 MiB values the follower falls behind by: the issue's 200 by default (about 16 s here), or
/// `SKIFF_CATCHUP_MIB`. It must exceed the leader's in-memory window (64 MiB) for the test to read from storage at
/// all: below it the entries are sent from memory. Before the loader's byte cap, 200 MiB did not catch up in 60 s
/// (each append of 1 MiB loaded 64 MiB); with it, 10 s.
let private catchUpMiB () =
    match Environment.GetEnvironmentVariable "SKIFF_CATCHUP_MIB" with
    | null
    | "" -> 200
    | text -> int text

let private catchUpTests =
    testList
        "catch-up"
        [ test "a follower stopped while the others took N MiB of 1 MiB values catches up by appends within 60 s" {
              let mib = catchUpMiB ()
              // Snapshots by entry count only (as before SnapshotBytes): what is measured is the append path from
              // storage, which a snapshot every 8 MiB would otherwise replace for a follower this far behind.
              use c = clusterOf 5.0 (fun _ o -> o.Raft <- { RaftCell.DefaultOptions with SnapshotBytes = Int64.MaxValue }) 3
              let leader = c.WaitLeader 10.0
              let behind = c.Nodes.Keys |> Seq.find (fun n -> (c.Node n).Id <> leader.Id)
              c.Stop behind
              let value = Array.init KeyRules.DefaultMaxValueBytes byte
              let written = Stopwatch.StartNew()
              inParallel 4 mib (fun i -> leader.InsertAsync(sprintf "big/%04d" i, value))
              // Each write returned once applied on the member that proposed it: the leader, or the one it was
              // forwarded to if leadership moved under the load (then the first leader may not have applied it yet).
              let target = c.Running |> Seq.map (fun s -> s.AppliedIndex) |> Seq.max
              eprintfn "catch-up: %d MiB written in %.1f s; restarting the follower" mib written.Elapsed.TotalSeconds
              let caughtUp = Stopwatch.StartNew()
              let back = c.Start(behind, [])
              waitUntil 60.0 (sprintf "the follower applied up to %d" target) (fun () -> back.AppliedIndex >= target)
              eprintfn "catch-up: %d MiB behind, caught up in %.1f s" mib caughtUp.Elapsed.TotalSeconds
              Expect.equal (snapshotIndexOn (c.Dir behind)) 0L "it caught up by appends, not from a snapshot"
              let last = back.GetAsync(sprintf "big/%04d" (mib - 1), ReadConsistency.Stale).Result
              Expect.equal (nonNull last) value "the last value arrived whole"
              for s in c.Running do
                  Expect.isNull s.FatalError (sprintf "node at %s did not fail-stop" s.Address)
          } ]

// ------------------------------------------------------------------ queues and overload

let private admissionTests =
    testList
        "admission"
        [ test "the inbox's budget refuses requests with Overloaded and drops peer messages; backlogs refuse new entries only" {
              let inbox = QueueBudget(2, 1000L)
              let writer = QueueBudget(Int32.MaxValue, 100L)
              let applier = QueueBudget(Int32.MaxValue, 100L)
              let admission = Admission(inbox, writer, applier)
              let overloaded (f: unit -> int64) =
                  try
                      f () |> ignore
                      None
                  with :? SkiffException as e ->
                      Some(e.Kind, e.Outcome)
              let a = admission.Request 10L
              let b = admission.Request 0L
              Expect.equal
                  (overloaded (fun () -> admission.Request 0L))
                  (Some(ErrorKind.Overloaded, WriteOutcome.NotApplied))
                  "a third item"
              let id = Guid.NewGuid()
              let appendOf entries =
                  { From = id
                    To = id
                    Message =
                      Message.Append
                          { Term = 1L; Leader = id; PrevLogIndex = 0L; PrevLogTerm = 0L; Entries = entries; LeaderCommit = 0L; Round = 0L } }
              let heartbeat = appendOf []
              Expect.isFalse (fst (admission.PeerMessage heartbeat)) "a peer message over the budget is dropped"
              admission.Leave a
              admission.Leave b
              Expect.equal (inbox.Items, inbox.Bytes) (0, 0L) "counted out"
              writer.Add 100L
              Expect.equal
                  (overloaded (fun () -> admission.Request 10L))
                  (Some(ErrorKind.Overloaded, WriteOutcome.NotApplied))
                  "a proposal while the writer is behind"
              let read = admission.Request 0L
              admission.Leave read
              let entry = { Index = 1L; Term = 1L; Payload = Payload.Command [| 1uy |] }
              let append = appendOf [ entry ]
              Expect.isFalse (fst (admission.PeerMessage append)) "new entries while the writer is behind are dropped"
              let ok, bytes = admission.PeerMessage heartbeat
              Expect.isTrue ok "a heartbeat still enters"
              admission.Leave bytes
              writer.Remove 100L
              Expect.isTrue (fst (admission.PeerMessage append)) "entries enter once the writer caught up"
              Expect.equal admission.DroppedPeerMessages 2L "two drops counted"
          } ]

/// The peak of the process's live managed heap (after a full collection: LOH garbage from large values would
/// otherwise count until the next gen-2 GC) and of its working set, sampled every 250 ms while `run` runs.
let private peakMemoryDuring (run: unit -> unit) : int64 * int64 =
    let mutable heap = 0L
    let mutable working = 0L
    use stopSampling = new CancellationTokenSource()
    let sampler =
        Task.Run(fun () ->
            use me = Process.GetCurrentProcess()
            while not stopSampling.IsCancellationRequested do
                me.Refresh()
                heap <- max heap (GC.GetTotalMemory true)
                working <- max working me.WorkingSet64
                Thread.Sleep 250) // a sampling period, not a synchronisation
    run ()
    stopSampling.Cancel()
    sampler.Wait()
    heap, working

/// The overload test's bound on the growth of the test process's live managed heap (three members and 64 writers in
/// one process): what the members keep by design, and nothing for what they refused. Each member's store holds
/// every value written on the managed heap (FasterKV<string, byte[]> keeps values as objects while their records
/// are in its in-memory region), and since snapshots come every 8 MiB (issue 16) the store's compaction and
/// checkpoints hold a second copy for a while, so 2 × 3 × the bytes written; each member may hold its queues' budgets in full (the
/// inbox's, the disk writer's and the applier's backlogs), 64 MiB of log pages and up to 64 MiB of recent entries
/// in its window; 256 MiB covers gRPC's buffers and the writers' requests. None of it grows with what is attempted.
/// Measured after the storage changes: 988 MiB of growth for 62 MiB written (288 attempted, CI under load) and
/// 1,661 MiB for 156 MiB written (610 attempted); the memory a stored byte costs is issue 16's to cut.
let private heapGrowthBound (written: int64) =
    let budgets = Admission.DefaultMaxInboxBytes + StorageWriter.DefaultMaxBacklogBytes + Applier.DefaultMaxBacklogBytes
    6L * written + 3L * (budgets + (128L <<< 20)) + (256L <<< 20)

let private overloadTests =
    testList
        "overload"
        [ test
              "64 raw writers past a 4 MiB uncommitted cap: Overloaded (not applied), no member stops, the heap grows by what is stored only" {
              let port = nextPort ()
              let dirs = [ for _ in 1..3 -> Path.Combine(Path.GetTempPath(), "skiff-overload-" + Guid.NewGuid().ToString("N")) ]
              let raft = { Options.defaults with MaxUncommittedBytes = 4L <<< 20 }
              let startNode n join =
                  let o = options port n dirs[n - 1] join
                  o.Raft <- raft
                  o.WatchHistory <- 0 // a watch history holds values it keeps by design (100,000 by default): not what is measured

                  start o
              let first = startNode 1 []
              waitUntil 10.0 "node 1 leads" (fun () -> first.Role = Role.Leader)
              let nodes = [ first; startNode 2 [ 1 ]; startNode 3 [ 1 ] ]
              try
                  waitUntil 20.0 "3 voters" (fun () -> first.Members.Values |> Seq.filter (fun struct (_, v) -> v) |> Seq.length = 3)
                  let channel, raw = rawClient first.Address
                  use _ = channel
                  let value = UnsafeByteOperations.UnsafeWrap(ReadOnlyMemory(Array.create (256 <<< 10) 7uy))
                  let ok = Collections.Concurrent.ConcurrentBag<string>()
                  let refused = Collections.Concurrent.ConcurrentBag<string>()
                  let other = Collections.Concurrent.ConcurrentBag<string>()
                  let wrongOutcome = Collections.Concurrent.ConcurrentBag<string>()
                  let mutable attempted = 0L
                  let details = Collections.Concurrent.ConcurrentDictionary<string, string>()
                  let until = DateTime.UtcNow.AddSeconds 8.0
                  let writer (w: int) =
                      task {
                          let mutable i = 0
                          while DateTime.UtcNow < until do
                              let key = sprintf "o/%02d/%05d" w i
                              i <- i + 1
                              Interlocked.Add(&attempted, int64 value.Length) |> ignore
                              try
                                  let! _ =
                                      raw.InsertAsync(
                                          Skiff.Net.Protocol.InsertRequest(Key = key, Value = value),
                                          deadline = callDeadline ()
                                      )
                                  ok.Add key
                              with :? RpcException as e ->
                                  if e.Trailers.GetValue ErrorMapping.KindTrailer = string ErrorKind.Overloaded then
                                      refused.Add key
                                      details[key] <- e.Status.Detail
                                      if
                                          e.StatusCode <> StatusCode.ResourceExhausted
                                          || e.Trailers.GetValue ErrorMapping.OutcomeTrailer <> "not-applied"
                                      then
                                          wrongOutcome.Add(
                                              sprintf "%s: %O %s" key e.StatusCode (e.Trailers.GetValue ErrorMapping.OutcomeTrailer)
                                          )
                                  else
                                      other.Add(sprintf "%s: %s" key e.Status.Detail)
                      }
                      :> Task
                  let baseline = GC.GetTotalMemory true
                  let termBefore = first.Term
                  let heap, working = peakMemoryDuring (fun () -> Task.WaitAll [| for w in 0..63 -> writer w |])
                  // Leadership moving under the load is what lets a resend meet a full cap (RouterOutcomeTests).
                  eprintfn "overload: term %d before, %d after" termBefore (nodes |> List.map (fun s -> s.Term) |> List.max)
                  eprintfn
                      "overload: %d MiB attempted by 64 writers in 8 s: %d written, %d Overloaded, %d other errors; live heap %d MiB before, peak %d MiB; peak working set %d MiB"
                      (attempted >>> 20)
                      ok.Count
                      refused.Count
                      other.Count
                      (baseline >>> 20)
                      (heap >>> 20)
                      (working >>> 20)
                  Expect.isGreaterThan refused.Count 0 "the writers pushed past the cap and were refused"
                  Expect.isGreaterThan ok.Count 0 "writes went on between refusals"
                  Expect.isEmpty wrongOutcome "every Overloaded is ResourceExhausted and not-applied"
                  Expect.isEmpty other "no other errors"
                  for s in nodes do
                      Expect.isNull s.FatalError (sprintf "node at %s did not fail-stop" s.Address)
                  // Nothing refused was applied; everything acknowledged was, on every member.
                  let stored = Collections.Generic.HashSet<string>(first.ListKeysAsync("o/").Result, StringComparer.Ordinal)
                  for k in refused |> Seq.filter stored.Contains |> Seq.truncate 5 do
                      eprintfn "refused but applied %s: %s" k details[k]
                  Expect.isEmpty (refused |> Seq.filter stored.Contains |> List.ofSeq) "no refused write was applied"
                  Expect.isEmpty (ok |> Seq.filter (stored.Contains >> not) |> List.ofSeq) "every acknowledged write was applied"
                  let target = first.AppliedIndex
                  waitUntil 20.0 "every member applied everything" (fun () -> nodes |> List.forall (fun s -> s.AppliedIndex >= target))
                  let bound = heapGrowthBound (int64 ok.Count * int64 value.Length)
                  Expect.isLessThan
                      (heap - baseline)
                      bound
                      (sprintf "live heap growth %d MiB under %d MiB" ((heap - baseline) >>> 20) (bound >>> 20))
              finally
                  for s in nodes do
                      stop s
                  for d in dirs do
                      try
                          Directory.Delete(d, true)
                      with _ ->
                          ()
          } ]

let tests =
    testSequenced
    <| testList "Bounds" [ keyIndexTests; pagingTests; watcherTests; catchUpTests; admissionTests; overloadTests ]
