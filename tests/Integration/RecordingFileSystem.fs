/// A file system for crash-consistency tests, in the manner of ALICE and LazyFS: it keeps, per file, the content
/// that was synced and the writes and truncations since, and per directory the entries as of the last directory
/// sync. A "crash" yields a new file system holding what was durable plus a random subset of what was not: each
/// unsynced 512-byte block of a write is kept, lost or torn (a prefix kept) independently, so later blocks may
/// survive without earlier ones; each unsynced creation or deletion of a directory entry happens or not.
module Skiff.Integration.RecordingFileSystem

open System
open System.Collections.Generic
open System.IO
open Skiff.Net.Storage

type internal Op =
    | Write of offset: int64 * bytes: byte[]
    | Truncate of length: int64

/// One file's bytes (an inode: a deleted file's open handles still read it, as on Unix).
type internal Inode(data: byte[]) =
    member val Data = data with get, set
    member val Durable = Array.copy data with get, set
    member val Pending = List<Op>()

let private resize (data: byte[]) (length: int64) =
    let a = Array.zeroCreate<byte>(int length)
    Array.blit data 0 a 0 (min data.Length a.Length)
    a

let private apply (data: byte[]) (op: Op) =
    match op with
    | Write(off, bytes) ->
        let d =
            if off + int64 bytes.Length > int64 data.Length then
                resize data (off + int64 bytes.Length)
            else
                data
        Array.blit bytes 0 d (int off) bytes.Length
        d
    | Truncate len -> resize data len

