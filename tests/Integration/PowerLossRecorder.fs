/// Power-loss images of a real directory the key-value store writes in, in the manner of ALICE and LazyFS but without
/// a file system of its own: FASTER and the side files write real files, and this records what each durability step
/// made durable. Per file (identified by inode number and birth time, so a name reused by a new file is another
/// file) the content as of its last sync; FASTER's devices write through (O_SYNC on Linux), so each write it
/// completes is durable then, and the recording device below applies it. Per directory, its entries as of its last
/// fsync. An image of a power loss "now" keeps, per directory entry that changed since the last sync of its
/// directory, the old or the new one; per file, its durable content plus, per 512-byte block that differs from what
/// the file holds now, the old block, the new one or a torn mix. Images are taken at random moments inside the
/// durability steps (just before a file or directory sync, at a device write's issue and completion), while the
/// workload runs on.
module Skiff.Integration.PowerLossRecorder

open System
open System.Collections.Generic
open System.IO
open System.Runtime.InteropServices
open FASTER.core
open Skiff.Net.Storage

[<DllImport("libc", SetLastError = true)>]
extern int statx(int dirfd, string path, int flags, uint32 mask, byte[] buf)

[<DllImport("libc", SetLastError = true, EntryPoint = "open")>]
extern int private sysOpen(string path, int flags)

[<DllImport("libc", SetLastError = true)>]
extern int64 private pread(int fd, byte[] buf, unativeint count, int64 offset)

[<DllImport("libc", SetLastError = true)>]
extern int64 private lseek(int fd, int64 offset, int whence)

[<DllImport("libc", SetLastError = true, EntryPoint = "close")>]
extern int private sysClose(int fd)

/// A file or directory: inode number and birth time.
[<Struct>]
type FileId = { Ino: uint64; Birth: int64 }

/// The identity of the entry at `path` (not following links) and whether it is a directory; None if it is gone.
let idOf (path: string) : (FileId * bool) option =
    let buf = Array.zeroCreate<byte> 256
    // AT_FDCWD, AT_SYMLINK_NOFOLLOW, STATX_TYPE | STATX_INO | STATX_BTIME
    if statx (-100, path, 0x100, 0x1u ||| 0x100u ||| 0x800u, buf) <> 0 then
        None
    else
        let mode = BitConverter.ToUInt16(buf, 28)
        let ino = BitConverter.ToUInt64(buf, 32)
        let birth = BitConverter.ToInt64(buf, 80) * 1_000_000_000L + int64 (BitConverter.ToUInt32(buf, 88))
        Some({ Ino = ino; Birth = birth }, (int mode &&& 0xF000) = 0x4000)

/// A file's bytes now, read with plain libc calls (not .NET's, whose advisory locks a writer's FileShare.None
/// would refuse); None if it is gone.
let readRaw (path: string) : byte[] option =
    let fd = sysOpen (path, 0)
    if fd < 0 then
        None
    else
        try
            let size = lseek (fd, 0L, 2)
            let buf = Array.zeroCreate<byte>(int (max 0L size))
            let mutable at = 0
            let mutable go = buf.Length > 0
            while go do
                let tail = Array.zeroCreate<byte>(buf.Length - at)
                let n = pread (fd, tail, unativeint tail.Length, int64 at)
                if n <= 0L then
                    go <- false
                else
                    Array.blit tail 0 buf at (int n)
                    at <- at + int n
                    go <- at < buf.Length
            Some(if at = buf.Length then buf else buf[.. at - 1])
        finally
            sysClose fd |> ignore

/// Where images are taken: a sync about to happen, a device write issued or completed.
type Point =
    | FileSync of path: string
    | DirectorySync of path: string
    | DeviceWrite of path: string
    | DeviceWritten of path: string

