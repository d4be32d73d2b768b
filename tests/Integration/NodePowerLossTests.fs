/// Power loss over a node's whole storage (issue #16): the Raft log and the hard state on the recording file system
/// (RecordingFileSystem), the key-value store (FASTER's log, object log and checkpoints, the key index files) and the
/// snapshot side files on a real directory whose durability steps PowerLossRecorder records. One thread runs what a
/// node's storage goes through: appends acknowledged by the log, applies, hard-state saves, snapshots (side file,
/// checkpoint, log compaction behind it) and compactions of the store. At random moments inside the durability steps
/// an image of a power loss is taken (both file systems at once, with what had been acknowledged by then); each image
/// must then open without repair and, after replaying the log from the store's checkpoint, hold every acknowledged
/// write: the state of the log's last index, which is at least the last acknowledged one.
/// Seeded: prints the seed; SKIFF_SEED replays the same workload and choices (which writes are in flight at an image
/// depends on thread timing, so a replay is close, not identical). SKIFF_POWER_LOSS_SOAK=n checks n images instead of
/// the default 60.
module Skiff.Integration.NodePowerLossTests

open System
open System.Collections.Generic
open System.IO
open System.Threading
open Expecto
open Skiff.Net.Storage
open Skiff.Integration.StorageSupport
open Skiff.Integration.RecordingFileSystem
open Skiff.Integration.PowerLossRecorder

/// One power-loss image: the in-memory file system (log, hard state), the store's directory, and what had been
/// acknowledged when it was taken.
type private Image = { Wal: RecordingFs; Dir: string; AckedIndex: int64; AckedTerm: int64; Where: Point; Number: int }

let private logOptions = RaftLogOptions(SegmentSizeBits = 14, KeepTail = 0L, MinFreeDiskBytes = Nullable 0L)

/// Small pages and segments so pages are flushed, segments fill and compaction deletes them within seconds.
let private kvOptions (devices: IKvDevices) =
    KvOptions(
        IndexSizeBytes = (1L <<< 16),
        PageSizeBits = 12,
        MemorySizeBits = 14,
        SegmentSizeBits = 14,
        CompactionMinBytes = (64L <<< 10),
        MinFreeDiskBytes = Nullable 0L,
        WatchHistory = 200,
        Devices = devices
    )

let private snapmetaMagic = 0x4D534B53u // "SKSM"

/// The expected origin (index, term) of key `k/j` at last index `last`: the newest entry ≤ last writing it.
let private expectedAt (terms: List<int64>) (last: int64) (j: int) =
    let mutable i = last - ((last - int64 j) % 100L + 100L) % 100L
    if i >= 1L then Some(i, terms[int i]) else None

