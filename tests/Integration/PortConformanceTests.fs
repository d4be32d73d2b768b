/// The storage ports' contracts (Runtime/Storage.cs), as one suite that every implementation must pass, as openraft's
/// storage test suite does: FASTER's, and an in-memory reference kept here. A new implementation adds one line.
module Skiff.Integration.PortConformanceTests

open System
open System.Collections.Generic
open Expecto
open Skiff.Core
open Skiff.Net.Runtime
open Skiff.Net.Storage
open Skiff.Net.Storage.Ports
open Skiff.Integration.StorageSupport

/// What a durable log holds; the in-memory reference keeps it across "reopens" as a disk would.
type private MemoryDisk() =
    member val Entries = SortedDictionary<int64, Entry>()
    member val BaseIndex = 0L with get, set
    member val BaseTerm = 0L with get, set

/// The reference log: the contract and nothing else (every append durable at once).
type private MemoryLog(disk: MemoryDisk) =
    interface ILogStore with
        member _.SnapshotIndex = disk.BaseIndex
        member _.SnapshotTerm = disk.BaseTerm
        member _.LastIndex = if disk.Entries.Count = 0 then disk.BaseIndex else Seq.last disk.Entries.Keys
        member _.Append(entries: IReadOnlyList<Entry>) =
            if entries.Count > 0 then
                for k in List.ofSeq disk.Entries.Keys do
                    if k >= entries[0].Index then
                        disk.Entries.Remove k |> ignore
                for e in entries do
                    disk.Entries[e.Index] <- e
        member _.Flush() = ()
        member _.TermAt(index: int64) =
            match disk.Entries.TryGetValue index with
            | true, e -> Nullable e.Term
            | _ when index = disk.BaseIndex -> Nullable disk.BaseTerm
            | _ -> Nullable()
        member _.Read(from: int64, upTo: int64) =
            let got = [| for i in from..upTo -> disk.Entries.TryGetValue i |]
            if from > disk.BaseIndex && upTo >= from && got |> Array.forall fst then
                got |> Array.map snd :> IReadOnlyList<Entry>
            else
                [||] :> IReadOnlyList<Entry>
        member _.CompactUntil(index: int64, term: int64) =
            for k in List.ofSeq disk.Entries.Keys do
                if k <= index then
                    disk.Entries.Remove k |> ignore
            disk.BaseIndex <- index
            disk.BaseTerm <- term
        member _.Reset(index: int64, term: int64) =
            disk.Entries.Clear()
            disk.BaseIndex <- index
            disk.BaseTerm <- term
        member _.Dispose() = ()

/// An implementation under test: opens the store kept in a directory (again after a dispose, as a restart would).
type private LogImpl = { Name: string; Open: string -> ILogStore }

/// FASTER's adapter, owning its RaftLog (in a node the NodeStorage owns it), so a dispose closes the files.
type private OwnedFasterLog(log: RaftLog) =
    let store = new WalLogStore(log) :> ILogStore
    interface ILogStore with
        member _.SnapshotIndex = store.SnapshotIndex
        member _.SnapshotTerm = store.SnapshotTerm
        member _.LastIndex = store.LastIndex
        member _.Append(entries) = store.Append entries
        member _.Flush() = store.Flush()
        member _.TermAt(index) = store.TermAt index
        member _.Read(from, upTo) = store.Read(from, upTo)
        member _.CompactUntil(index, term) = store.CompactUntil(index, term)
        member _.Reset(index, term) = store.Reset(index, term)
        member _.Dispose() = log.Dispose()

let private fasterLog (keepTail: int64) (dir: string) : ILogStore =
    new OwnedFasterLog(RaftLog.Open(dir, RaftLogOptions(KeepTail = keepTail, MemorySizeBits = 22, PageSizeBits = 18)))

let private memoryDisks = Dictionary<string, MemoryDisk>()

let private memoryLog (dir: string) : ILogStore =
    lock memoryDisks (fun () ->
        match memoryDisks.TryGetValue dir with
        | true, d -> new MemoryLog(d) :> ILogStore
        | _ ->
            let d = MemoryDisk()
            memoryDisks[dir] <- d
            new MemoryLog(d) :> ILogStore)

let private configOf (n: int) : Configuration =
    let id = Guid(n, 0s, 0s, Array.zeroCreate 8)
    { Configuration.Empty with Members = Map.ofList [ id, { Id = id; Address = sprintf "127.0.0.%d" n; Voter = true } ] }