/// The recording file system. After `Crash` it is frozen: every later operation fails as after a power loss.
type RecordingFs private (names: Dictionary<string, Inode>) =
    let gate = obj ()
    let durableNames = Dictionary<string, Inode>(names)
    let mutable frozen = false
    let mutable opsUntilCrash = Int32.MaxValue
    let mutable crashed: RecordingFs option = None
    let mutable crashRng = Random 0

    new() = RecordingFs(Dictionary())

    /// Counts file-system operations and, at the n-th, crashes (see `Crash`) with `rng`'s choices.
    member _.CrashAfter(n: int, rng: Random) =
        lock gate (fun () ->
            opsUntilCrash <- n
            crashRng <- rng)

    /// The file system the crash left, once it happened.
    member _.Crashed = lock gate (fun () -> crashed)

    member private this.Step() =
        if frozen then
            raise (IOException "power lost")
        opsUntilCrash <- opsUntilCrash - 1
        if opsUntilCrash <= 0 then
            crashed <- Some(this.CrashNow crashRng)
            frozen <- true
            raise (IOException "power lost")

    /// What would survive a power loss now, leaving this file system running (a crash image taken mid-workload).
    member this.Image(rng: Random) = lock gate (fun () -> this.CrashNow rng)

    /// What survives a power loss now.
    member this.Crash(rng: Random) =
        lock gate (fun () ->
            let fs = this.CrashNow rng
            frozen <- true
            fs)

    member private _.CrashNow(rng: Random) : RecordingFs =
        let survivors = Dictionary<Inode, byte[]>(HashIdentity.Reference)
        let content (inode: Inode) =
            match survivors.TryGetValue inode with
            | true, c -> c
            | _ ->
                let mutable d = Array.copy inode.Durable
                let mutable maxEnd = int64 d.Length
                for op in inode.Pending do
                    match op with
                    | Write(off, bytes) ->
                        maxEnd <- max maxEnd (off + int64 bytes.Length)
                        let mutable at = 0
                        while at < bytes.Length do
                            let blockEnd = int (min (int64 bytes.Length) (((off + int64 at) / 512L + 1L) * 512L - off))
                            let block = bytes[at .. blockEnd - 1]
                            match rng.Next 10 with
                            | r when r < 5 -> d <- apply d (Write(off + int64 at, block))
                            | 5 -> d <- apply d (Write(off + int64 at, block[.. rng.Next block.Length]))
                            | _ -> ()
                            at <- blockEnd
                    | Truncate _ when rng.Next 2 = 0 -> d <- apply d op
                    | Truncate _ -> ()
                // The size may reach the disk without the data: zeros.
                if rng.Next 4 = 0 && maxEnd > int64 d.Length then
                    d <- resize d maxEnd
                survivors[inode] <- d
                d
        let result = Dictionary<string, Inode>()
        for name in Seq.append names.Keys durableNames.Keys |> Seq.distinct |> Seq.sort do
            let now =
                match names.TryGetValue name with
                | true, i -> Some i
                | _ -> None
            let before =
                match durableNames.TryGetValue name with
                | true, i -> Some i
                | _ -> None
            let chosen =
                if now = before then now
                elif rng.Next 2 = 0 then now
                else before
            match chosen with
            | Some inode -> result[name] <- Inode(content inode)
            | None -> ()
        RecordingFs(result)

    /// The files and their bytes (for messages).
    member _.Describe() =
        lock gate (fun () ->
            [ for kv in names -> sprintf "%s (%d bytes)" (Path.GetFileName kv.Key) kv.Value.Data.Length ] |> String.concat ", ")

    interface IWalFileSystem with
        member _.Deterministic = true

        member _.CreateDirectory _ = ()

        member this.List(dir, suffix) =
            lock gate (fun () ->
                this.Step()
                [| for n in names.Keys do
                       if Path.GetDirectoryName n = dir && n.EndsWith(suffix: string) then
                           nonNull (Path.GetFileName n) |]
                :> IReadOnlyList<string>)

        member this.Open(path, create) =
            lock gate (fun () ->
                this.Step()
                let inode =
                    match names.TryGetValue path with
                    | true, i -> i
                    | _ when create ->
                        let i = Inode(Array.empty)
                        names[path] <- i
                        i
                    | _ -> raise (FileNotFoundException path)
                { new IWalFile with
                    member _.Length = lock gate (fun () -> int64 inode.Data.Length)

                    member _.Read(offset, buffer) =
                        // Not `lock`: a span cannot be captured by its closure.
                        Threading.Monitor.Enter gate
                        try
                            if frozen then
                                raise (IOException "power lost")
                            let n = max 0 (min buffer.Length (inode.Data.Length - int offset))
                            if n > 0 then
                                ReadOnlySpan(inode.Data, int offset, n).CopyTo(buffer)
                            n
                        finally
                            Threading.Monitor.Exit gate

                    member _.Write(offset, buffers) =
                        lock gate (fun () ->
                            this.Step()
                            let mutable at = offset
                            for b in buffers do
                                let op = Write(at, b.ToArray())
                                inode.Data <- apply inode.Data op
                                inode.Pending.Add op
                                at <- at + int64 b.Length)

                    member _.Sync() =
                        lock gate (fun () ->
                            this.Step()
                            inode.Durable <- Array.copy inode.Data
                            inode.Pending.Clear())

                    member _.Truncate length =
                        lock gate (fun () ->
                            this.Step()
                            let op = Truncate length
                            inode.Data <- apply inode.Data op
                            inode.Pending.Add op)

                    member _.Dispose() = () })

        member this.Delete path =
            lock gate (fun () ->
                this.Step()
                names.Remove path |> ignore)

        member this.Rename(from, to') =
            lock gate (fun () ->
                this.Step()
                match names.TryGetValue from with
                | true, inode ->
                    names.Remove from |> ignore
                    names[to'] <- inode
                | _ -> raise (FileNotFoundException from))

        member this.SyncDirectory dir =
            lock gate (fun () ->
                this.Step()
                for n in List.ofSeq durableNames.Keys do
                    if Path.GetDirectoryName n = dir then
                        durableNames.Remove n |> ignore
                for kv in names do
                    if Path.GetDirectoryName kv.Key = dir then
                        durableNames[kv.Key] <- kv.Value)
