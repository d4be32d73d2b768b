/// The state machine's memory bounded by its budget (keys and values inline in FASTER's pages), and the conversion of
/// stores of older versions (object values) when they are opened or arrive as a snapshot.
module Skiff.Integration.KvMemoryTests

open System
open System.IO
open System.Text
open Expecto
open FASTER.core
open Skiff.Core
open Skiff.Net.Storage
open Skiff.Integration.StorageSupport

// The object serializers of the older versions' store: a string key as BinaryWriter writes it, a value as its length
// then its bytes.
type private OldKeySerializer() =
    inherit BinaryObjectSerializer<string>()
    override this.Serialize(obj: byref<string>) = this.writer.Write(obj)
    override this.Deserialize(obj: byref<string>) = obj <- this.reader.ReadString()

type private OldValueSerializer() =
    inherit BinaryObjectSerializer<byte[]>()

    override this.Serialize(obj: byref<byte[]>) =
        this.writer.Write(obj.Length)
        this.writer.Write(obj)

    override this.Deserialize(obj: byref<byte[]>) =
        let n = this.reader.ReadInt32()
        obj <- this.reader.ReadBytes n

/// Writes a store as versions before inline values did (FasterKV of string keys and byte-array values, with an object
/// log), applies `writes` (Some value = put, None = delete) and takes a fold-over checkpoint; returns its token. With
/// `geometryFile` the sizes are written down as those versions did; without, it is a store from before that file.
let writeOldStore (dir: string) (pageBits: int) (segmentBits: int) (geometryFile: bool) (writes: (string * byte[] option) list) =
    Directory.CreateDirectory dir |> ignore
    if geometryFile then
        File.WriteAllText(Path.Combine(dir, StoreGeometry.FileName), sprintf "page=%d segment=%d\n" pageBits segmentBits)
    use log = Devices.CreateLogDevice(Path.Combine(dir, "hlog.log"), preallocateFile = false)
    use objects = Devices.CreateLogDevice(Path.Combine(dir, "hlog.obj.log"), preallocateFile = false)
    use settings =
        new FasterKVSettings<string, byte[]>(
            null,
            IndexSize = (1L <<< 16),
            LogDevice = log,
            ObjectLogDevice = objects,
            PageSize = (1L <<< pageBits),
            MemorySize = (1L <<< (pageBits + 4)),
            SegmentSize = (1L <<< segmentBits),
            CheckpointDir = Path.Combine(dir, "checkpoints"),
            KeySerializer = Func<IObjectSerializer<string>>(fun () -> OldKeySerializer()),
            ValueSerializer = Func<IObjectSerializer<byte[]>>(fun () -> OldValueSerializer())
        )
    use kv = new FasterKV<string, byte[]>(settings)
    use session = kv.NewSession<byte[], byte[], Empty>(SimpleFunctions<string, byte[], Empty>())
    for key, value in writes do
        match value with
        | Some v -> session.Upsert(key, v) |> ignore
        | None -> session.Delete(key) |> ignore
    let struct (ok, token) = kv.TakeFullCheckpointAsync(CheckpointType.FoldOver).AsTask().GetAwaiter().GetResult()
    Expect.isTrue ok "the old store's checkpoint"
    kv.CompleteCheckpointAsync().AsTask().GetAwaiter().GetResult()
    token

let private big = Array.init (200 * 1024) (fun i -> byte (i * 7))

/// The old store every conversion test starts from: applied up to index 7 in term 2, two live keys (one value larger
/// than a 64 KiB page holds), one deleted.
let oldWrites =
    [ AppliedRecord.Key, Some(AppliedRecord(7L, 2L, 0L, 0L).Encode())
      "a/1", Some(Encoding.UTF8.GetBytes "one")
      "a/2", Some(Encoding.UTF8.GetBytes "two")
      "a/2", None
      "big", Some big
      "a/1", Some(Encoding.UTF8.GetBytes "one, again") ]

