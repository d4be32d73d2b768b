/// Power loss while a store of an older version is converted (issue #16): the key-value store of object values
/// (KvFormatMigration: a new store written into kv.staging, synced, marked, swapped in) and the Raft log of FASTER's
/// FasterLog (LegacyLogMigration: new segments, the `migrated` marker, the old files deleted). The old store is
/// written first and taken as durable; the conversion then runs with PowerLossRecorder recording its durability
/// steps. A first run counts the points (syncs, device writes); a second, on a fresh copy, takes images of a power
/// loss at points chosen at random among them (the conversion is single-threaded, so the points recur). Every image must open without repair and hold everything the old
/// store held. Seeded: prints the seed; SKIFF_SEED replays it. SKIFF_POWER_LOSS_SOAK=n takes n images of each
/// conversion instead of the default 12.
module Skiff.Integration.MigrationPowerLossTests

open System
open System.Collections.Generic
open System.IO
open Expecto
open Skiff.Net.Storage
open Skiff.Integration.StorageSupport
open Skiff.Integration.PowerLossRecorder

/// Runs `convert` on a fresh old store written by `prepare` under `<root>`, taking `at[n]` images of a power loss at
/// point number n (each image its own random choices); returns the points seen and the images taken.
let private record
    (tmp: TempDir)
    (name: string)
    (prepare: string -> unit)
    (convert: Recorder -> string -> unit)
    (rng: Random)
    (at: Map<int, int>)
    =
    let root = tmp.Sub name
    prepare root
    let recorder = Recorder(Path.GetFullPath root)
    recorder.Baseline()
    let images = List<string * Point>()
    let mutable points = 0
    recorder.OnPoint <-
        fun where ->
            for _ in 1 .. (at.TryFind points |> Option.defaultValue 0) do
                let dir = tmp.Sub(sprintf "%s-image-%d" name images.Count)
                recorder.Image(rng, dir)
                images.Add(dir, where)
            points <- points + 1
    do
        use _ = recorder.Hook()
        convert recorder root
    points, List.ofSeq images

/// Counts the points of one conversion, then converts again with `wanted` images at points chosen at random among
/// them (a point may get several), and checks each image with `check`.
let private powerLoss (name: string) (prepare: string -> unit) (convert: Recorder -> string -> unit) (check: string -> unit) =
    let seed = seedFromEnv ()
    let wanted = intFromEnv "SKIFF_POWER_LOSS_SOAK" (fun () -> 12)
    use tmp = new TempDir("migration-power-loss")
    let rng = Random seed
    let points, _ = record tmp (name + "-count") prepare convert rng Map.empty
    let at = Seq.init wanted (fun _ -> rng.Next points) |> Seq.countBy id |> Map.ofSeq
    let _, images = record tmp name prepare convert rng at
    printfn "migration power loss (%s): seed=%d points=%d images=%d (replay with SKIFF_SEED=%d)" name seed points images.Length seed
    // The log's migration has few (its writes are synced, not written through): segment, marker, deletions.
    Expect.isGreaterThan points 5 "the conversion went through durability steps"
    Expect.equal images.Length wanted "every image wanted was taken"
    for dir, where in images do
        try
            check dir
        with e ->
            failtestf "seed %d, image at %A: %s" seed where e.Message

let private kvOptions (devices: IKvDevices) = KvOptions(IndexSizeBytes = (1L <<< 16), PageSizeBits = 16, Devices = devices)

let private logOptions = RaftLogOptions(PageSizeBits = 16, SegmentSizeBits = 16, MemorySizeBits = 18)

let private oldLog = [ yield! entries 1L 300L 1L; yield! entries 250L 400L 2L ]

let tests =
    testList
        "migration power loss"
        [ testCase "power loss while a store of object values is converted leaves the old store or the new, both whole"
          <| fun () ->
              powerLoss
                  "kv"
                  (fun root -> KvMemoryTests.writeOldStore (Path.Combine(root, "kv")) 16 16 true KvMemoryTests.oldWrites |> ignore)
                  (fun recorder root ->
                      let dir = Path.Combine(root, "kv")
                      use kv = KvStateMachine.Open(dir, kvOptions (RecordingKvDevices recorder))
                      KvMemoryTests.expectConverted kv dir)
                  (fun image ->
                      let dir = Path.Combine(image, "kv")
                      use kv = KvStateMachine.Open(dir, kvOptions RealKvDevices.Instance)
                      KvMemoryTests.expectConverted kv dir)

          testCase "power loss while a FasterLog of older versions is migrated loses no entry"
          <| fun () ->
              powerLoss
                  "log"
                  (fun root -> writeLegacyLog root logOptions oldLog (Some(200L, 1L)))
                  (fun _ root ->
                      use log = RaftLog.Open(root, logOptions)
                      Expect.equal log.MigratedEntries 200L "entries moved over")
                  (fun image ->
                      use log = RaftLog.Open(image, logOptions)
                      Expect.isFalse (LegacyLogReader.Present image) "the old files are gone once the log opens"
                      Expect.equal (log.FirstIndex, log.LastIndex) (201L, 400L) "the log's bounds"
                      Expect.equal (log.TermAt 200L |> Option.ofNullable) (Some 1L) "the base term"
                      for e in readAll log do
                          Expect.equal e.Term (if e.Index < 250L then 1L else 2L) (sprintf "entry %d's term" e.Index)
                          Expect.isTrue
                              (e.Payload.AsSpan().SequenceEqual(ReadOnlySpan(payloadOf e.Index e.Term)))
                              (sprintf "entry %d" e.Index)) ]
