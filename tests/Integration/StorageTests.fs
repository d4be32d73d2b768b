/// Durable storage: the Raft log, hard state, the key-value state machine, snapshots, locking and disk errors.
module Skiff.Integration.StorageTests

open System
open System.Collections.Generic
open System.Diagnostics
open System.IO
open System.Text
open System.Threading
open System.Threading.Tasks
open Expecto
open Skiff
open Skiff.Core
open Skiff.Net.Storage
open Skiff.Integration.StorageSupport

let private expectSkiff (kind: ErrorKind) (f: unit -> unit) : SkiffException =
    let mutable caught = None
    try
        f ()
    with
    | :? SkiffException as e -> caught <- Some e
    | :? AggregateException as a ->
        match a.InnerException with
        | :? SkiffException as e -> caught <- Some e
        | _ -> reraise ()
    match caught with
    | Some e ->
        Expect.equal e.Kind kind (sprintf "error kind (message: %s)" e.Message)
        e
    | None -> failtestf "expected SkiffException %A, nothing was thrown" kind

let private utf8 (s: string) = Encoding.UTF8.GetBytes s

let private logTests =
    testList
        "raft log"
        [ testCase "CRC-32C matches the standard check value"
          <| fun () ->
              Expect.equal (Crc32C.Compute(ReadOnlySpan(utf8 "123456789"))) 0xE3069283u "CRC-32C check value"
              let data = Array.init 1000 byte
              let split = Crc32C.Append(Crc32C.Append(0u, ReadOnlySpan(data, 0, 333)), ReadOnlySpan(data, 333, 667))
              Expect.equal split (Crc32C.Compute(ReadOnlySpan data)) "incremental equals one-shot"

          testCase "appends read back and survive reopen"
          <| fun () ->
              use tmp = new TempDir "log"
              using (RaftLog.Open(tmp.Path)) (fun log ->
                  Expect.equal log.LastIndex 0L "empty log"
                  Expect.equal log.FirstIndex 1L "first index of an empty log"
                  Expect.equal (log.TermAt 0L |> Option.ofNullable) (Some 0L) "term at 0"
                  append log (entries 1L 10L 1L)
                  append log (entries 11L 20L 2L)
                  Expect.equal log.LastIndex 20L "last index"
                  Expect.equal log.LastTerm 2L "last term")
              use log = RaftLog.Open(tmp.Path)
              Expect.equal log.LastIndex 20L "last index after reopen"
              let all = readAll log
              Expect.equal (all |> List.map (fun e -> e.Index)) [ 1L .. 20L ] "indices"
              for e in all do
                  Expect.sequenceEqual e.Payload (payloadOf e.Index e.Term) (sprintf "payload %d" e.Index)
              Expect.equal (log.TermAt 15L |> Option.ofNullable) (Some 2L) "term at 15"
              Expect.equal (log.TermAt 21L |> Option.ofNullable) None "term past the end"
              let some = log.ReadAsync(5L, 8L).Result
              Expect.equal (some |> Seq.map (fun e -> e.Index) |> List.ofSeq) [ 5L .. 8L ] "range read"
              let capped = log.ReadAsync(1L, 20L, 1L).Result
              Expect.equal capped.Count 1 "a byte budget still returns one entry"

          testCase "append at i <= last replaces the suffix, durably"
          <| fun () ->
              use tmp = new TempDir "suffix"
              using (RaftLog.Open(tmp.Path)) (fun log ->
                  append log (entries 1L 10L 1L)
                  append log (entries 6L 7L 2L)
                  Expect.equal log.LastIndex 7L "suffix dropped"
                  Expect.equal (log.TermAt 6L |> Option.ofNullable) (Some 2L) "replaced term"
                  append log (entries 8L 9L 3L)
                  append log (entries 9L 9L 4L))
              use log = RaftLog.Open(tmp.Path)
              Expect.equal log.LastIndex 9L "last after reopen"
              let terms = readAll log |> List.map (fun e -> e.Index, e.Term)
              Expect.equal terms ([ for i in 1L .. 5L -> i, 1L ] @ [ 6L, 2L; 7L, 2L; 8L, 3L; 9L, 4L ]) "last-written version of each index"
              Expect.throws (fun () -> append log (entries 11L 11L 4L)) "a gap is refused"
              expectSkiff ErrorKind.ValueTooLarge (fun () -> append log [| LogEntry(10L, 4L, Array.zeroCreate (log.MaxPayloadBytes + 1)) |])
              |> ignore
              append log [| LogEntry(10L, 4L, Array.zeroCreate log.MaxPayloadBytes) |]
              Expect.equal (log.ReadAsync(10L, 10L).Result[0].Payload.Length) log.MaxPayloadBytes "the largest payload reads back"

          testCase "concurrent appenders share commits (group commit)"
          <| fun () ->
              use tmp = new TempDir "group"
              use log = RaftLog.Open(tmp.Path)
              let gate = obj ()
              let mutable next = 0L
              let commits0 = log.Commits
              let writers =
                  [| for _ in 1..64 ->
                         Task.Run(fun () ->
                             task {
                                 for _ in 1..20 do
                                     let t =
                                         lock gate (fun () ->
                                             next <- next + 1L
                                             log.AppendAsync(entry next 1L))
                                     do! t
                             }
                             :> Task) |]
              Task.WaitAll writers
              Expect.equal log.LastIndex 1280L "all appended"
              let commits = log.Commits - commits0
              Expect.isLessThan commits 1280L (sprintf "fewer commits (%d) than appends" commits)

          testCase "every entry reads back alone from pages on disk, also records that cross a sector boundary"
          <| fun () ->
              // Regression: a read ending at a record that crosses a 512-byte sector boundary on a page no longer in
              // memory came back half stale (checksum mismatch), because the scan's end address stopped at the
              // record's first byte and FASTER loads a disk page only up to the scan's end. Found by the crash test.
              use tmp = new TempDir "sector"
              let opts = RaftLogOptions(PageSizeBits = 12, MemorySizeBits = 14, SegmentSizeBits = 20)
              using (RaftLog.Open(tmp.Path, opts)) (fun log -> append log (entries 1L 400L 1L))
              use log = RaftLog.Open(tmp.Path, opts)
              for i in 1L .. 400L do
                  match List.ofSeq (log.ReadAsync(i, i).GetAwaiter().GetResult()) with
                  | [ en ] -> Expect.isTrue (en.Payload.AsSpan().SequenceEqual(ReadOnlySpan(payloadOf i 1L))) (sprintf "entry %d" i)
                  | other -> failtestf "entry %d: read %d entries" i other.Length
              // And a range read stopping at each index, as the applier does.
              for i in 2L .. 400L do
                  let got = log.ReadAsync(1L, i).GetAwaiter().GetResult()
                  Expect.equal got.Count (int i) (sprintf "range 1..%d" i)

          testCase "a segment whose creation a crash interrupted (bad header) is dropped, not fatal"
          <| fun () ->
              use tmp = new TempDir "torn-segment"
              using (RaftLog.Open tmp.Path) (fun log -> append log (entries 1L 10L 1L))
              // A crash after the new segment's directory entry was durable but before its header was.
              File.WriteAllBytes(Path.Combine(tmp.Path, "00000000000000000002.wal"), Array.zeroCreate<byte> 7)
              using (RaftLog.Open tmp.Path) (fun log ->
                  Expect.equal log.LastIndex 10L "every entry is there"
                  Expect.isGreaterThan log.TornBytesDropped 0L "the torn segment was dropped"
                  append log (entries 11L 20L 2L))
              use log = RaftLog.Open tmp.Path
              Expect.equal log.LastIndex 20L "entries appended after it survive the next recovery"
              for en in readAll log do
                  let term = if en.Index > 10L then 2L else 1L
                  Expect.isTrue (en.Payload.AsSpan().SequenceEqual(ReadOnlySpan(payloadOf en.Index term))) (sprintf "entry %d" en.Index)

          testCase "a log written by the FasterLog of older versions is migrated once, then its files are gone"
          <| fun () ->
              use tmp = new TempDir "migrate"
              let legacy = RaftLogOptions(PageSizeBits = 16, SegmentSizeBits = 16, MemorySizeBits = 18)
              writeLegacyLog tmp.Path legacy [ yield! entries 1L 300L 1L; yield! entries 250L 400L 2L ] (Some(200L, 1L))
              Expect.isTrue (LegacyLogReader.Present tmp.Path) "old files written"
              using (RaftLog.Open(tmp.Path, legacy)) (fun log ->
                  Expect.equal log.MigratedEntries 200L "entries moved over"
                  Expect.equal (log.FirstIndex, log.LastIndex) (201L, 400L) "bounds"
                  Expect.equal (log.TermAt 200L |> Option.ofNullable) (Some 1L) "base term")
              Expect.isFalse (LegacyLogReader.Present tmp.Path) "old files deleted"
              Expect.isEmpty (Directory.GetFiles(tmp.Path, "raft.log*")) "no segment of the old log left"
              use log = RaftLog.Open(tmp.Path, legacy)
              Expect.equal log.MigratedEntries 0L "migrated only once"
              let got = readAll log
              Expect.equal
                  (got |> List.map (fun e -> e.Index, e.Term))
                  [ for i in 201L .. 400L -> i, (if i < 250L then 1L else 2L) ]
                  "entries"
              for en in got do
                  Expect.isTrue (en.Payload.AsSpan().SequenceEqual(ReadOnlySpan(payloadOf en.Index en.Term))) (sprintf "entry %d" en.Index)

          testCase "a migration interrupted before its marker starts over; after it, only the deletion is finished"
          <| fun () ->
              use tmp = new TempDir "migrate-crash"
              let legacy = RaftLogOptions(PageSizeBits = 16, SegmentSizeBits = 16, MemorySizeBits = 18)
              writeLegacyLog tmp.Path legacy [ yield! entries 1L 50L 1L ] None
              // A partial new log from an interrupted migration: it must not be trusted.
              using (RaftLog.OpenWithoutMigration(tmp.Path, legacy)) (fun log -> append log (entries 1L 3L 9L))
              using (RaftLog.Open(tmp.Path, legacy)) (fun log ->
                  Expect.equal log.MigratedEntries 50L "migrated again from the old files"
                  Expect.equal (readAll log |> List.map (fun e -> e.Term) |> List.distinct) [ 1L ] "only the old log's entries")
              // Interrupted after the marker: the old files are stale and must not be read again.
              writeLegacyLog (tmp.Sub "other") legacy [ yield! entries 1L 5L 7L ] None
              for f in Directory.GetFiles(tmp.Sub "other") do
                  File.Copy(f, Path.Combine(tmp.Path, Path.GetFileName(f: string) |> nonNull), true)
              File.WriteAllText(Path.Combine(tmp.Path, "migrated"), "x")
              use log = RaftLog.Open(tmp.Path, legacy)
              Expect.equal log.MigratedEntries 0L "not migrated again"
              Expect.equal log.LastIndex 50L "the new log stands"
              Expect.isFalse (LegacyLogReader.Present tmp.Path) "stale old files deleted"
              Expect.isFalse (File.Exists(Path.Combine(tmp.Path, "migrated"))) "marker deleted"

          testCase "compaction keeps the tail and the base term across reopen"
          <| fun () ->
              use tmp = new TempDir "compact"
              let opts = RaftLogOptions(KeepTail = 10L, SegmentSizeBits = 20, PageSizeBits = 16, MemorySizeBits = 18)
              using (RaftLog.Open(tmp.Path, opts)) (fun log ->
                  append log (entries 1L 5000L 1L)
                  append log (entries 5001L 6000L 2L)
                  log.CompactUntil(5500L).Wait()
                  Expect.equal log.FirstIndex 5491L "first index after compaction"
                  Expect.equal (log.TermAt 5490L |> Option.ofNullable) (Some 2L) "term at base"
                  Expect.equal (log.TermAt 100L |> Option.ofNullable) None "compacted"
                  Expect.throws (fun () -> log.ReadAsync(100L, 200L).Wait()) "reading compacted entries is refused"
                  append log (entries 6001L 6010L 3L))
              let segments = Directory.GetFiles(tmp.Path, "*.wal").Length
              use log = RaftLog.Open(tmp.Path, opts)
              Expect.equal log.FirstIndex 5491L "first index after reopen"
              Expect.equal log.LastIndex 6010L "last index after reopen"
              Expect.equal (log.TermAt 5490L |> Option.ofNullable) (Some 2L) "base term after reopen"
              Expect.equal (readAll log |> List.length) 520 "entries kept"
              Expect.isLessThan segments 8 (sprintf "old segments deleted (%d left)" segments)

          testCase "deleting the segments a compaction freed holds up neither the compaction nor the appends after it"
          <| fun () ->
              use tmp = new TempDir "reclaim"
              // The real file system, with deletions held at a gate: unlinking a segment whose pages are being
              // written back took 5-20 ms, which appends waited for while the writer thread did it.
              let held = new ManualResetEventSlim(false)
              let real = RealWalFileSystem.Instance :> IWalFileSystem
              let fs =
                  { new IWalFileSystem with
                      member _.CreateDirectory d = real.CreateDirectory d
                      member _.List(d, suffix) = real.List(d, suffix)
                      member _.Open(path, create) = real.Open(path, create)
                      member _.Delete path =
                          held.Wait(TimeSpan.FromSeconds 30.0) |> ignore
                          real.Delete path
                      member _.Rename(a, b) = real.Rename(a, b)
                      member _.SyncDirectory d = real.SyncDirectory d }
              let opts = RaftLogOptions(KeepTail = 10L, SegmentSizeBits = 16, PageSizeBits = 12, MemorySizeBits = 14)
              let log = RaftLog.Open(tmp.Path, opts, fs)
              let mutable before = 0
              try
                  append log (entries 1L 3000L 1L)
                  before <- Directory.GetFiles(tmp.Path, "*.wal").Length
                  Expect.isGreaterThan before 3 "several segments to free"
                  Expect.isTrue
                      (log.CompactUntil(2900L).Wait(TimeSpan.FromSeconds 10.0))
                      "the compaction is durable while its deletions are held"
                  let more = log.AppendAsync(entries 3001L 3010L 1L, CancellationToken.None)
                  Expect.isTrue (more.Wait(TimeSpan.FromSeconds 10.0)) "appends after it are durable while its deletions are held"
                  Expect.equal log.FirstIndex 2891L "the base moved"
              finally
                  held.Set()
                  log.Dispose()
              let after = Directory.GetFiles(tmp.Path, "*.wal").Length
              Expect.isLessThan after 3 (sprintf "the freed segments are gone once the log is closed (%d of %d left)" after before)
              use reopened = RaftLog.Open(tmp.Path, opts)
              Expect.equal reopened.FirstIndex 2891L "first index after reopen"
              Expect.equal reopened.LastIndex 3010L "last index after reopen"

          testCase "reset after a snapshot install empties the log at the snapshot index"
          <| fun () ->
              use tmp = new TempDir "reset"
              using (RaftLog.Open(tmp.Path)) (fun log ->
                  append log (entries 1L 10L 1L)
                  log.ResetToSnapshot(100L, 7L, false).Wait()
                  Expect.equal log.FirstIndex 101L "first"
                  Expect.equal log.LastIndex 100L "last"
                  append log (entries 101L 102L 7L))
              use log = RaftLog.Open(tmp.Path)
              Expect.equal (log.FirstIndex, log.LastIndex) (101L, 102L) "after reopen"
              Expect.equal (log.TermAt 100L |> Option.ofNullable) (Some 7L) "snapshot term"

          testCase "a corrupt tail entry is dropped, and stays dropped after later appends"
          <| fun () ->
              use tmp = new TempDir "tail"
              using (RaftLog.Open(tmp.Path)) (fun log -> append log (entries 1L 10L 1L))
              let file = Path.Combine(tmp.Path, "00000000000000000001.wal")
              let at = findInFile file (payloadOf 10L 1L)
              Expect.isGreaterThan at 0 "found the last entry's payload"
              flipByte file (at + 20)
              using (RaftLog.Open(tmp.Path)) (fun log ->
                  Expect.equal log.LastIndex 9L "torn tail dropped"
                  Expect.isGreaterThan log.TornBytesDropped 0L "the torn record was cut off"
                  append log (entries 10L 12L 2L))
              use log = RaftLog.Open(tmp.Path)
              Expect.equal log.LastIndex 12L "appends after the dropped tail survive"
              Expect.equal log.TornBytesDropped 0L "nothing new dropped"
              Expect.equal (readAll log |> List.map (fun e -> e.Term)) ([ for _ in 1..9 -> 1L ] @ [ 2L; 2L; 2L ]) "terms"

          testCase "random appends, suffix replacements, compactions, resets and reopens match a model"
          <| fun () ->
              let seed =
                  match Environment.GetEnvironmentVariable "SKIFF_LOG_MODEL_SEED" with
                  | null
                  | "" -> Random.Shared.Next()
                  | v -> int v
              printfn "log model test: seed=%d (replay with SKIFF_LOG_MODEL_SEED=%d)" seed seed
              let rng = Random seed
              use tmp = new TempDir "model"
              let opts = RaftLogOptions(KeepTail = 3L, PageSizeBits = 12, MemorySizeBits = 14, SegmentSizeBits = 16)
              let mutable log = RaftLog.Open(tmp.Path, opts)
              // The model: base (index, term) and the terms of base+1 .. last.
              let mutable baseIndex = 0L
              let mutable baseTerm = 0L
              let terms = List<int64>()
              let last () = baseIndex + int64 terms.Count
              let termAt i = if i = baseIndex then baseTerm else terms[int (i - baseIndex - 1L)]
              let mutable term = 1L
              try
                  for step in 1..300 do
                      let ctx = sprintf "seed %d step %d" seed step
                      match rng.Next 10 with
                      | 0 when last () > baseIndex ->
                          let s = baseIndex + 1L + int64 (rng.Next(int (last () - baseIndex)))
                          log.CompactUntil(s).Wait()
                          let nb = min (s - 3L) (last ())
                          if nb > baseIndex then
                              let t = termAt nb
                              terms.RemoveRange(0, int (nb - baseIndex))
                              baseIndex <- nb
                              baseTerm <- t
                      | 1 ->
                          let s = baseIndex + int64 (rng.Next(int (last () - baseIndex) + 5))
                          let t = if s <= last () && rng.Next 2 = 0 then termAt s else term + 1L
                          let keep = s <= last () && termAt s = t
                          log.ResetToSnapshot(s, t, keep).Wait()
                          if keep then terms.RemoveRange(0, int (s - baseIndex)) else terms.Clear()
                          baseIndex <- s
                          baseTerm <- t
                          term <- max term t
                      | 2 ->
                          log.Dispose()
                          log <- RaftLog.Open(tmp.Path, opts)
                      | _ ->
                          if rng.Next 4 = 0 then
                              term <- term + 1L
                          let first = baseIndex + 1L + int64 (rng.Next(int (last () - baseIndex) + 1))
                          let n = rng.Next(1, 6)
                          append log (entries first (first + int64 n - 1L) term)
                          terms.RemoveRange(int (first - baseIndex - 1L), terms.Count - int (first - baseIndex - 1L))
                          for _ in 1..n do
                              terms.Add term
                      Expect.equal (log.FirstIndex, log.LastIndex) (baseIndex + 1L, last ()) (ctx + ": bounds")
                      Expect.equal (log.TermAt baseIndex) (Nullable baseTerm) (ctx + ": base term")
                      let got = readAll log |> List.map (fun e -> e.Index, e.Term, e.Payload)
                      let want = [ for i in baseIndex + 1L .. last () -> i, termAt i ]
                      Expect.equal (got |> List.map (fun (i, t, _) -> i, t)) want (ctx + ": entries")
                      for (i, t, p) in got do
                          if not (p.AsSpan().SequenceEqual(ReadOnlySpan(payloadOf i t))) then
                              failtestf "%s: payload of %d" ctx i
              finally
                  log.Dispose()

          testCase "corruption before the last segment is StorageCorrupted naming the file"
          <| fun () ->
              // In the last segment a bad record is a torn write that was never acknowledged; before it, every
              // record was synced before the next segment was started, so a bad one is damage.
              use tmp = new TempDir "middle"
              let opts = RaftLogOptions(SegmentSizeBits = 12)
              using (RaftLog.Open(tmp.Path, opts)) (fun log ->
                  for i in 1L .. 100L do
                      append log (entries i i 1L))
              let file = Path.Combine(tmp.Path, "00000000000000000001.wal")
              Expect.isGreaterThan (Directory.GetFiles(tmp.Path, "*.wal").Length) 1 "more than one segment"
              flipByte file (findInFile file (payloadOf 5L 1L) + 20)
              let e = expectSkiff ErrorKind.StorageCorrupted (fun () -> RaftLog.Open(tmp.Path, opts).Dispose())
              Expect.stringContains e.Message "00000000000000000001.wal" "names the file" ]