let expectConverted (kv: KvStateMachine) (dir: string) =
    Expect.equal (kv.AppliedIndex, kv.AppliedTerm) (7L, 2L) "the applied record came across"
    Expect.equal (List.ofSeq (kv.ListKeys "")) [ "a/1"; "big" ] "the live keys, the deleted one gone"
    Expect.equal (Encoding.UTF8.GetString(nonNull (kv.Get "a/1"))) "one, again" "the newest value"
    Expect.sequenceEqual (nonNull (kv.Get "big")) big "a value larger than the old store's pages"
    Expect.isNull (kv.Get "a/2") "deleted"
    let geometry = StoreGeometry.Read(dir)
    Expect.isTrue geometry.Value.InlineValues "the store is of the new format"
    Expect.isGreaterThanOrEqual geometry.Value.PageSizeBits (KvOptions.PageSizeBitsFor(int64 big.Length)) "pages hold the largest value"
    Expect.isEmpty (Directory.GetFiles(dir, "hlog.obj.log*")) "no object log"
    Expect.isFalse (Directory.Exists(dir + ".staging")) "no staging directory left"

let private memoryTests =
    testSequenced
    <| testList
        "kv memory"
        [ testCase "values far beyond the memory budget stay on disk: the heap grows by the budget, not by the data"
          <| fun () ->
              use tmp = new TempDir "kv-memory"
              let valueBytes = 64 * 1024
              let count = 1024 // 64 MiB of values (and as much again of change history), against a budget of 1 MiB
              let options =
                  KvOptions(
                      IndexSizeBytes = (1L <<< 16),
                      PageSizeBits = KvOptions.PageSizeBitsFor(int64 valueBytes),
                      MemorySizeBits = 20,
                      WatchHistoryBytes = (16L <<< 20)
                  )
              let budget = 1L <<< options.MemorySizeBits
              let valueOf (i: int) =
                  let v = Array.create valueBytes (byte i)
                  BitConverter.GetBytes(i).CopyTo(v, 0)
                  v
              use kv = KvStateMachine.Open(tmp.Path, options)
              let before = GC.GetTotalMemory true
              let mutable peak = 0L
              for i in 1..count do
                  kv.Apply(int64 i, 1L, Command.Insert(sprintf "k/%05d" i, valueOf i)) |> ignore
                  if i % 256 = 0 then
                      peak <- max peak (GC.GetTotalMemory true - before)
                      kv.TakeSnapshot() |> ignore
              let grown = max peak (GC.GetTotalMemory true - before)
              // Slack for the pages being flushed and read back (a few of 128 KiB), FASTER's I/O buffers and the
              // key index; without inline values the heap held every value (64 MiB and more).
              let slack = 8L <<< 20
              printfn
                  "kv memory: heap grew by %d KiB for %d MiB of values, budget %d KiB"
                  (grown / 1024L)
                  (count * valueBytes >>> 20)
                  (budget / 1024L)
              Expect.isLessThan grown (budget + slack) "the heap grows by the memory budget, not by the data"
              for i in 1..count do
                  Expect.sequenceEqual (nonNull (kv.Get(sprintf "k/%05d" i))) (valueOf i) "every value reads back, most from disk"

          testCase "writes kept aside while a checkpoint is taken stay within the budget: applying waits for it"
          <| fun () ->
              use tmp = new TempDir "kv-overlay"
              let valueBytes = 64 * 1024
              let options =
                  KvOptions(IndexSizeBytes = (1L <<< 16), PageSizeBits = KvOptions.PageSizeBitsFor(int64 valueBytes), MemorySizeBits = 20)
              let valueOf (i: int) = Array.create valueBytes (byte i)
              use kv = KvStateMachine.Open(tmp.Path, options)
              kv.Apply(1L, 1L, Command.Insert("first", valueOf 1)) |> ignore
              use held = new Threading.ManualResetEventSlim()
              use ready = new Threading.ManualResetEventSlim()
              // The checkpoint's thread waits for `held` before it takes the checkpoint: the test holds it there.
              kv.BeginSnapshot(Action(fun () -> ready.Set()), Action(fun () -> held.Wait()))
              let count = 64 // 4 MiB, and as much again of change history, against a budget of 1 MiB
              let applying =
                  Threading.Tasks.Task.Run(fun () ->
                      for i in 1..count do
                          kv.Apply(int64 i + 1L, 1L, Command.Insert(sprintf "k/%02d" i, valueOf i)) |> ignore)
              let budgetWrites = int64 ((1 <<< 20) / valueBytes)
              try
                  waitUntil 10.0 "some writes applied" (fun () -> kv.AppliedIndex >= 5L)
                  // What is asserted is that nothing more happens while the checkpoint is held: a window, not a wait.
                  Expect.isFalse (applying.Wait 500) "applying waits for the checkpoint"
                  Expect.isLessThanOrEqual kv.AppliedIndex (budgetWrites + 2L) "no more kept aside than the budget (and one write)"
                  // Reads go on while applying waits: they would otherwise hold thread-pool threads the checkpoint may need.
                  let reading = Threading.Tasks.Task.Run(fun () -> kv.Get "first", kv.Get "k/01")
                  Expect.isTrue (reading.Wait(TimeSpan.FromSeconds 10.0)) "a read while applying waits for the checkpoint"
                  Expect.sequenceEqual (nonNull (fst reading.Result)) (valueOf 1) "the store's value"
                  Expect.sequenceEqual (nonNull (snd reading.Result)) (valueOf 1) "a value kept aside"
              finally
                  // Also when an expectation fails: the store's disposal waits for the checkpoint.
                  held.Set()
              Expect.isTrue (applying.Wait(TimeSpan.FromSeconds 30.0)) "applying goes on once the checkpoint is durable"
              Expect.isTrue (ready.Wait(TimeSpan.FromSeconds 30.0)) "the snapshot is ready"
              Expect.equal (kv.FinishSnapshot().Index) 1L "the snapshot holds the state at its start"
              for i in 1..count do
                  Expect.sequenceEqual (nonNull (kv.Get(sprintf "k/%02d" i))) (valueOf i) "every write kept"

          testCase "a store of object values (older versions) is converted once when opened, and loses nothing"
          <| fun () ->
              use tmp = new TempDir "kv-convert"
              let dir = tmp.Sub "kv"
              // The sizes of stores made before the geometry file existed; such a store has no geometry file.
              writeOldStore dir 20 30 false oldWrites |> ignore
              // A conversion that died half-way left this; it is discarded and the conversion runs again.
              Directory.CreateDirectory(Path.Combine(dir + ".staging", "checkpoints")) |> ignore
              File.WriteAllText(Path.Combine(dir + ".staging", "hlog.log.0"), "torn")
              let options = KvOptions(IndexSizeBytes = (1L <<< 16), PageSizeBits = 16)
              using (KvStateMachine.Open(dir, options)) (fun kv ->
                  expectConverted kv dir
                  kv.Apply(8L, 2L, Command.Insert("a/3", big)) |> ignore
                  kv.TakeSnapshot() |> ignore)
              let geometry = File.ReadAllText(Path.Combine(dir, StoreGeometry.FileName))
              use kv = KvStateMachine.Open(dir, options)
              Expect.equal (File.ReadAllText(Path.Combine(dir, StoreGeometry.FileName))) geometry "not converted again"
              Expect.equal kv.AppliedIndex 8L "the converted store takes writes and snapshots"
              Expect.sequenceEqual (nonNull (kv.Get "a/3")) big "written after the conversion"
              Expect.sequenceEqual (nonNull (kv.Get "big")) big "converted"

          testCase "a snapshot streamed from a member of an older version installs, converted"
          <| fun () ->
              use tmp = new TempDir "kv-convert-install"
              let source = tmp.Sub "old"
              let token = writeOldStore source 16 16 true oldWrites
              let info = SnapshotInfo(7L, 2L, token, CheckpointFiles.Manifest(source, token, 0L))
              Expect.isNonEmpty
                  (info.Files |> Seq.filter (fun struct (p, _) -> p.StartsWith "hlog.obj.log"))
                  "the stream carries the object log"
              let dir = tmp.Sub "kv"
              use kv = KvStateMachine.Open(dir, KvOptions(IndexSizeBytes = (1L <<< 16)))
              use reader = new SnapshotReader(source, info)
              use installer = kv.BeginInstall()
              let mutable chunk = reader.ReadChunk 65536
              while chunk.Length > 0 do
                  installer.WriteChunk(ReadOnlySpan chunk)
                  chunk <- reader.ReadChunk 65536
              installer.Complete()
              expectConverted kv dir ]