let private entry (index: int64) (term: int64) : Entry =
    let payload =
        match index % 3L with
        | 0L -> Payload.Noop
        | 1L -> Payload.Command [| byte index; byte term; 7uy |]
        | _ -> Payload.Config(configOf (int index))
    { Index = index; Term = term; Payload = payload }

let private batch (first: int64) (last: int64) (term: int64) = [| for i in first..last -> entry i term |] :> IReadOnlyList<Entry>

let private logContract (impl: LogImpl) =
    // Each test in a fresh directory, deleted afterwards.
    let withStore (f: (string -> ILogStore) -> unit) () =
        use tmp = new TempDir "port-conformance"
        f (fun name -> impl.Open(tmp.Sub name))
    testList
        impl.Name
        [ testCase "a new log is empty"
          <| withStore (fun openLog ->
              use log = openLog "empty"
              Expect.equal (log.SnapshotIndex, log.LastIndex) (0L, 0L) "nothing stored"
              Expect.isEmpty (log.Read(1L, 1L)) "nothing to read")
          testCase "appended entries read back as written, and their terms are known"
          <| withStore (fun openLog ->
              use log = openLog "append"
              log.Append(batch 1L 10L 1L)
              log.Flush()
              Expect.equal log.LastIndex 10L "last index"
              Expect.equal (List.ofSeq (log.Read(3L, 6L))) (List.ofSeq (batch 3L 6L 1L)) "entries 3..6 with every kind of payload"
              Expect.equal (log.TermAt 5L) (Nullable 1L) "term of a stored entry"
              Expect.equal (log.TermAt 11L) (Nullable()) "no term past the end")
          testCase "an append from inside the log replaces the suffix from there"
          <| withStore (fun openLog ->
              use log = openLog "suffix"
              log.Append(batch 1L 10L 1L)
              log.Append(batch 6L 7L 2L)
              log.Flush()
              Expect.equal log.LastIndex 7L "the old suffix is gone"
              Expect.equal [ for e in log.Read(5L, 7L) -> e.Term ] [ 1L; 2L; 2L ] "the new suffix follows the kept prefix")
          testCase "compaction keeps every entry after its index and the term at it"
          <| withStore (fun openLog ->
              use log = openLog "compact"
              log.Append(batch 1L 10L 1L)
              log.Flush()
              log.CompactUntil(4L, 1L)
              Expect.isLessThanOrEqual log.SnapshotIndex 4L "starts at most after the compaction point"
              Expect.equal (List.ofSeq (log.Read(5L, 10L))) (List.ofSeq (batch 5L 10L 1L)) "later entries kept"
              Expect.equal (log.TermAt 4L) (Nullable 1L) "the compaction point's term is known")
          testCase "a reset starts an empty log after the snapshot point, and appends continue from it"
          <| withStore (fun openLog ->
              use log = openLog "reset"
              log.Append(batch 1L 10L 1L)
              log.Flush()
              log.Reset(20L, 3L)
              Expect.equal (log.SnapshotIndex, log.SnapshotTerm, log.LastIndex) (20L, 3L, 20L) "empty after 20"
              Expect.isEmpty (log.Read(5L, 7L)) "older entries are gone"
              log.Append(batch 21L 22L 3L)
              log.Flush()
              Expect.equal (List.ofSeq (log.Read(21L, 22L))) (List.ofSeq (batch 21L 22L 3L)) "appended after the reset")
          testCase "what was flushed, compacted and reset survives a reopen"
          <| withStore (fun openLog ->
              do
                  use log = openLog "reopen"
                  log.Append(batch 1L 10L 1L)
                  log.Flush()
                  log.CompactUntil(3L, 1L)
                  log.Append(batch 9L 12L 2L)
                  log.Flush()
              use log = openLog "reopen"
              Expect.equal log.LastIndex 12L "last index"
              Expect.equal (List.ofSeq (log.Read(4L, 12L))) (List.ofSeq (Seq.append (batch 4L 8L 1L) (batch 9L 12L 2L))) "entries"
              Expect.isLessThanOrEqual log.SnapshotIndex 3L "compaction point") ]

let tests =
    testList
        "port conformance"
        [ testList
              "ILogStore"
              [ logContract { Name = "in-memory reference"; Open = memoryLog }
                // KeepTail 0: the log compacts exactly where asked; the runtime's default keeps 1,000 more entries.
                logContract { Name = "FASTER, no kept tail"; Open = fasterLog 0L }
                logContract { Name = "FASTER, default kept tail"; Open = fasterLog 1000L } ] ]