/// Records the durable state of everything under `root` (an empty directory when the recorder starts).
type Recorder(root: string) =
    let gate = obj ()
    let files = Dictionary<FileId, byte[]>()
    let dirs = Dictionary<FileId, Dictionary<string, FileId * bool> * DateTime>()
    let under (path: string) =
        let full = Path.GetFullPath path
        full = root || full.StartsWith(root + "/", StringComparison.Ordinal)
    let listNow (dir: string) =
        let d = Dictionary<string, FileId * bool>()
        for p in
            (try
                Directory.GetFileSystemEntries dir
             with _ ->
                 [||]) do
            match idOf p with
            | Some e -> d[nonNull (Path.GetFileName p)] <- e
            | None -> ()
        d
    let durableOf id =
        match files.TryGetValue id with
        | true, b -> b
        | _ -> [||]
    let rootId = (idOf root).Value |> fst
    do dirs[rootId] <- (Dictionary(), Directory.GetLastWriteTimeUtc root)

    /// Takes everything under `root` now as durable: a store an older version wrote and synced before the recording
    /// starts.
    member _.Baseline() =
        lock gate (fun () ->
            let rec walk (dir: string) =
                match idOf dir with
                | Some(id, true) -> dirs[id] <- (listNow dir, Directory.GetLastWriteTimeUtc dir)
                | _ -> ()
                for f in Directory.GetFiles dir do
                    match idOf f, readRaw f with
                    | Some(id, false), Some bytes -> files[id] <- bytes
                    | _ -> ()
                for d in Directory.GetDirectories dir do
                    walk d
            walk root)

    /// Called (under the recorder's lock) at every point; the test takes its images there.
    member val OnPoint: Point -> unit = ignore with get, set

    member private this.Point(p: Point) = this.OnPoint p

    /// A file sync is about to make `path`'s current content durable.
    member this.FileSyncing(path: string) =
        if under path then
            lock gate (fun () ->
                this.Point(FileSync path)
                match idOf path, readRaw path with
                | Some(id, false), Some bytes -> files[id] <- bytes
                | _ -> ())

    /// A directory fsync is about to make its entries durable.
    member this.DirectorySyncing(path: string) =
        if under path then
            lock gate (fun () ->
                this.Point(DirectorySync path)
                match idOf path with
                | Some(id, true) -> dirs[id] <- (listNow path, Directory.GetLastWriteTimeUtc path)
                | _ -> ())

    /// A device write is about to be issued to `path`.
    member this.DeviceWriting(path: string) =
        if under path then
            lock gate (fun () -> this.Point(DeviceWrite path))

    /// A write-through device write to `path` at `offset` completed: durable now.
    member this.DeviceWritten(path: string, offset: int64, bytes: byte[]) =
        if under path then
            lock gate (fun () ->
                match idOf path with
                | Some(id, false) ->
                    let old = durableOf id
                    let d =
                        if offset + int64 bytes.Length > int64 old.Length then
                            let a = Array.zeroCreate<byte>(int offset + bytes.Length)
                            Array.blit old 0 a 0 old.Length
                            a
                        else
                            Array.copy old
                    Array.blit bytes 0 d (int offset) bytes.Length
                    files[id] <- d
                | _ -> ()
                this.Point(DeviceWritten path))

    /// Writes into `target` (an absent directory) what a power loss now could leave of `root`. Call from OnPoint
    /// (under the lock) or with nothing else running.
    member _.Image(rng: Random, target: string) =
        lock gate (fun () ->
            let mix (durable: byte[]) (now: byte[]) =
                let length = if rng.Next 2 = 0 then now.Length else durable.Length
                let out = Array.zeroCreate<byte> length
                Array.blit durable 0 out 0 (min durable.Length length)
                let mutable at = 0
                while at < min length now.Length do
                    let n = min 512 (min length now.Length - at)
                    let same = at + n <= durable.Length && ReadOnlySpan(durable, at, n).SequenceEqual(ReadOnlySpan(now, at, n))
                    if not same then
                        match rng.Next 10 with
                        | r when r < 5 -> Array.blit now at out at n
                        | 5 -> Array.blit now at out at (rng.Next n)
                        | _ -> ()
                    at <- at + n
                out
            // Where the directory `id` is now, under `dir`: a directory reached through an entry that has changed
            // since (renamed away: a snapshot's staging directory swapped in) still holds what was synced in it.
            let rec findDir (dir: string) (id: FileId) : string option =
                match idOf dir with
                | Some(i, true) when i = id -> Some dir
                | Some(_, true) ->
                    (try
                        Directory.GetDirectories dir
                     with _ ->
                         [||])
                    |> Array.tryPick (fun d -> findDir d id)
                | _ -> None
            let rec build (reached: string option) (id: FileId) (into: string) =
                Directory.CreateDirectory into |> ignore
                let durable, mtime =
                    match dirs.TryGetValue id with
                    | true, (d, t) -> d, t
                    | _ -> Dictionary(), DateTime.UtcNow
                let mutable changed = false
                let current =
                    match reached with
                    | Some p when (idOf p |> Option.map fst) = Some id -> reached
                    | _ -> findDir root id
                let now =
                    match current with
                    | Some p -> listNow p
                    | None -> Dictionary()
                for name in Seq.append durable.Keys now.Keys |> Seq.distinct |> Seq.sort do
                    let d =
                        match durable.TryGetValue name with
                        | true, e -> Some e
                        | _ -> None
                    let c =
                        match now.TryGetValue name with
                        | true, e -> Some e
                        | _ -> None
                    let chosen = if d = c || rng.Next 2 = 0 then c else d
                    if chosen <> d then
                        changed <- true
                    let currentPath = if chosen = c then current |> Option.map (fun p -> Path.Combine(p, name)) else None
                    match chosen with
                    | None -> ()
                    | Some(cid, true) -> build currentPath cid (Path.Combine(into, name))
                    | Some(cid, false) ->
                        let durableBytes = durableOf cid
                        let bytes =
                            match currentPath |> Option.bind readRaw with
                            | Some nowBytes -> mix durableBytes nowBytes
                            | None -> durableBytes
                        let file = Path.Combine(into, name)
                        File.WriteAllBytes(file, bytes)
                        match currentPath with
                        | Some p ->
                            (try
                                File.SetLastWriteTimeUtc(file, File.GetLastWriteTimeUtc p)
                             with _ ->
                                 ())
                        | None -> ()
                // FASTER tries checkpoints newest first by their directories' times: a directory's time is the
                // one it had at its last sync, unless a later change of its entries survived.
                let time =
                    match current with
                    | Some p when (changed || not (dirs.ContainsKey id)) && Directory.Exists p -> Directory.GetLastWriteTimeUtc p
                    | _ -> mtime
                Directory.SetLastWriteTimeUtc(into, time)
            build (Some root) rootId target)

    /// Routes the storage code's sync hooks to this recorder until disposed.
    member this.Hook() : IDisposable =
        let fileHook = Action<Microsoft.Win32.SafeHandles.SafeFileHandle, string>(fun _ p -> this.FileSyncing p)
        let dirHook = Action<string>(fun p -> this.DirectorySyncing p)
        StorageIo.FileSyncing <- Delegate.Combine(StorageIo.FileSyncing, fileHook) :?> _
        StorageIo.DirectorySynced <- Delegate.Combine(StorageIo.DirectorySynced, dirHook) :?> _
        { new IDisposable with
            member _.Dispose() =
                StorageIo.FileSyncing <- Delegate.Remove(StorageIo.FileSyncing, fileHook) :?> _
                StorageIo.DirectorySynced <- Delegate.Remove(StorageIo.DirectorySynced, dirHook) :?> _ }