let private pageTests =
    testList
        "kv pages"
        [ testCase "a new store's pages hold the node's MaxValueBytes; a store with smaller ones refuses it at open"
          <| fun () ->
              use tmp = new TempDir "kv-pages"
              let options (maxValue: int) (dir: string) =
                  Skiff.Net.Runtime.SkiffServerOptions(DataDirectory = dir, MaxValueBytes = maxValue)
              // Just over what 2 MiB pages hold under the longest key (with its history copy), within the log's limit.
              let large = int (KvOptions.MaxValueBytesFor 21) + 1024
              using (new Skiff.Net.Runtime.NodeStorageBinding(options 1000 (tmp.Sub "small"))) ignore
              Expect.equal (StoreGeometry.Read(Path.Combine(tmp.Sub "small", "kv")).Value.PageSizeBits) 21 "the default pages"
              let refused =
                  try
                      using (new Skiff.Net.Runtime.NodeStorageBinding(options large (tmp.Sub "small"))) ignore
                      None
                  with :? Skiff.SkiffException as e ->
                      Some e.Kind
              Expect.equal refused (Some Skiff.ErrorKind.InvalidArgument) "refused with InvalidArgument"
              using (new Skiff.Net.Runtime.NodeStorageBinding(options large (tmp.Sub "large"))) ignore
              Expect.equal (StoreGeometry.Read(Path.Combine(tmp.Sub "large", "kv")).Value.PageSizeBits) 22 "pages made for the values" ]