let private check (terms: List<int64>) (clusterId: Guid) (img: Image) (seed: int) =
    let ctx = sprintf "seed %d image %d (at %A, acknowledged up to %d)" seed img.Number img.Where img.AckedIndex
    let files () =
        [ for f in Directory.GetFiles(img.Dir, "*", SearchOption.AllDirectories) ->
              sprintf "%s (%d)" (Path.GetRelativePath(img.Dir, f)) (FileInfo(f).Length) ]
        |> String.concat ", "
    let cpr = Path.Combine(img.Dir, "kv", "checkpoints", "cpr-checkpoints")
    let before =
        files ()
        + (if Directory.Exists cpr then
               [ for d in Directory.GetDirectories cpr ->
                     sprintf "%s@%s" (Path.GetFileName d) (Directory.GetLastWriteTimeUtc(d).ToString "HH:mm:ss.fffffff") ]
               |> String.concat ", "
               |> sprintf "\ncheckpoint times: %s"
           else
               "")
    let fail fmt = Printf.kprintf (fun s -> failtestf "%s: %s\nwal files: %s\nstore files: %s" ctx s (img.Wal.Describe()) before) fmt
    use hs =
        try
            HardStateStore.Open("/node/hardstate", img.Wal)
        with e ->
            fail "the hard state does not open: %s" e.Message
    // Written when the cluster was founded, before the first entry: it must be there, whole, once one is acknowledged.
    let storedId =
        try
            ClusterIdFile.Read img.Dir
        with e ->
            fail "the cluster-id file does not read: %s" e.Message
    if img.AckedIndex > 0L && storedId <> Nullable clusterId then
        fail "the cluster-id file holds %A, not the cluster's %A" storedId clusterId
    if hs.State.Term < img.AckedTerm then
        fail "hard state term %d, but %d was acknowledged" hs.State.Term img.AckedTerm
    use log =
        try
            RaftLog.Open("/node/log", logOptions, img.Wal)
        with e ->
            fail "the log does not open: %s" e.Message
    if log.LastIndex < img.AckedIndex then
        fail "the log ends at %d" log.LastIndex
    use kv =
        try
            KvStateMachine.Open(Path.Combine(img.Dir, "kv"), kvOptions RealKvDevices.Instance, logHoldsEverything = (log.FirstIndex = 1L))
        with e ->
            fail "the key-value store does not open: %s" e.Message
    let applied = kv.AppliedIndex
    // A power loss between a received snapshot's swap and the log's reset leaves the store ahead of the log: the
    // runtime then starts from the snapshot (NodeStorageBinding.ReadStart), so the state is the later of the two.
    let last = max log.LastIndex applied
    let fail fmt =
        let token = kv.LatestSnapshot |> Option.ofObj |> Option.map (fun s -> string s.Token) |> Option.defaultValue "none"
        Printf.kprintf (fun s -> fail "%s (recovered checkpoint %s)" s token) fmt
    if applied > 0L && not (File.Exists(Path.Combine(img.Dir, "snapmeta", sprintf "%020d.meta" applied))) then
        fail "the store's checkpoint is at %d but its snapmeta side file is missing" applied
    if log.FirstIndex > applied + 1L then
        fail "the store is at %d but the log starts at %d: entries lost" applied log.FirstIndex
    if log.LastIndex > applied then
        for e in log.ReadAsync(applied + 1L, log.LastIndex).GetAwaiter().GetResult() do
            if not (e.Payload.AsSpan().SequenceEqual(ReadOnlySpan(payloadOf e.Index terms[int e.Index]))) then
                fail "entry %d is not the one written" e.Index
            kv.ApplyEncoded(e.Index, e.Term, ReadOnlySpan e.Payload) |> ignore
    for j in 0..99 do
        let got = kv.Get(sprintf "k/%d" j) |> Option.ofObj |> Option.map originOf
        let want = expectedAt terms last j
        if got <> want then
            fail "key k/%d holds the write of %A, the log's last index %d gives %A (store at %d)" j got log.LastIndex want applied