let private nodeTests =
    testList
        "node storage"
        [ testCase "hard state and node id are durable"
          <| fun () ->
              use tmp = new TempDir "hs"
              let vote = Guid.NewGuid()
              let id =
                  using (NodeStorage.Open tmp.Path) (fun s ->
                      Expect.equal s.HardState.State ({ Term = 0L; VotedFor = None }) "initial"
                      s.HardState.Save({ Term = 3L; VotedFor = Some vote })
                      s.HardState.Save({ Term = 4L; VotedFor = None })
                      s.HardState.Save({ Term = 5L; VotedFor = Some vote })
                      s.HardState.NodeId)
              use s = NodeStorage.Open tmp.Path
              Expect.equal s.HardState.NodeId id "node id is stable"
              Expect.equal s.HardState.State ({ Term = 5L; VotedFor = Some vote }) "latest state"

          testCase "a torn hard-state slot falls back to the previous state"
          <| fun () ->
              use tmp = new TempDir "hs-torn"
              using (NodeStorage.Open tmp.Path) (fun s ->
                  s.HardState.Save({ Term = 3L; VotedFor = None })
                  s.HardState.Save({ Term = 4L; VotedFor = None }))
              // The first state (seq 1) is in slot 0 and saves alternate from slot 1: seq 2 (term 3) in slot 1,
              // seq 3 (term 4) in slot 0; tear it.
              flipByte (Path.Combine(tmp.Path, "hardstate")) 30
              use s = NodeStorage.Open tmp.Path
              Expect.equal s.HardState.State.Term 3L "previous slot"

          testCase "a crash during the first snapshot: rebuilt from an uncompacted log, refused once compacted"
          <| fun () ->
              use tmp = new TempDir "first-snap"
              let kvDir = Path.Combine(tmp.Path, "kv")
              let opts = NodeStorageOptions(Log = RaftLogOptions(KeepTail = 2L))
              // FASTER writes a checkpoint's metadata (info.dat) last: without it the checkpoint is unfinished.
              let unfinishCheckpoints () =
                  let infos = Directory.GetFiles(Path.Combine(kvDir, "checkpoints"), "info.dat*", SearchOption.AllDirectories)
                  Expect.isNonEmpty infos "the checkpoint wrote its metadata"
                  for f in infos do
                      File.Delete f
              using (NodeStorage.Open(tmp.Path, opts)) (fun s ->
                  append s.Log (entries 1L 5L 1L)
                  for en in readAll s.Log do
                      s.Kv.ApplyEncoded(en.Index, en.Term, ReadOnlySpan en.Payload) |> ignore
                  s.Kv.TakeSnapshot() |> ignore)
              unfinishCheckpoints ()
              expectSkiff ErrorKind.StorageCorrupted (fun () -> (KvStateMachine.Open kvDir).Dispose()) |> ignore
              using (NodeStorage.Open(tmp.Path, opts)) (fun s ->
                  Expect.equal s.Kv.AppliedIndex 0L "starts empty, to replay the log"
                  Expect.equal s.Kv.KeyCount 0 "no keys from the unfinished checkpoint"
                  Expect.equal s.Log.LastIndex 5L "the log is untouched"
                  for en in readAll s.Log do
                      s.Kv.ApplyEncoded(en.Index, en.Term, ReadOnlySpan en.Payload) |> ignore
                  s.Kv.TakeSnapshot() |> ignore
                  s.Log.CompactUntil(5L).GetAwaiter().GetResult()
                  Expect.equal s.Log.FirstIndex 4L "compacted behind the snapshot")
              unfinishCheckpoints ()
              expectSkiff ErrorKind.StorageCorrupted (fun () -> (NodeStorage.Open(tmp.Path, opts)).Dispose()) |> ignore

          testCase "a locked directory gives DataDirectoryLocked; flock is visible and released on dispose"
          <| fun () ->
              use tmp = new TempDir "lock"
              let first = NodeStorage.Open tmp.Path
              let inode =
                  let psi = ProcessStartInfo("stat", RedirectStandardOutput = true)
                  [ "-c"; "%i"; Path.Combine(tmp.Path, "LOCK") ] |> List.iter psi.ArgumentList.Add
                  use p = startProcess psi
                  p.StandardOutput.ReadToEnd().Trim()
              let locks = File.ReadAllLines "/proc/locks"
              Expect.isTrue
                  (locks |> Array.exists (fun l -> l.Contains "FLOCK" && l.Contains(":" + inode + " ")))
                  (sprintf "a FLOCK on inode %s in /proc/locks" inode)
              expectSkiff ErrorKind.DataDirectoryLocked (fun () -> NodeStorage.Open(tmp.Path).Dispose()) |> ignore
              first.Dispose()
              use again = NodeStorage.Open tmp.Path
              Expect.equal again.Log.LastIndex 0L "reopened after release"

          testCase "a file where the data directory should be gives DataDirectoryCreateFailed"
          <| fun () ->
              use tmp = new TempDir "notdir"
              let file = tmp.Sub "file"
              File.WriteAllText(file, "x")
              expectSkiff ErrorKind.DataDirectoryCreateFailed (fun () -> NodeStorage.Open(Path.Combine(file, "node")).Dispose())
              |> ignore ]