/// A FASTER device that tells the recorder about every write (the devices write through: a completed write is durable).
type RecordingDevice(inner: IDevice, recorder: Recorder) =
    let mutable omitSegment = false
    member private _.PathOf(segment: int) = if omitSegment then inner.FileName else sprintf "%s.%d" inner.FileName segment
    member private this.Write
        (source: nativeint, segment: int, offset: uint64, n: uint32, callback: DeviceIOCompletionCallback, context: obj)
        =
        let path = this.PathOf segment
        let bytes = Array.zeroCreate<byte>(int n)
        Marshal.Copy(source, bytes, 0, int n)
        recorder.DeviceWriting path
        let done' =
            DeviceIOCompletionCallback(fun err count ctx ->
                if err = 0u then
                    recorder.DeviceWritten(path, int64 offset, bytes)
                callback.Invoke(err, count, ctx))
        inner.WriteAsync(source, segment, offset, n, done', context)
    interface IDevice with
        member _.SectorSize = inner.SectorSize
        member _.FileName = inner.FileName
        member _.Capacity = inner.Capacity
        member _.SegmentSize = inner.SegmentSize
        member _.StartSegment = inner.StartSegment
        member _.EndSegment = inner.EndSegment
        member _.ThrottleLimit
            with get () = inner.ThrottleLimit
            and set v = inner.ThrottleLimit <- v
        member _.Initialize(segmentSize, epoch, omit) =
            omitSegment <- omit
            inner.Initialize(segmentSize, epoch, omit)
        member _.TryComplete() = inner.TryComplete()
        member _.Throttle() = inner.Throttle()
        member this.WriteAsync
            (source: nativeint, segment: int, offset: uint64, n: uint32, callback: DeviceIOCompletionCallback, context: obj)
            =
            this.Write(source, segment, offset, n, callback, context)
        member _.ReadAsync
            (segment: int, offset: uint64, destination: nativeint, n: uint32, callback: DeviceIOCompletionCallback, context: obj)
            =
            inner.ReadAsync(segment, offset, destination, n, callback, context)
        member this.WriteAsync(source: nativeint, destination: uint64, n: uint32, callback: DeviceIOCompletionCallback, context: obj) =
            let size = inner.SegmentSize
            let segment, offset =
                if size > 0L then
                    int (int64 destination / size), uint64 (int64 destination % size)
                else
                    0, destination
            this.Write(source, segment, offset, n, callback, context)
        member _.ReadAsync(source: uint64, destination: nativeint, n: uint32, callback: DeviceIOCompletionCallback, context: obj) =
            inner.ReadAsync(source, destination, n, callback, context)
        member _.TruncateUntilAddressAsync(a, cb, r) = inner.TruncateUntilAddressAsync(a, cb, r)
        member _.TruncateUntilAddress a = inner.TruncateUntilAddress a
        member _.TruncateUntilSegmentAsync(s, cb, r) = inner.TruncateUntilSegmentAsync(s, cb, r)
        member _.TruncateUntilSegment s = inner.TruncateUntilSegment s
        member _.RemoveSegmentAsync(s, cb, r) = inner.RemoveSegmentAsync(s, cb, r)
        member _.RemoveSegment s = inner.RemoveSegment s
        member _.GetFileSize s = inner.GetFileSize s
        member _.Reset() = inner.Reset()
        member _.Dispose() = inner.Dispose()

/// The key-value store's devices, recorded.
type RecordingKvDevices(recorder: Recorder) =
    interface IKvDevices with
        member _.CreateLogDevice path = new RecordingDevice(RealKvDevices.Instance.CreateLogDevice path, recorder) :> IDevice
        member _.CheckpointDevices() =
            let real = RealKvDevices.Instance.CheckpointDevices()
            { new INamedDeviceFactory with
                member _.Initialize baseName = real.Initialize baseName
                member _.Get descriptor = new RecordingDevice(real.Get descriptor, recorder) :> IDevice
                member _.Delete descriptor = real.Delete descriptor
                member _.ListContents path = real.ListContents path }