let private historyTests =
    testList
        "applier memory"
        [ testCase "the applier's in-memory watch history is bounded in bytes; watches still resume from it"
          <| fun () ->
              use tmp = new TempDir "applier-history"
              use storage = NodeStorage.Open(tmp.Path)
              let sm = new Ports.KvStateMachineAdapter(storage.Kv)
              use snapshots = new Ports.CheckpointSnapshotStore(storage.Kv, Path.Combine(tmp.Path, "snapmeta"))
              let fatal = Threading.Tasks.TaskCompletionSource<exn>()
              // A history of up to 100,000 changes by count, as a node's default.
              let applier = Skiff.Net.Runtime.Applier(sm, snapshots, ignore, 100, 100_000, fun e -> fatal.TrySetResult e |> ignore)
              applier.Initialise()
              let value = Array.create (1 <<< 20) 7uy
              let count = 40 // 40 MiB of values
              for i in 1..count do
                  let payload = LogCommandCodec.encode (LogCommand.Plain(Command.Insert(sprintf "k/%02d" i, value)))
                  applier.Apply [ { Index = int64 i; Term = 1L; Payload = Payload.Command payload } ]
              waitUntil 30.0 "everything applied" (fun () -> sm.AppliedIndex = int64 count || fatal.Task.IsCompleted)
              Expect.isFalse fatal.Task.IsCompleted "the applier did not stop"
              Expect.isLessThanOrEqual applier.HistoryBytes Skiff.Net.Runtime.Applier.MaxHistoryBytes "at most 16 MiB kept in memory"
              Expect.isGreaterThan applier.HistoryBytes (8L <<< 20) "and the newest changes are kept"
              // The newest changes are still served from memory.
              use cancel = new Threading.CancellationTokenSource(TimeSpan.FromSeconds 10.0)
              let watch = applier.Subscribe("k/", int64 (count - 3), cancel.Token)
              for i in count - 3 .. count do
                  let change = watch.ReadAsync(cancel.Token).AsTask().Result
                  Expect.equal change.Index (int64 i) "resumed in order"
              applier.DisposeAsync(Skiff.SkiffException(Skiff.ErrorKind.StreamClosed, "test over")).AsTask().Wait() ]

let tests = testList "kv" [ memoryTests; pageTests; historyTests ]