let private put k (v: string) = Command.Insert(k, utf8 v)

let private kvTests =
    testList
        "key-value state machine"
        [ testCase "put, get, delete, compare-and-swap"
          <| fun () ->
              use tmp = new TempDir "kv"
              use kv = KvStateMachine.Open tmp.Path
              Expect.equal (kv.Apply(1L, 1L, put "a" "1")) CommandResult.Done "put"
              Expect.equal (kv.Get "a") (utf8 "1") "get"
              Expect.isNull (kv.Get "b") "absent"
              Expect.equal
                  (kv.Apply(2L, 1L, Command.CompareAndSwap("a", Some(utf8 "x"), Some(utf8 "2"))))
                  (CommandResult.Swapped false)
                  "cas mismatch"
              Expect.equal (kv.Get "a") (utf8 "1") "unchanged"
              Expect.equal
                  (kv.Apply(3L, 1L, Command.CompareAndSwap("a", Some(utf8 "1"), Some(utf8 "2"))))
                  (CommandResult.Swapped true)
                  "cas match"
              Expect.equal (kv.Get "a") (utf8 "2") "swapped"
              Expect.equal
                  (kv.Apply(4L, 1L, Command.CompareAndSwap("b", None, Some(utf8 "new"))))
                  (CommandResult.Swapped true)
                  "cas on absent"
              Expect.equal
                  (kv.Apply(5L, 1L, Command.CompareAndSwap("b", None, Some(utf8 "again"))))
                  (CommandResult.Swapped false)
                  "cas absent but present"
              Expect.equal
                  (kv.Apply(6L, 1L, Command.CompareAndSwap("b", Some(utf8 "new"), None)))
                  (CommandResult.Swapped true)
                  "cas to delete"
              Expect.isNull (kv.Get "b") "deleted by cas"
              Expect.equal (kv.Apply(7L, 1L, Command.Remove "a")) CommandResult.Done "delete"
              Expect.isNull (kv.Get "a") "deleted"
              Expect.equal (kv.Apply(7L, 1L, put "a" "again")) null "an applied index is not applied twice"
              Expect.isNull (kv.Get "a") "still deleted"
              Expect.equal kv.AppliedIndex 7L "applied index"
              Expect.equal (kv.ApplyEncoded(8L, 2L, ReadOnlySpan(CommandCodec.encode (put "c" "3")))) CommandResult.Done "encoded"
              Expect.equal (kv.ApplyEncoded(9L, 2L, ReadOnlySpan<byte>.Empty)) null "no-op entry"
              Expect.equal (kv.AppliedIndex, kv.AppliedTerm) (9L, 2L) "applied index and term"
              let e =
                  try
                      kv.ApplyEncoded(10L, 2L, ReadOnlySpan [| 2uy; 99uy |]) |> ignore
                      failtest "an entry that does not decode was applied"
                  with :? SkiffException as e ->
                      e
              Expect.equal e.Kind ErrorKind.StorageCorrupted "an entry that does not decode"
              Expect.equal kv.AppliedIndex 9L "an entry that does not decode is not skipped over"
              Expect.equal
                  (kv.Apply(10L, 2L, put (KvStateMachine.ReservedPrefix + "applied") "x"))
                  CommandResult.Done
                  "reserved key ignored"
              Expect.equal kv.AppliedIndex 10L "reserved key did not clobber the applied index"
              expectSkiff ErrorKind.InvalidKey (fun () -> KvStateMachine.ValidateKey "") |> ignore
              expectSkiff ErrorKind.InvalidKey (fun () -> KvStateMachine.ValidateKey "a\000b") |> ignore

          testCase "list keys and prefixes"
          <| fun () ->
              use tmp = new TempDir "kv-list"
              use kv = KvStateMachine.Open tmp.Path
              let keys = [ "parent/foo"; "grandparent/parent/foo"; "grandparent/parent/bar"; "plain"; "parent/bar"; "pa" ]
              keys |> List.iteri (fun i k -> kv.Apply(int64 i + 1L, 1L, put k "v") |> ignore)
              Expect.equal (List.ofSeq (kv.ListKeys "")) (List.sortWith (fun a b -> String.CompareOrdinal(a, b)) keys) "all keys, ordered"
              Expect.equal (List.ofSeq (kv.ListKeys "parent/")) [ "parent/bar"; "parent/foo" ] "under parent/"
              Expect.equal (List.ofSeq (kv.ListKeys "pa")) [ "pa"; "parent/bar"; "parent/foo" ] "string prefix"
              Expect.equal (List.ofSeq (kv.ListKeys "zzz")) [] "nothing"
              Expect.equal (List.ofSeq (kv.GetPrefixes())) [ "grandparent/parent"; "parent" ] "prefixes"
              kv.Apply(10L, 1L, Command.Remove "parent/foo") |> ignore
              Expect.equal (List.ofSeq (kv.GetPrefixes())) [ "grandparent/parent"; "parent" ] "parent still has bar"
              kv.Apply(11L, 1L, Command.Remove "parent/bar") |> ignore
              Expect.equal (List.ofSeq (kv.GetPrefixes())) [ "grandparent/parent" ] "prefix gone with its last key"
              kv.Apply(12L, 1L, Command.CompareAndSwap("x/y/z", None, Some(utf8 "v"))) |> ignore
              Expect.equal (List.ofSeq (kv.GetPrefixes())) [ "grandparent/parent"; "x/y" ] "cas creates a prefix"

          testCase "random puts, deletes and swaps match a naive model, across snapshot and reopen"
          <| fun () ->
              let seed = Random.Shared.Next()
              printfn "kv model test: seed=%d" seed
              let rng = Random seed
              use tmp = new TempDir "kv-model"
              let model = Dictionary<string, byte[]>(StringComparer.Ordinal)
              let names = [| "a"; "b"; "a/b"; "a/c"; "a/b/c"; "a/b/d"; "b/a"; "ab"; "a//x"; "/lead"; "tail/"; "é/ü" |]
              let mutable kv = KvStateMachine.Open tmp.Path
              let ordered (xs: string seq) = xs |> Seq.sortWith (fun a b -> String.CompareOrdinal(a, b)) |> List.ofSeq
              try
                  for i in 1L .. 400L do
                      let key = names[rng.Next names.Length]
                      let value = [| byte (rng.Next 4) |]
                      match rng.Next 7 with
                      | 0
                      | 1
                      | 2 ->
                          kv.Apply(i, 1L, Command.Insert(key, value)) |> ignore
                          model[key] <- value
                      | 3 ->
                          kv.Apply(i, 1L, Command.Remove key) |> ignore
                          model.Remove key |> ignore
                      | 4
                      | 5 ->
                          let expected = if rng.Next 3 = 0 then None else Some [| byte (rng.Next 4) |]
                          let next = if rng.Next 4 = 0 then None else Some value
                          let current =
                              match model.TryGetValue key with
                              | true, v -> Some v
                              | _ -> None
                          let matches =
                              match expected, current with
                              | None, None -> true
                              | Some e, Some c -> e = c
                              | _ -> false
                          let r = kv.Apply(i, 1L, Command.CompareAndSwap(key, expected, next))
                          Expect.equal r (CommandResult.Swapped matches) (sprintf "seed %d: cas result at %d" seed i)
                          if matches then
                              match next with
                              | Some n -> model[key] <- n
                              | None -> model.Remove key |> ignore
                      | _ ->
                          kv.TakeSnapshot() |> ignore
                          kv.Dispose()
                          kv <- KvStateMachine.Open tmp.Path
                      Expect.equal (List.ofSeq (kv.ListKeys "")) (ordered model.Keys) (sprintf "seed %d: keys at %d" seed i)
                      let prefixes =
                          model.Keys
                          |> Seq.choose (fun k ->
                              match k.LastIndexOf '/' with
                              | -1 -> None
                              | j -> Some(k.Substring(0, j)))
                          |> Seq.distinct
                      Expect.equal (List.ofSeq (kv.GetPrefixes())) (ordered prefixes) (sprintf "seed %d: prefixes at %d" seed i)
                      for p in [ "a"; "a/"; "a/b"; "a/b/"; ""; "é" ] do
                          Expect.equal
                              (List.ofSeq (kv.ListKeys p))
                              (ordered (model.Keys |> Seq.filter (fun k -> k.StartsWith(p, StringComparison.Ordinal))))
                              (sprintf "seed %d: list %s at %d" seed p i)
                      for KeyValue(k, v) in model do
                          Expect.equal (kv.Get k) v (sprintf "seed %d: value of %s at %d" seed k i)
              finally
                  kv.Dispose()

          testCase "listing 100 keys under a prefix among 100,000 takes milliseconds"
          <| fun () ->
              use tmp = new TempDir "kv-big"
              use kv = KvStateMachine.Open tmp.Path
              let v = Array.zeroCreate<byte> 8
              for i in 0..99_999 do
                  kv.Apply(int64 i + 1L, 1L, Command.Insert(sprintf "tenant%d/item%06d" (i % 1000) i, v)) |> ignore
              kv.ListKeys "tenant7/" |> ignore
              // The best of a few tries: the bound is about the algorithm, not about a busy machine's scheduler.
              let best (f: unit -> 'a) =
                  [ for _ in 1..5 ->
                        let sw = Stopwatch.StartNew()
                        let r = f ()
                        sw.Elapsed.TotalMilliseconds, r ]
                  |> List.minBy fst
              let ms, listed = best (fun () -> kv.ListKeys "tenant42/")
              Expect.equal listed.Count 100 "100 keys"
              Expect.isTrue (listed |> Seq.forall (fun k -> k.StartsWith "tenant42/")) "all under the prefix"
              Expect.isLessThan ms 50.0 (sprintf "listing took %.2f ms" ms)
              let pms, prefixes = best (fun () -> kv.GetPrefixes())
              Expect.equal prefixes.Count 1000 "1000 prefixes"
              Expect.isLessThan pms 50.0 (sprintf "prefixes took %.2f ms" pms)

          testCase "a store larger than its memory budget works and recovers its key index"
          <| fun () ->
              use tmp = new TempDir "kv-disk"
              let opts = KvOptions(PageSizeBits = 12, MemorySizeBits = 14, IndexSizeBytes = (1L <<< 16))
              let value i = Array.init 200 (fun k -> byte (i + k))
              let expected =
                  using (KvStateMachine.Open(tmp.Path, opts)) (fun kv ->
                      for i in 0..4999 do
                          kv.Apply(int64 i + 1L, 1L, Command.Insert(sprintf "k/%d" i, value i)) |> ignore
                      Expect.sequenceEqual (kv.Get "k/0") (value 0) "an early key, read back from disk"
                      // Deletes and re-puts of keys both on disk and in memory, so the rebuild must order versions.
                      let mutable n = 5001L
                      for i in 0..7..4999 do
                          kv.Apply(n, 1L, Command.Remove(sprintf "k/%d" i)) |> ignore
                          n <- n + 1L
                      for i in 0..21..4999 do
                          kv.Apply(n, 1L, Command.Insert(sprintf "k/%d" i, value i)) |> ignore
                          n <- n + 1L
                      kv.Apply(n, 1L, Command.Remove "k/4998") |> ignore
                      kv.TakeSnapshot() |> ignore
                      List.ofSeq (kv.ListKeys ""))
              use kv = KvStateMachine.Open(tmp.Path, opts)
              Expect.equal (List.ofSeq (kv.ListKeys "")) expected "key index rebuilt with deletes and re-puts"
              Expect.equal kv.KeyCount (5000 - 715 + 239 - 1) "live keys"
              Expect.isGreaterThan kv.AppliedIndex 5000L "applied index recovered"
              Expect.sequenceEqual (kv.Get "k/1234") (value 1234) "value after recovery"

          testCase "the change history keeps the newest changes, is carried by snapshots and rebuilt identically by replay"
          <| fun () ->
              use tmp = new TempDir "kv-history"
              let mainDir = tmp.Sub "main"
              let opts = KvOptions(WatchHistory = 5)
              let history (kv: KvStateMachine) (from: int64) (prefix: string) =
                  let got = List<Change>()
                  let mutable floor = 0L
                  if kv.TryReadHistory(from, Int64.MaxValue, prefix, got, &floor) then
                      Ok
                          [ for c in got ->
                                c.Index, c.Key, (if c.Value.HasValue then Encoding.UTF8.GetString c.Value.Value.Span else "<deleted>") ]
                  else
                      Error floor
              // What each index does; only some change a key.
              let commands =
                  [ 1L, Some(put "a" "1")
                    2L, Some(put "b/x" "2")
                    3L, Some(put "c" "3")
                    4L, Some(Command.Remove "absent") // nothing to delete
                    5L, Some(Command.CompareAndSwap("a", Some(utf8 "no"), Some(utf8 "9"))) // no match
                    6L, Some(Command.Remove "a")
                    7L, None // a no-op entry
                    8L, Some(put "b/y" "8")
                    9L, Some(Command.CompareAndSwap("absent", None, None)) // matches, changes nothing
                    10L, Some(Command.CompareAndSwap("b/x", Some(utf8 "2"), Some(utf8 "x"))) ]
              let late = [ 11L, Some(put "b/z" "11"); 12L, Some(Command.Remove "c") ]
              let run (kv: KvStateMachine) cmds =
                  for (i, c) in cmds do
                      match c with
                      | Some c -> kv.Apply(i, 1L, c) |> ignore
                      | None -> kv.AdvanceApplied(i, 1L)
              let expectedAt10 = [ 1L, "a", "1"; 2L, "b/x", "2"; 3L, "c", "3"; 6L, "a", "<deleted>"; 8L, "b/y", "8"; 10L, "b/x", "x" ]
              let expectedAt12 = [ 6L, "a", "<deleted>"; 8L, "b/y", "8"; 10L, "b/x", "x"; 11L, "b/z", "11"; 12L, "c", "<deleted>" ]
              let check (kv: KvStateMachine) (expected: (int64 * string * string) list) floor what =
                  Expect.equal kv.HistoryFloor floor (what + ": floor")
                  Expect.equal kv.HistoryCount expected.Length (what + ": count")
                  Expect.equal (history kv (floor + 1L) "") (Ok expected) (what + ": all kept changes, in order")
                  Expect.equal
                      (history kv (floor + 1L) "b/")
                      (Ok(expected |> List.filter (fun (_, k, _) -> k.StartsWith "b/")))
                      (what + ": under a prefix")
                  Expect.equal (history kv floor "") (Error floor) (what + ": older than the history")
              let snapDir = tmp.Sub "snapshot-copy"
              using (KvStateMachine.Open(mainDir, opts)) (fun kv ->
                  // The change reported to the caller is the one recorded.
                  let mutable change: Change | null = null
                  kv.Apply(1L, 1L, put "a" "1", &change) |> ignore
                  Expect.equal (isNull change, (nonNull change).Key, (nonNull change).Index) (false, "a", 1L) "a put is a change"
                  run kv (List.tail commands)
                  Expect.equal (history kv 7L "") (Ok [ 8L, "b/y", "8"; 10L, "b/x", "x" ]) "from an index between changes"
                  check kv (List.tail expectedAt10) 1L "at 10 (one trimmed)"
                  kv.TakeSnapshot() |> ignore
                  run kv late
                  check kv expectedAt12 3L "at 12")
              // The store reopens at its checkpoint (10); replaying 11 and 12 rebuilds exactly the same history.
              using (KvStateMachine.Open(mainDir, opts)) (fun kv ->
                  Expect.equal kv.AppliedIndex 10L "reopened at the checkpoint"
                  check kv (List.tail expectedAt10) 1L "reopened at 10"
                  run kv late
                  check kv expectedAt12 3L "replayed to 12"
                  kv.TakeSnapshot() |> ignore
                  // A snapshot installed elsewhere carries the history, trimmed records included.
                  use reader = kv.OpenSnapshotReader(nonNull kv.LatestSnapshot)
                  use other = KvStateMachine.Open(snapDir, opts)
                  other.Apply(1L, 1L, put "stale" "x") |> ignore
                  use installer = other.BeginInstall()
                  let mutable chunk = reader.ReadChunk 65536
                  while chunk.Length > 0 do
                      installer.WriteChunk(ReadOnlySpan chunk)
                      chunk <- reader.ReadChunk 65536
                  installer.Complete()
                  check other expectedAt12 3L "installed elsewhere")
              using (KvStateMachine.Open(mainDir, opts)) (fun kv -> check kv expectedAt12 3L "reopened at 12")
              // A smaller limit trims on the next change; 0 keeps nothing.
              using (KvStateMachine.Open(mainDir, KvOptions(WatchHistory = 0))) (fun kv ->
                  run kv [ 13L, Some(put "d" "13") ]
                  Expect.equal (kv.HistoryCount, kv.HistoryFloor) (0, 13L) "no history kept"
                  Expect.equal (history kv 13L "") (Error 13L) "nothing to resume from")
              // Long histories are read in chunks; the result is the same.
              using (KvStateMachine.Open(tmp.Sub "long", KvOptions(WatchHistory = 3000))) (fun kv ->
                  for i in 1L .. 5000L do
                      kv.Apply(i, 1L, put (sprintf "k/%d" (i % 2L)) (string i)) |> ignore
                  Expect.equal kv.HistoryFloor 2000L "floor"
                  match history kv 2001L "k/1" with
                  | Ok got -> Expect.equal got [ for i in 2001L..2L..4999L -> i, "k/1", string i ] "every other change, in order"
                  | Error f -> failtestf "refused at floor %d" f) ]

/// Applies entries first..last of `log` to `kv`.
let private replay (log: RaftLog) (kv: KvStateMachine) =
    if kv.AppliedIndex < log.LastIndex then
        for e in log.ReadAsync(kv.AppliedIndex + 1L, log.LastIndex).Result do
            kv.ApplyEncoded(e.Index, e.Term, ReadOnlySpan e.Payload) |> ignore

let private putEntry (i: int64) (term: int64) (k: string) (v: string) = LogEntry(i, term, CommandCodec.encode (put k v))

let private snapshotTests =
    testList
        "snapshots"
        [ testCase "a snapshot's pause, its garbage-collection share and its own work are three instruments, none tagged"
          <| fun () ->
              // A tag's every distinct value is a time series to an exporter: the GC share (a double) was one.
              let thread = Environment.CurrentManagedThreadId
              let seen = Collections.Concurrent.ConcurrentQueue<string * int>()
              use listener = new Diagnostics.Metrics.MeterListener()
              listener.InstrumentPublished <-
                  fun instrument l ->
                      if instrument.Meter.Name = "Skiff" && instrument.Name.StartsWith "skiff.snapshot_pause" then
                          l.EnableMeasurementEvents instrument
              listener.SetMeasurementEventCallback<float>(fun instrument _ tags _ ->
                  // Other tests take snapshots at the same time, on their own threads.
                  if Environment.CurrentManagedThreadId = thread then
                      seen.Enqueue(instrument.Name, tags.Length))
              listener.Start()
              use tmp = new TempDir "snap-pause-metric"
              use storage = NodeStorage.Open(tmp.Path, smallOptions ())
              use snapshots = new Skiff.Net.Storage.Ports.CheckpointSnapshotStore(storage.Kv, Path.Combine(tmp.Path, "snapmeta"))
              storage.Kv.Apply(1L, 1L, put "k/1" "one") |> ignore
              (snapshots :> Skiff.Net.Storage.Ports.ISnapshotStore).Take(1L, Configuration.Empty) |> ignore
              Expect.sequenceEqual
                  seen
                  [ "skiff.snapshot_pause_work", 0; "skiff.snapshot_pause_gc", 0; "skiff.snapshot_pause", 0 ]
                  "the own work and the GC share, then the pause, untagged"

          testCase "a snapshot's own work is its start and finish less the collections and the waits for a core in them"
          <| fun () ->
              let stretch wall gc (waited: float option) = Skiff.Net.Storage.Ports.PauseStretch(wall, gc, Option.toNullable waited)
              let add a b = Skiff.Net.Storage.Ports.PauseStretch.op_Addition (a, b)
              let pause = add (stretch 4.0 1.0 (Some 0.5)) (stretch 10.0 0.0 (Some 6.0))
              Expect.equal (pause.WallMs, pause.GcMs) (14.0, 1.0) "the two stretches add up"
              Expect.floatClose Accuracy.high pause.OwnMs 6.5 "less the collections and the waits"
              let unknown = add (stretch 4.0 1.0 (Some 2.0)) (stretch 10.0 0.0 None)
              Expect.floatClose Accuracy.high unknown.OwnMs 13.0 "a wait unknown in one stretch takes none out"
              Expect.equal (stretch 2.0 1.5 (Some 3.0)).OwnMs 0.0 "never negative"

          testCase "a thread's waits for a core come from the kernel and grow while more threads than cores are busy"
          <| fun () ->
              // What a snapshot's own work leaves out of its pause (skiff.snapshot_pause_work): read per thread.
              Expect.equal
                  (Skiff.Net.Runtime.RunQueueWait.Parse(ReadOnlySpan<byte>("5000 123456789 42\n"B)))
                  (Nullable 123456789L)
                  "the second field of schedstat, in ns"
              Expect.isFalse (Skiff.Net.Runtime.RunQueueWait.Parse(ReadOnlySpan<byte>("5000"B))).HasValue "no second field"
              if OperatingSystem.IsLinux() then
                  let before = Skiff.Net.Runtime.RunQueueWait.OfCurrentThread()
                  Expect.isTrue before.HasValue "Linux counts each thread's waits"
                  use stop = new Threading.CancellationTokenSource()
                  let spinners =
                      [ for _ in 1 .. 2 * Environment.ProcessorCount ->
                            Threading.Thread(
                                (fun () ->
                                    while not stop.IsCancellationRequested do
                                        ()),
                                IsBackground = true
                            ) ]
                  spinners |> List.iter _.Start()
                  // Busy for 300 ms beside them: with twice as many spinners as cores it waits for most of that.
                  let busy = Diagnostics.Stopwatch.StartNew()
                  while busy.ElapsedMilliseconds < 300L do
                      ()
                  stop.Cancel()
                  spinners |> List.iter _.Join()
                  let waited = Skiff.Net.Runtime.RunQueueWait.OfCurrentThread().Value - before.Value
                  Expect.isGreaterThan waited (TimeSpan.FromMilliseconds 20.0) "waited for a core while the spinners ran"

          testCase "finishing a snapshot whose checkpoint is still being taken lets reads go on while it waits"
          <| fun () ->
              use tmp = new TempDir "snap-finish-wait"
              use kv = KvStateMachine.Open tmp.Path
              kv.Apply(1L, 1L, put "k/1" "one") |> ignore
              use held = new ManualResetEventSlim()
              // The checkpoint's thread waits for `held` before it takes the checkpoint: the test holds it there.
              kv.BeginSnapshot(ignore, (fun () -> held.Wait()))
              // As a snapshot install overtaking the snapshot does: finish it before its checkpoint is done.
              let finishing = Threading.Tasks.Task.Run(fun () -> kv.FinishSnapshot())
              try
                  waitUntil 10.0 "the finish to start waiting" (fun () -> finishing.Status = Threading.Tasks.TaskStatus.Running)
                  let reading = Threading.Tasks.Task.Run(fun () -> kv.Get "k/1")
                  Expect.isTrue (reading.Wait(TimeSpan.FromSeconds 10.0)) "a read while the finish waits for the checkpoint"
                  Expect.equal reading.Result (utf8 "one") "the value"
                  Expect.isFalse finishing.IsCompleted "the finish waits for the checkpoint"
              finally
                  held.Set()
              Expect.isTrue (finishing.Wait(TimeSpan.FromSeconds 30.0)) "the finish completes once the checkpoint is done"
              Expect.equal finishing.Result.Index 1L "the snapshot"

          testCase "applying goes on while a snapshot is taken, and the snapshot holds the state at its start"
          <| fun () ->
              use tmp = new TempDir "snap-beside"
              using (KvStateMachine.Open tmp.Path) (fun kv ->
                  for i in 1L .. 10L do
                      kv.Apply(i, 1L, put (sprintf "k/%d" i) "before") |> ignore
                  use ready = new ManualResetEventSlim()
                  kv.BeginSnapshot(fun () -> ready.Set())
                  Expect.isTrue kv.SnapshotInProgress "in progress"
                  // Applied while the checkpoint is taken: overwrite, delete, add. Reads see them at once.
                  kv.Apply(11L, 1L, put "k/1" "during") |> ignore
                  kv.Apply(12L, 1L, Command.Remove "k/2") |> ignore
                  kv.Apply(13L, 1L, put "k/new" "during") |> ignore
                  Expect.equal (kv.Get "k/1") (utf8 "during") "an overwrite is read back"
                  Expect.isNull (kv.Get "k/2") "a delete is read back"
                  Expect.equal (kv.Get "k/new") (utf8 "during") "a new key is read back"
                  Expect.sequenceEqual
                      (kv.ListKeys("k/", Int32.MaxValue))
                      [ "k/1"; "k/10"; "k/3"; "k/4"; "k/5"; "k/6"; "k/7"; "k/8"; "k/9"; "k/new" ]
                      "listed"
                  Expect.isTrue (ready.Wait(TimeSpan.FromSeconds 30.0)) "the checkpoint finished"
                  let snap = kv.FinishSnapshot()
                  Expect.equal snap.Index 10L "the snapshot is of the state when it began"
                  Expect.equal (kv.Get "k/1") (utf8 "during") "still the newest value after finishing")
              using (KvStateMachine.Open tmp.Path) (fun kv ->
                  Expect.equal kv.AppliedIndex 10L "recovered at the snapshot's index"
                  Expect.equal (kv.Get "k/1") (utf8 "before") "the snapshot holds the value at its start"
                  Expect.equal (kv.Get "k/2") (utf8 "before") "and not the later delete"
                  Expect.isNull (kv.Get "k/new") "nor the later key"
                  // The writes made meanwhile went into the store after it: replayed here, then snapshotted again.
                  kv.Apply(11L, 1L, put "k/1" "during") |> ignore
                  kv.Apply(12L, 1L, Command.Remove "k/2") |> ignore
                  kv.Apply(13L, 1L, put "k/new" "during") |> ignore
                  kv.TakeSnapshot() |> ignore)
              use kv = KvStateMachine.Open tmp.Path
              Expect.equal kv.AppliedIndex 13L "the second snapshot"
              Expect.equal (kv.Get "k/1") (utf8 "during") "overwrite kept"
              Expect.isNull (kv.Get "k/2") "delete kept"
              Expect.equal kv.KeyCount 10 "key index rebuilt (k/1 to k/10 without k/2, with k/new)"

          testCase "writes kept aside during a snapshot reach the store once it is finished"
          <| fun () ->
              use tmp = new TempDir "snap-drain"
              using (KvStateMachine.Open tmp.Path) (fun kv ->
                  kv.Apply(1L, 1L, put "a" "1") |> ignore
                  use ready = new ManualResetEventSlim()
                  kv.BeginSnapshot(fun () -> ready.Set())
                  kv.Apply(2L, 1L, put "a" "2") |> ignore
                  kv.Apply(3L, 1L, put "b" "2") |> ignore
                  ready.Wait() |> ignore
                  kv.FinishSnapshot() |> ignore
                  kv.Apply(4L, 1L, put "c" "3") |> ignore
                  Expect.equal (kv.TakeSnapshot()).Index 4L "second snapshot")
              use kv = KvStateMachine.Open tmp.Path
              Expect.equal (kv.Get "a") (utf8 "2") "written during the first snapshot"
              Expect.equal (kv.Get "b") (utf8 "2") "added during the first snapshot"
              Expect.equal (kv.Get "c") (utf8 "3") "written after it"

          testCase "writes kept aside during a snapshot go into the store a few per write, newest first to reads"
          <| fun () ->
              use tmp = new TempDir "snap-drain-steps"
              using (KvStateMachine.Open tmp.Path) (fun kv ->
                  for i in 1L .. 10L do
                      kv.Apply(i, 1L, put (sprintf "k/%d" i) "before") |> ignore
                  use ready = new ManualResetEventSlim()
                  kv.BeginSnapshot(fun () -> ready.Set())
                  for j in 1L .. 200L do
                      kv.Apply(10L + j, 1L, put (sprintf "d/%d" j) "during") |> ignore
                  kv.Apply(211L, 1L, put "k/1" "during") |> ignore
                  kv.Apply(212L, 1L, Command.Remove "k/2") |> ignore
                  Expect.isTrue (ready.Wait(TimeSpan.FromSeconds 30.0)) "the checkpoint finished"
                  kv.FinishSnapshot() |> ignore
                  // Finishing did not write them all under the lock: that was the pause after every snapshot.
                  let left = kv.OverlayDraining
                  Expect.isGreaterThan left 100 "most of the overlay is still to go into the store"
                  Expect.equal (kv.Get "d/5") (utf8 "during") "a key kept aside reads back"
                  Expect.equal (kv.Get "k/1") (utf8 "during") "an overwrite kept aside reads back"
                  Expect.isNull (kv.Get "k/2") "a delete kept aside reads back"
                  // Newer writes of keys still to drain win over what is kept aside.
                  kv.Apply(213L, 1L, put "d/7" "after") |> ignore
                  kv.Apply(214L, 1L, Command.Remove "k/1") |> ignore
                  kv.Apply(215L, 1L, put "k/2" "after") |> ignore
                  Expect.isLessThan kv.OverlayDraining left "each write drains some"
                  Expect.equal (kv.Get "d/7") (utf8 "after") "an overwrite of a draining key"
                  Expect.isNull (kv.Get "k/1") "a delete of a draining key"
                  Expect.equal (kv.Get "k/2") (utf8 "after") "a key deleted aside and written again"
                  let mutable i = 215L
                  while kv.OverlayDraining > 0 && i < 400L do
                      i <- i + 1L
                      kv.Apply(i, 1L, put "x" (string i)) |> ignore
                  Expect.equal kv.OverlayDraining 0 "writes drained it all"
                  Expect.isLessThan i 300L "within a few dozen writes"
                  kv.Apply(i + 1L, 1L, put "d/9" "late") |> ignore
                  // The next snapshot begins with another overlay and ends with a store holding everything.
                  kv.TakeSnapshot() |> ignore)
              use kv = KvStateMachine.Open tmp.Path
              Expect.equal (kv.Get "d/5") (utf8 "during") "kept aside, then drained"
              Expect.equal (kv.Get "d/7") (utf8 "after") "overwritten while draining"
              Expect.equal (kv.Get "d/9") (utf8 "late") "written after draining"
              Expect.isNull (kv.Get "k/1") "deleted while draining"
              Expect.equal (kv.Get "k/2") (utf8 "after") "written again while draining"
              Expect.equal (kv.Get "k/3") (utf8 "before") "untouched"

          testCase "a snapshot begun while the last one's overlay drains takes it all"
          <| fun () ->
              use tmp = new TempDir "snap-drain-next"
              using (KvStateMachine.Open tmp.Path) (fun kv ->
                  kv.Apply(1L, 1L, put "a" "1") |> ignore
                  use ready = new ManualResetEventSlim()
                  kv.BeginSnapshot(fun () -> ready.Set())
                  for j in 1L .. 100L do
                      kv.Apply(1L + j, 1L, put (sprintf "b/%d" j) "2") |> ignore
                  Expect.isTrue (ready.Wait(TimeSpan.FromSeconds 30.0)) "the checkpoint finished"
                  kv.FinishSnapshot() |> ignore
                  Expect.isGreaterThan kv.OverlayDraining 0 "still draining"
                  Expect.equal (kv.TakeSnapshot()).Index 101L "the second snapshot"
                  Expect.equal kv.OverlayDraining 0 "drained before the checkpoint")
              use kv = KvStateMachine.Open tmp.Path
              Expect.equal kv.AppliedIndex 101L "recovered from the second snapshot"
              for j in 1L .. 100L do
                  Expect.equal (kv.Get(sprintf "b/%d" j)) (utf8 "2") "every key kept aside is in it"

          testCase "recovery after snapshot and compaction replays the log after the snapshot"
          <| fun () ->
              use tmp = new TempDir "snap"
              let opts = NodeStorageOptions(Log = RaftLogOptions(KeepTail = 5L))
              using (NodeStorage.Open(tmp.Path, opts)) (fun s ->
                  append s.Log ([| for i in 1L .. 100L -> putEntry i 1L (sprintf "k/%d" (i % 10L)) (string i) |])
                  replay s.Log s.Kv
                  let snap = s.SnapshotAndCompactAsync().Result
                  Expect.equal snap.Index 100L "snapshot index"
                  Expect.equal s.Log.FirstIndex 96L "compacted behind the snapshot, tail kept"
                  append s.Log ([| for i in 101L .. 120L -> putEntry i 2L (sprintf "k/%d" (i % 10L)) (string i) |])
                  replay s.Log s.Kv
                  Expect.equal (s.Kv.Get "k/3") (utf8 "113") "live value")
              use s = NodeStorage.Open(tmp.Path, opts)
              Expect.equal s.Kv.AppliedIndex 100L "state machine recovered at the snapshot"
              Expect.equal (s.Kv.Get "k/3") (utf8 "93") "snapshot value"
              Expect.equal s.Log.FirstIndex 96L "log first index"
              replay s.Log s.Kv
              Expect.equal s.Kv.AppliedIndex 120L "replayed"
              Expect.equal (s.Kv.Get "k/3") (utf8 "113") "value after replay"
              Expect.equal (List.ofSeq (s.Kv.ListKeys "k/")).Length 10 "keys"

          testCase "a snapshot streamed in chunks installs on an empty node atomically"
          <| fun () ->
              use tmp = new TempDir "install"
              use a = NodeStorage.Open(tmp.Sub "a")
              append a.Log ([| for i in 1L .. 500L -> putEntry i 3L (sprintf "dir%d/key%d" (i % 7L) i) (string (i * i)) |])
              replay a.Log a.Kv
              let snap = a.SnapshotAndCompactAsync().Result
              // Writes after the snapshot are not part of it.
              append a.Log [| putEntry 501L 3L "late" "x" |]
              replay a.Log a.Kv
              let bDir = tmp.Sub "b"
              using (NodeStorage.Open bDir) (fun b ->
                  use reader = a.Kv.OpenSnapshotReader snap
                  use installer = b.Kv.BeginInstall()
                  let rng = Random 42
                  let mutable chunk = reader.ReadChunk(rng.Next(1, 100_000))
                  while chunk.Length > 0 do
                      installer.WriteChunk(ReadOnlySpan chunk)
                      chunk <- reader.ReadChunk(rng.Next(1, 100_000))
                  installer.Complete()
                  b.Log.ResetToSnapshot(installer.Index, installer.Term, false).Wait()
                  Expect.equal (installer.Index, installer.Term) (500L, 3L) "snapshot position"
                  Expect.equal b.Kv.AppliedIndex 500L "applied index"
                  Expect.equal (b.Log.FirstIndex, b.Log.LastIndex) (501L, 500L) "log reset"
                  Expect.isNull (b.Kv.Get "late") "not in the snapshot")
              use b = NodeStorage.Open bDir
              Expect.equal b.Kv.AppliedIndex 500L "after reopen"
              // The recovered snapshot can be streamed on from here, to a third node.
              let recovered = nonNull b.Kv.LatestSnapshot
              Expect.equal recovered.Index 500L "recovered snapshot index"
              use c = NodeStorage.Open(tmp.Sub "c")
              using (b.Kv.OpenSnapshotReader recovered) (fun reader ->
                  use installer = c.Kv.BeginInstall()
                  let mutable chunk = reader.ReadChunk 65536
                  while chunk.Length > 0 do
                      installer.WriteChunk(ReadOnlySpan chunk)
                      chunk <- reader.ReadChunk 65536
                  installer.Complete())
              Expect.equal (c.Kv.Get "dir3/key10") (utf8 "100") "a value on the third node"
              Expect.equal c.Kv.KeyCount b.Kv.KeyCount "same key count on the third node"
              Expect.equal (b.Log.TermAt 500L |> Option.ofNullable) (Some 3L) "snapshot term in the log"
              Expect.equal (List.ofSeq (b.Kv.ListKeys "")) (List.ofSeq (a.Kv.ListKeys "") |> List.filter ((<>) "late")) "same keys"
              Expect.equal (List.ofSeq (b.Kv.GetPrefixes())) (List.ofSeq (a.Kv.GetPrefixes())) "same prefixes"
              Expect.equal (b.Kv.Get "dir3/key10") (utf8 "100") "a value"

          testCase "an install interrupted before it completed is discarded; one interrupted after is finished"
          <| fun () ->
              use tmp = new TempDir "install-crash"
              use a = NodeStorage.Open(tmp.Sub "a")
              append a.Log ([| for i in 1L .. 30L -> putEntry i 2L (sprintf "from-a/%d" i) "v" |])
              replay a.Log a.Kv
              let snap = a.Kv.TakeSnapshot()
              let bDir = tmp.Sub "b"
              // Half a stream, then the process "dies" (the installer is never completed or disposed).
              using (NodeStorage.Open bDir) (fun b ->
                  b.Kv.Apply(1L, 1L, put "mine" "1") |> ignore
                  b.Kv.TakeSnapshot() |> ignore
                  use reader = a.Kv.OpenSnapshotReader snap
                  let installer = b.Kv.BeginInstall()
                  installer.WriteChunk(ReadOnlySpan(reader.ReadChunk(1000))))
              Expect.isTrue (Directory.Exists(Path.Combine(bDir, "kv.staging"))) "staging left behind"
              using (NodeStorage.Open bDir) (fun b ->
                  Expect.isFalse (Directory.Exists(Path.Combine(bDir, "kv.staging"))) "incomplete staging discarded"
                  Expect.equal (b.Kv.Get "mine") (utf8 "1") "old state kept")
              // A complete staging directory (marker written) whose swap did not happen yet.
              let cDir = tmp.Sub "c"
              using (NodeStorage.Open cDir) (fun c ->
                  use reader = a.Kv.OpenSnapshotReader snap
                  use installer = c.Kv.BeginInstall()
                  installer.WriteChunk(ReadOnlySpan(reader.ReadChunk(int reader.Length)))
                  installer.Complete())
              let staging = Path.Combine(bDir, "kv.staging")
              Directory.CreateDirectory staging |> ignore
              for f in Directory.GetFiles(Path.Combine(cDir, "kv"), "*", SearchOption.AllDirectories) do
                  let target = Path.Combine(staging, Path.GetRelativePath(Path.Combine(cDir, "kv"), f))
                  Directory.CreateDirectory(nonNull (Path.GetDirectoryName target)) |> ignore
                  File.Copy(f, target)
              File.WriteAllText(Path.Combine(staging, "SNAPSHOT-COMPLETE"), "")
              use b = NodeStorage.Open bDir
              Expect.isNull (b.Kv.Get "mine") "swapped to the snapshot"
              Expect.equal (b.Kv.Get "from-a/7") (utf8 "v") "snapshot data"
              Expect.equal b.Kv.AppliedIndex 30L "snapshot applied index"

          testCase "a damaged snapshot stream is refused and the old state is kept"
          <| fun () ->
              use tmp = new TempDir "install-bad"
              use a = NodeStorage.Open(tmp.Sub "a")
              append a.Log ([| for i in 1L .. 50L -> putEntry i 1L (sprintf "k%d" i) "v" |])
              replay a.Log a.Kv
              let snap = a.Kv.TakeSnapshot()
              use b = NodeStorage.Open(tmp.Sub "b")
              b.Kv.Apply(1L, 1L, put "mine" "1") |> ignore
              use reader = a.Kv.OpenSnapshotReader snap
              let bytes = Array.zeroCreate<byte>(int reader.Length)
              Expect.equal (reader.Read(Span bytes)) bytes.Length "read it all"
              bytes[bytes.Length / 2] <- bytes[bytes.Length / 2] ^^^ 1uy
              use installer = b.Kv.BeginInstall()
              installer.WriteChunk(ReadOnlySpan bytes)
              expectSkiff ErrorKind.DeserializeFailed (fun () -> installer.Complete()) |> ignore
              Expect.equal (b.Kv.Get "mine") (utf8 "1") "old state kept" ]

let private diskTests =
    testList
        "disk errors"
        [ testCase "a read-only file system gives StorageError"
          <| fun () ->
              // Large enough for the default free-space reserves; tmpfs only uses what is written.
              withTmpfs 262144 (fun mnt ->
                  let dir = Path.Combine(mnt, "node")
                  using (NodeStorage.Open dir) (fun s -> append s.Log (entries 1L 3L 1L))
                  Expect.equal (sh (sprintf "mount -o remount,ro '%s'" mnt)) 0 "remounted read-only"
                  let e = expectSkiff ErrorKind.StorageError (fun () -> NodeStorage.Open(dir).Dispose())
                  Expect.stringContains e.Message "read-only" "says why")

          testCase "a full disk fails appends with StorageError without hanging; hard state still saves in place"
          <| fun () ->
              withTmpfs 65536 (fun mnt ->
                  let dir = Path.Combine(mnt, "node")
                  // No free-space reserve: this exercises FASTER's own commit failure on ENOSPC.
                  let opts =
                      NodeStorageOptions(
                          Log = RaftLogOptions(MinFreeDiskBytes = Nullable 0L),
                          Kv = KvOptions(MinFreeDiskBytes = Nullable 0L)
                      )
                  // Not `use`: if the append hangs, disposing would wait for it; the test must fail, not hang.
                  let s = NodeStorage.Open(dir, opts)
                  append s.Log (entries 1L 3L 1L)
                  Expect.equal (sh (sprintf "dd if=/dev/zero of='%s/filler' bs=64k 2>/dev/null; true" mnt)) 0 "disk filled"
                  let big = [| for i in 4L .. 2000L -> LogEntry(i, 1L, Array.zeroCreate 1000) |]
                  let appendTask = s.Log.AppendAsync(big, CancellationToken.None)
                  let finished = Task.WhenAny(appendTask, Task.Delay(TimeSpan.FromSeconds 30.0)).Result
                  Expect.isTrue (obj.ReferenceEquals(finished, appendTask)) "append on a full disk did not hang"
                  Expect.isTrue appendTask.IsFaulted "append failed"
                  match (nonNull appendTask.Exception).InnerException with
                  | :? SkiffException as e -> Expect.equal e.Kind ErrorKind.StorageError (sprintf "StorageError: %s" e.Message)
                  | other -> failtestf "expected a SkiffException, got %O" other
                  expectSkiff ErrorKind.StorageError (fun () -> append s.Log (entries 4L 4L 1L)) |> ignore
                  Expect.equal s.Log.LastIndex 3L "acknowledged entries still readable"
                  // The hard-state file is preallocated and written in place, so it needs no new blocks.
                  s.HardState.Save({ Term = 9L; VotedFor = None })
                  Expect.equal s.HardState.State.Term 9L "hard state saved on a full disk"
                  s.Dispose())

          testCase "a nearly full disk stops the key-value store with StorageError instead of hanging it"
          <| fun () ->
              withTmpfs 65536 (fun mnt ->
                  let opts =
                      KvOptions(
                          PageSizeBits = 14,
                          MemorySizeBits = 17,
                          IndexSizeBytes = (1L <<< 16),
                          MinFreeDiskBytes = Nullable(8L <<< 20)
                      )
                  // Not `use`: if applying hangs, disposing would wait for it; the test must fail, not hang.
                  let kv = KvStateMachine.Open(Path.Combine(mnt, "kv"), opts)
                  kv.Apply(1L, 1L, put "before" "1") |> ignore
                  // Leave about 4 MiB free: below the store's reserve.
                  Expect.equal
                      (sh (sprintf "dd if=/dev/zero of='%s/filler' bs=1M count=%d 2>/dev/null" mnt (64 - 4 - 1)))
                      0
                      "disk mostly filled"
                  let v = Array.zeroCreate<byte> 1000
                  let work =
                      Task.Run(fun () ->
                          for i in 2..100_000 do
                              kv.Apply(int64 i, 1L, Command.Insert(sprintf "k/%d" i, v)) |> ignore)
                  let finished = Task.WhenAny(work, Task.Delay(TimeSpan.FromSeconds 30.0)).Result
                  Expect.isTrue (obj.ReferenceEquals(finished, work)) "applying on a full disk did not hang"
                  match (nonNull work.Exception).InnerException with
                  | :? SkiffException as e ->
                      Expect.equal e.Kind ErrorKind.StorageError "StorageError"
                      Expect.stringContains e.Message "disk full" "says why"
                  | other -> failtestf "expected a SkiffException, got %O" other
                  expectSkiff ErrorKind.StorageError (fun () -> kv.TakeSnapshot() |> ignore) |> ignore
                  Expect.equal (kv.Get "before") (utf8 "1") "reads still work"
                  kv.Dispose())

          testCase "a nearly full disk refuses log appends up front with a clear message"
          <| fun () ->
              withTmpfs 65536 (fun mnt ->
                  let log =
                      RaftLog.Open(
                          Path.Combine(mnt, "log"),
                          RaftLogOptions(MemorySizeBits = 20, PageSizeBits = 16, MinFreeDiskBytes = Nullable(8L <<< 20))
                      )
                  append log (entries 1L 3L 1L)
                  Expect.equal
                      (sh (sprintf "dd if=/dev/zero of='%s/filler' bs=1M count=%d 2>/dev/null" mnt (64 - 4 - 1)))
                      0
                      "disk mostly filled"
                  let big = [| for i in 4L .. 10_000L -> LogEntry(i, 1L, Array.zeroCreate 1000) |]
                  let work = Task.Run(fun () -> log.AppendAsync(big, CancellationToken.None))
                  let finished = Task.WhenAny(work, Task.Delay(TimeSpan.FromSeconds 30.0)).Result
                  Expect.isTrue (obj.ReferenceEquals(finished, work)) "appending on a full disk did not hang"
                  match (nonNull work.Exception).InnerException with
                  | :? SkiffException as e -> Expect.stringContains e.Message "disk full" "StorageError saying why"
                  | other -> failtestf "expected a SkiffException, got %O" other
                  Expect.equal log.LastIndex 3L "earlier entries intact"
                  log.Dispose()) ]

let tests = testList "storage" [ logTests; nodeTests; kvTests; snapshotTests; diskTests ]
