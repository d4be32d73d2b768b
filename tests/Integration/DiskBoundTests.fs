/// Disk use bounded by live data: the change history's byte limit, compaction of the key-value store, the page and
/// segment sizes a store keeps, and an embedded node under an overwrite workload.
module Skiff.Integration.DiskBoundTests

open System
open System.Collections.Generic
open System.IO
open System.Net
open System.Net.Sockets
open System.Text
open System.Threading
open System.Threading.Tasks
open Expecto
open Skiff
open Skiff.Core
open Skiff.Net.Runtime
open Skiff.Net.Storage
open Skiff.Integration.StorageSupport

let private bytesUnder (dir: string) =
    Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories)
    |> Seq.sumBy (fun f ->
        try
            FileInfo(f).Length
        with :? FileNotFoundException ->
            0L)

/// A 1,000-byte value that names its key and round, so a reader can tell which write it holds.
let private valueOf (key: int) (round: int) =
    let v = Array.create 1000 (byte (key + round))
    Encoding.ASCII.GetBytes(sprintf "%04d/%06d" key round).CopyTo(v, 0)
    v

let private put (key: int) (round: int) = LogCommand.Plain(Command.Insert(sprintf "k/%04d" key, valueOf key round))

let private apply (kv: KvStateMachine) (index: int64) (command: LogCommand) =
    let mutable change: Change | null = null
    kv.Apply(index, 1L, command, &change) |> ignore

let private historyFrom (kv: KvStateMachine) (from: int64) =
    let got = List<Change>()
    let mutable floor = 0L
    if kv.TryReadHistory(from, Int64.MaxValue, "", got, &floor) then
        Ok [ for c in got -> c.Index ]
    else
        Error floor

/// Copies a snapshot of `source` into a fresh state machine in `dir` through the snapshot stream.
let private installInto (source: KvStateMachine) (dir: string) (options: KvOptions) =
    use reader = source.OpenSnapshotReader(nonNull source.LatestSnapshot)
    let other = KvStateMachine.Open(dir, options)
    use installer = other.BeginInstall()
    let mutable chunk = reader.ReadChunk 65536
    while chunk.Length > 0 do
        installer.WriteChunk(ReadOnlySpan chunk)
        chunk <- reader.ReadChunk 65536
    installer.Complete()
    other

let private freePort () =
    let l = new TcpListener(IPAddress.Loopback, 0)
    l.Start()
    let port = (l.LocalEndpoint :?> IPEndPoint).Port
    l.Stop()
    port

/// Overwrites `keys` keys of 1,000-byte values `rounds` times through an embedded node (20 writers), sampling its
/// data directory every 20 ms: every sample must be at most `bound` bytes; then restarts it and reads every key back.
let private overwriteAndRestart (name: string) (keys: int) (rounds: int) (memory: int64 option) (bound: int64) =
    use tmp = new TempDir(name)
    let options () =
        let o = SkiffServerOptions(Bind = IPAddress.Loopback, Port = freePort (), DataDirectory = tmp.Sub "node")
        memory |> Option.iter (fun m -> o.StateMachineMemoryBytes <- m)
        o
    let writers = 20
    do
        let node = new SkiffServer(options ())
        use _ =
            { new IDisposable with
                member _.Dispose() = node.DisposeAsync().AsTask().Wait() }
        node.StartAsync().Wait()
        node.WaitForLeaderAsync(TimeSpan.FromSeconds 10.0).Wait()
        // Writer w owns the keys k with k % writers = w and writes them round by round, so the last value of every
        // key is known.
        let writer (w: int) =
            task {
                for round in 1..rounds do
                    for key in w..writers .. keys - 1 do
                        let! _ = node.InsertAsync(sprintf "k/%05d" key, valueOf key round)
                        ()
            }
        let writing = Task.WhenAll([| for w in 0 .. writers - 1 -> writer w :> Task |])
        let mutable peak, samples = 0L, 0
        while not writing.IsCompleted do
            peak <- max peak (bytesUnder (tmp.Sub "node"))
            samples <- samples + 1
            Thread.Sleep 20 // a sampling period, not a synchronisation: the loop ends when the writers do
        writing.Wait()
        printfn "%s: peak %.1f MB over %d samples while writing (bound %.1f MB)" name (float peak / 1e6) samples (float bound / 1e6)
        Expect.isGreaterThan samples 20 "sampled while the writers ran"
        Expect.isLessThanOrEqual peak bound "the data directory at its largest while writing"
        // Compaction and segment deletion follow snapshots; give them their chance to finish.
        waitUntil 30.0 "the data directory within its bound" (fun () -> bytesUnder (tmp.Sub "node") <= bound)
        node.ShutdownAsync().Wait()
    let node = new SkiffServer(options ())
    use _ =
        { new IDisposable with
            member _.Dispose() = node.DisposeAsync().AsTask().Wait() }
    node.StartAsync().Wait()
    node.WaitForLeaderAsync(TimeSpan.FromSeconds 10.0).Wait()
    for key in 0 .. keys - 1 do
        let got = node.GetAsync(sprintf "k/%05d" key).Result
        Expect.sequenceEqual got (valueOf key rounds) (sprintf "key %d after the restart" key)