let private run (seed: int) (wanted: int) =
    use tmp = new TempDir "power-loss"
    let root = tmp.Sub "node"
    Directory.CreateDirectory root |> ignore
    StorageIo.FsyncDirectory root
    let recorder = Recorder(Path.GetFullPath root)
    let wal = RecordingFs()
    let rng = Random seed
    let pointRng = Random(seed + 1)
    let images = List<Image>()
    let terms = List<int64>([ 0L ]) // terms[i]: the term entry i was written with
    let mutable ackedIndex = 0L
    let mutable ackedTerm = 0L
    let mutable points = 0
    recorder.OnPoint <-
        fun where ->
            points <- points + 1
            let chance =
                match where with
                | FileSync _
                | DirectorySync _ -> 8
                | DeviceWrite _
                | DeviceWritten _ -> 60
            if images.Count < wanted && pointRng.Next chance = 0 then
                let index, term = Volatile.Read &ackedIndex, Volatile.Read &ackedTerm
                let dir = tmp.Sub(sprintf "image-%d" images.Count)
                let walImage = wal.Image pointRng
                recorder.Image(pointRng, dir)
                images.Add { Wal = walImage; Dir = dir; AckedIndex = index; AckedTerm = term; Where = where; Number = images.Count }
    let clusterId = Guid.NewGuid()
    let snapshots, compactions, installs =
        use _ = recorder.Hook()
        ClusterIdFile.Write(root, clusterId) // as a founding node does, before any entry
        // The leader this node follows, outside the recorded directory: it applies every entry, also those the
        // node misses while it lags, and sends the node its snapshot to catch up (a snapshot install: staging
        // directory, swap, the log reset behind it, as NodeRuntime does).
        use leader =
            KvStateMachine.Open(Path.Combine(tmp.Sub "leader", "kv"), kvOptions RealKvDevices.Instance, logHoldsEverything = true)
        use hs = HardStateStore.Open("/node/hardstate", wal)
        use log = RaftLog.Open("/node/log", logOptions, wal)
        use kv = KvStateMachine.Open(Path.Combine(root, "kv"), kvOptions (RecordingKvDevices recorder), logHoldsEverything = true)
        let snapmeta = Path.Combine(root, "snapmeta")
        StorageIo.CreateDirectoryDurably snapmeta
        let mutable term = 1L
        let mutable lastSnapshot = 0L
        let mutable snapshots = 0
        let mutable installs = 0
        let mutable compactionsBefore = 0 // by the stores an install replaced
        let mutable lagging = 0 // steps the node still misses
        let mutable steps = 0
        let removeMetaBut (keep: string) =
            for f in Directory.GetFiles snapmeta do
                if f <> keep then
                    File.Delete f
            StorageIo.FsyncDirectory snapmeta
        while images.Count < wanted && steps < 20_000 do
            steps <- steps + 1
            let first = int64 terms.Count
            let last = first + int64 (rng.Next(1, 20)) - 1L
            for _ in first..last do
                terms.Add term
            for e in entries first last term do
                leader.ApplyEncoded(e.Index, e.Term, ReadOnlySpan e.Payload) |> ignore
            // One lag early in every run (so every run installs), more at random.
            if lagging = 0 && (steps = 30 || rng.Next 150 = 0) then
                lagging <- rng.Next(5, 30)
            if lagging > 0 then
                lagging <- lagging - 1
                if lagging = 0 then
                    let snap = leader.TakeSnapshot()
                    let meta = Path.Combine(snapmeta, sprintf "%020d.meta" snap.Index)
                    use installer = kv.BeginInstall()
                    do
                        use reader = leader.OpenSnapshotReader snap
                        let mutable chunk = reader.ReadChunk(rng.Next(4096, 65536))
                        while chunk.Length > 0 do
                            installer.WriteChunk(ReadOnlySpan chunk)
                            chunk <- reader.ReadChunk(rng.Next(4096, 65536))
                    // The runtime's order: the snapshot's side file, the swap, then the log reset behind it.
                    SideFile.Write(meta, snapmetaMagic, 1, ReadOnlySpan(BitConverter.GetBytes snap.Index))
                    compactionsBefore <- compactionsBefore + kv.Compactions
                    installer.Complete()
                    log.ResetToSnapshot(snap.Index, snap.Term, keepSuffix = false).GetAwaiter().GetResult()
                    Volatile.Write(&ackedIndex, snap.Index)
                    removeMetaBut meta
                    lastSnapshot <- snap.Index
                    installs <- installs + 1
            else
                append log (entries first last term)
                Volatile.Write(&ackedIndex, last)
                for e in entries first last term do
                    kv.ApplyEncoded(e.Index, e.Term, ReadOnlySpan e.Payload) |> ignore
            while leader.CompactionPending do
                leader.CompactStep 1000
            if rng.Next 40 = 0 then
                term <- term + 1L
                hs.Save { Term = term; VotedFor = Some hs.NodeId }
                Volatile.Write(&ackedTerm, term)
            while kv.CompactionPending && rng.Next 3 > 0 do
                kv.CompactStep(rng.Next(1, 50))
            if kv.AppliedIndex - lastSnapshot >= 300L then
                let index = kv.AppliedIndex
                let meta = Path.Combine(snapmeta, sprintf "%020d.meta" index)
                use ready = new ManualResetEventSlim()
                kv.BeginSnapshot(
                    Action ready.Set,
                    Action(fun () -> SideFile.Write(meta, snapmetaMagic, 1, ReadOnlySpan(BitConverter.GetBytes index)))
                )
                ready.Wait()
                kv.FinishSnapshot() |> ignore
                log.CompactUntil(index).GetAwaiter().GetResult()
                removeMetaBut meta
                lastSnapshot <- index
                snapshots <- snapshots + 1
        snapshots, compactionsBefore + kv.Compactions, installs
    printfn
        "power loss test: seed=%d entries=%d snapshots=%d installs=%d compactions=%d points=%d images=%d (replay with SKIFF_SEED=%d)"
        seed
        (terms.Count - 1)
        snapshots
        installs
        compactions
        points
        images.Count
        seed
    Expect.isGreaterThan snapshots 1 "snapshots were taken"
    Expect.isGreaterThan installs 0 "snapshots were installed"
    Expect.isGreaterThan compactions 0 "the store was compacted"
    for img in images do
        check terms clusterId img seed
    Expect.equal images.Count wanted "every image wanted was taken"

let tests =
    testList
        "node power loss"
        [ testCase "power loss inside any durability step keeps every acknowledged write of log, hard state and store"
          <| fun () ->
              let seed = seedFromEnv ()
              let images = intFromEnv "SKIFF_POWER_LOSS_SOAK" (fun () -> 60)
              printfn "power loss test: seed=%d (replay with SKIFF_SEED=%d; SKIFF_POWER_LOSS_SOAK=n for n images)" seed seed
              run seed images ]