let tests =
    testList
        "disk bound"
        [ testCase "compaction steps are short while the applier idles, longer once per interval of applying or while behind"
          <| fun () ->
              let budgets = List<TimeSpan>()
              let mutable behind, wanted, asks = false, false, 0
              let machine =
                  { new Skiff.Net.Storage.Ports.IStateMachine with
                      member _.AppliedIndex = 0L
                      member _.Skip(_, _) = ()
                      member _.Apply(_, _, _, change) =
                          change <- null
                          LogResult.Applied CommandResult.Done
                      member _.Get _ = null
                      member _.ListKeys(_, _, _) = [||] :> IReadOnlyList<string>
                      member _.GetPrefixes(_, _) = [||] :> IReadOnlyList<string>
                      member _.CompactionPending = true
                      member _.CompactionBehind = behind
                      member _.SnapshotWanted = wanted
                      member _.CompactStep(budget) = budgets.Add budget
                      member _.Dispose() = () }
              let housekeeping = Housekeeping(machine, (fun e -> failtestf "failed: %O" e), (fun () -> asks <- asks + 1))
              // Idle: back to back, each short, so a write that arrives (one client's next) waits little.
              for _ in 1..3 do
                  Expect.isTrue (housekeeping.Step()) "an idle step"
              Expect.isTrue (housekeeping.StepIfDue()) "no busy step right after one"
              Expect.equal budgets.Count 3 "not due yet"
              Expect.all budgets (fun b -> b <= TimeSpan.FromMilliseconds 0.25) "idle steps of at most 0.25 ms"
              // Busy: a longer step once an interval has passed since the last one.
              waitUntil 1.0 "an interval to pass" (fun () -> housekeeping.StepIfDue() && budgets.Count = 4)
              Expect.equal budgets[3] Housekeeping.BusyStep "a busy step"
              // Behind its pace: a busy step after every batch, however recent the last.
              behind <- true
              Expect.isTrue (housekeeping.StepIfDue()) "a step while behind"
              Expect.isTrue (housekeeping.StepIfDue()) "and another"
              Expect.equal budgets.Count 6 "a step after each batch while behind"
              Expect.equal budgets[5] Housekeeping.BusyStep "busy steps while behind"
              behind <- false
              // A snapshot is asked for once when the state machine starts wanting one, not at every step.
              Expect.equal asks 0 "nothing asked while no snapshot is wanted"
              wanted <- true
              for _ in 1..3 do
                  housekeeping.Step() |> ignore
              Expect.equal asks 1 "asked once"
              wanted <- false
              housekeeping.Step() |> ignore
              wanted <- true
              housekeeping.Step() |> ignore
              Expect.equal asks 2 "asked again once it wants one again"

          testCase "the change history is bounded in bytes, and counts them again after a reopen"
          <| fun () ->
              use tmp = new TempDir "history-bytes"
              // Records of 1,000-byte values take 1,011 bytes (kind, key length, "k/0007", value): nine fit in 10,000.
              let opts = KvOptions(WatchHistory = 1000, WatchHistoryBytes = 10_000L)
              using (KvStateMachine.Open(tmp.Path, opts)) (fun kv ->
                  for i in 1..50 do
                      apply kv (int64 i) (put (i % 10) i)
                  Expect.equal (kv.HistoryCount, kv.HistoryFloor) (9, 41L) "the newest nine changes kept"
                  Expect.equal (historyFrom kv 42L) (Ok [ 42L .. 50L ]) "and readable"
                  kv.TakeSnapshot() |> ignore)
              use kv = KvStateMachine.Open(tmp.Path, opts)
              Expect.equal (kv.HistoryCount, kv.HistoryFloor) (9, 41L) "reopened"
              // Had the reopened history forgotten its bytes, a tenth record would now fit.
              apply kv 51L (put 1 51)
              Expect.equal (kv.HistoryCount, kv.HistoryFloor) (9, 42L) "one more change trims one"
              Expect.equal (historyFrom kv 43L) (Ok [ 43L .. 51L ]) "readable after the reopen"
              Expect.equal (historyFrom kv 42L) (Error 42L) "older changes are gone"

          testCase "compaction keeps the store's files near its live data and loses nothing"
          <| fun () ->
              use tmp = new TempDir "kv-compaction"
              // Small pages and segments, so a few MB of overwrites span many segments.
              let opts =
                  KvOptions(
                      IndexSizeBytes = (1L <<< 16),
                      PageSizeBits = 14,
                      SegmentSizeBits = 14,
                      MemorySizeBits = 20,
                      WatchHistoryBytes = 65536L,
                      CompactionMinBytes = (1L <<< 20)
                  )
              let keys = 20
              let rounds = 40
              let mutable index = 0L
              using (KvStateMachine.Open(tmp.Sub "main", opts)) (fun kv ->
                  for round in 1..rounds do
                      // 50 overwrites of each key a round: 1 MB of values, 2 MB with the history's copies.
                      for repeat in 1..50 do
                          for key in 0 .. keys - 1 do
                              index <- index + 1L
                              apply kv index (put key (round * 100 + repeat))
                              // As the applier does: compaction steps interleaved with applies (small ones, so a
                              // pass spans many applies): a key written while a pass is under way must not be copied
                              // back over its newer value.
                              kv.CompactStep 7
                      kv.TakeSnapshot() |> ignore
                  Expect.isGreaterThan kv.Compactions 0 "compactions ran"
                  // 80 MB were written; without compaction all of it stays (the test fails at about 80 MB).
                  let size = bytesUnder (tmp.Sub "main")
                  Expect.isLessThan size (12L <<< 20) (sprintf "the store's files (%d bytes) stay near live data" size)
                  use other = installInto kv (tmp.Sub "other") opts
                  for key in 0 .. keys - 1 do
                      Expect.sequenceEqual (other.Get(sprintf "k/%04d" key)) (valueOf key (rounds * 100 + 50)) "installed copy")
              use kv = KvStateMachine.Open(tmp.Sub "main", opts)
              Expect.equal kv.AppliedIndex index "reopened at the last snapshot"
              Expect.equal kv.KeyCount keys "the key index rebuilt from the compacted store"
              for key in 0 .. keys - 1 do
                  Expect.sequenceEqual (kv.Get(sprintf "k/%04d" key)) (valueOf key (rounds * 100 + 50)) "the newest value"
              match historyFrom kv (kv.HistoryFloor + 1L) with
              | Ok indexes -> Expect.equal (List.last indexes) index "the history reaches the last change"
              | Error floor -> failtestf "history unreadable from %d" (floor + 1L)

          testCase "a compaction pass never copies an old version over a value written while it runs"
          <| fun () ->
              use tmp = new TempDir "kv-compaction-interleaved"
              // No change history: a pass starts once the log spans 1.5 times the live records, here the keys alone.
              let opts =
                  KvOptions(
                      IndexSizeBytes = (1L <<< 16),
                      PageSizeBits = 14,
                      SegmentSizeBits = 14,
                      CompactionMinBytes = 1L,
                      WatchHistory = 0
                  )
              let keys = 20
              let mutable index = 0L
              using (KvStateMachine.Open(tmp.Sub "main", opts)) (fun kv ->
                  let write key round =
                      index <- index + 1L
                      apply kv index (put key round)
                  // Three versions of every key, each made read-only by a snapshot (so the next one is a new record
                  // rather than an update in place), the passes they start run out; the last snapshot starts a pass
                  // over the older versions, the copies of the passes before, and the newest versions.
                  for round in 1..3 do
                      for key in 0 .. keys - 1 do
                          write key round
                      kv.TakeSnapshot() |> ignore
                      if round < 3 then
                          while kv.CompactionPending do
                              kv.CompactStep()
                  Expect.isTrue kv.CompactionPending "a pass started after the snapshot"
                  let passesBefore = kv.Compactions
                  // Each key gets its newest value while the pass has looked at only a few records; the pass then
                  // meets the older versions of every key, which it must leave behind.
                  for key in 0 .. keys - 1 do
                      write key 4
                      kv.CompactStep 1
                  let mutable steps = 0
                  while kv.CompactionPending do
                      kv.CompactStep 1
                      steps <- steps + 1
                  Expect.isGreaterThan steps keys "the pass went on after the last write"
                  Expect.equal kv.Compactions (passesBefore + 1) "the pass finished"
                  for key in 0 .. keys - 1 do
                      Expect.sequenceEqual (kv.Get(sprintf "k/%04d" key)) (valueOf key 4) "the newest value after the pass"
                  kv.TakeSnapshot() |> ignore)
              use kv = KvStateMachine.Open(tmp.Sub "main", opts)
              Expect.equal kv.KeyCount keys "the key index rebuilt from the compacted store"
              for key in 0 .. keys - 1 do
                  Expect.sequenceEqual (kv.Get(sprintf "k/%04d" key)) (valueOf key 4) "the newest value after a reopen"

          testCase "a compaction pass over a store larger than its memory waits for the disk once per batch, not per record"
          <| fun () ->
              use tmp = new TempDir "kv-compaction-disk"
              // 256 KiB in memory for about 3.5 MB of records: the pass meets nearly all of them on disk.
              let opts =
                  KvOptions(
                      IndexSizeBytes = (1L <<< 16),
                      PageSizeBits = 14,
                      SegmentSizeBits = 16,
                      MemorySizeBits = 18,
                      CompactionMinBytes = 1L,
                      WatchHistory = 0
                  )
              let keys = 2000
              let mutable index = 0L
              use kv = KvStateMachine.Open(tmp.Path, opts)
              let write key round =
                  index <- index + 1L
                  apply kv index (put key round)
              for key in 0 .. keys - 1 do
                  write key 1
              kv.TakeSnapshot() |> ignore
              // A first pass may start before any has measured the live records; let it run out.
              while kv.CompactionPending do
                  kv.CompactStep()
              // Three keys in four written again: the log spans 1.75 times the live records, so a pass starts.
              for key in 0 .. keys - 1 do
                  if key % 4 <> 0 then
                      write key 2
              kv.TakeSnapshot() |> ignore
              Expect.isTrue kv.CompactionPending "a pass started after the snapshot"
              let passes = kv.Compactions
              let before = kv.DiskWaits
              while kv.CompactionPending do
                  kv.CompactStep()
              let waits = kv.DiskWaits - before
              Expect.equal kv.Compactions (passes + 1) "the pass finished"
              for key in 0 .. keys - 1 do
                  let round = if key % 4 = 0 then 1 else 2
                  match kv.Get(sprintf "k/%04d" key) with
                  | null -> failtestf "k/%04d is missing after the pass" key
                  | value -> Expect.sequenceEqual value (valueOf key round) "the newest value after the pass"
              // 3,500 records in batches of 64 is 55 waits; waiting for each record on disk in turn was thousands.
              Expect.isGreaterThan waits 0L "the pass looked records up on disk (or this test proves nothing)"
              Expect.isLessThan waits 200L (sprintf "the pass waited for the disk %d times" waits)

          testCase "a store keeps the page and segment sizes it was made with"
          <| fun () ->
              use tmp = new TempDir "kv-geometry"
              // (Stores made before the geometry file existed are of the older format: KvMemoryTests converts one.)
              using (KvStateMachine.Open(tmp.Path, KvOptions(PageSizeBits = 17, SegmentSizeBits = 18))) (fun kv ->
                  for i in 1..100 do
                      apply kv (int64 i) (put (i % 10) i)
                  kv.TakeSnapshot() |> ignore)
              using (KvStateMachine.Open(tmp.Path, KvOptions())) (fun kv ->
                  Expect.sequenceEqual (kv.Get "k/0003") (valueOf 3 93) "read with the sizes it was written with")
              Expect.equal
                  (File.ReadAllText(Path.Combine(tmp.Path, StoreGeometry.FileName)))
                  "values=inline pagebits=17 segmentbits=18\n"
                  "written down"
              use kv = KvStateMachine.Open(tmp.Path, KvOptions(PageSizeBits = 19, SegmentSizeBits = 20))
              Expect.sequenceEqual (kv.Get "k/0003") (valueOf 3 93) "other options do not change them"

          testCase "a nearly full disk refuses new writes with DiskFull; the node takes writes again once space is freed"
          <| fun () ->
              // A 512 MiB tmpfs (tmpfs uses only what is written); an embedded node with default settings refuses
              // writes below its storage reserve plus DiskSpaceGate.Headroom (272 MiB by default: the state machine's
              // 208 MiB, twice its 64 MiB memory budget plus the index and 64 MiB, and 64 MiB of headroom).
              withTmpfs (512 * 1024) (fun mnt ->
                  let node =
                      new SkiffServer(
                          SkiffServerOptions(Bind = IPAddress.Loopback, Port = freePort (), DataDirectory = Path.Combine(mnt, "node"))
                      )
                  use _ =
                      { new IDisposable with
                          member _.Dispose() = node.DisposeAsync().AsTask().Wait() }
                  node.StartAsync().Wait()
                  node.WaitForLeaderAsync(TimeSpan.FromSeconds 10.0).Wait()
                  node.InsertAsync("before", valueOf 1 1).Wait()
                  // Leave 240 MiB free: below the node's 272 MiB, above storage's own 208 MiB reserve.
                  let freeMb = DriveInfo(mnt).AvailableFreeSpace / (1L <<< 20)
                  Expect.equal
                      (sh (sprintf "dd if=/dev/zero of='%s/filler' bs=1M count=%d 2>/dev/null" mnt (freeMb - 240L)))
                      0
                      "disk mostly filled"
                  let attempt (key: string) =
                      try
                          node.InsertAsync(key, valueOf 2 2).Wait()
                          Ok()
                      with :? AggregateException as e ->
                          match e.InnerException with
                          | :? SkiffException as s -> Error s
                          | _ -> reraise ()
                  let mutable refusal = None
                  waitUntil 10.0 "a write refused as DiskFull" (fun () ->
                      match attempt "during" with
                      | Error e ->
                          refusal <- Some e
                          true
                      | Ok() -> false)
                  let e = refusal.Value
                  Expect.equal e.Kind ErrorKind.DiskFull (sprintf "DiskFull: %s" e.Message)
                  Expect.equal e.Outcome WriteOutcome.NotApplied "refused before proposing"
                  Expect.stringContains e.Message "disk full" "says why"
                  Expect.sequenceEqual (node.GetAsync("before").Result) (valueOf 1 1) "reads go on"
                  Expect.isTrue (isNull node.FatalError) "the node did not stop"
                  File.Delete(Path.Combine(mnt, "filler"))
                  waitUntil 10.0 "a write accepted once space is freed" (fun () -> attempt "after" = Ok())
                  Expect.sequenceEqual (node.GetAsync("after").Result) (valueOf 2 2) "the write after the refusal applied")

          testCase "an embedded node's data directory stays under 64 MB throughout overwrites, and a restart loses nothing"
          <| fun () ->
              // Issue 16's goal, max(64 MB, 3 x live data), live data being 100 KB here. It holds at every sample,
              // not only at the end: with a 16 MiB hash index (two index checkpoints on disk while a snapshot is
              // written) and 16 MiB log segments the directory peaked at 85-89 MB in this workload. Without
              // compaction the store alone grows to about 70 MB (0.7 KB a write), over the bound.
              overwriteAndRestart "disk-bound-node" 100 1000 None 64_000_000L

          testCase "a node whose data outgrows its memory budget keeps its directory within a multiple of the live data"
          <| fun () ->
              // 15 MB of values against an 8 MiB memory budget, each key written ten times. The compaction used to
              // start once the files were twice their size after the previous pass, measured while most of what that
              // pass had copied was still in memory and while the applies of a slow pass added garbage: every pass
              // started from a larger log (270 MB here, 2 GB for 100 MB of values). Now it follows the live records'
              // size and keeps a pace (peak about 85 MB), and asks for a snapshot when a pass has freed segments
              // rather than leaving them to the next one due (peak 64-66 MB). The bound, 5 times the live data, fails
              // either way without both; issue 16's own (64 MB here) is about what this run reaches.
              overwriteAndRestart "disk-bound-spill" 15_000 10 (Some(8L <<< 20)) (5L * 15_000L * 1000L) ]
