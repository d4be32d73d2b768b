/// The storage ports' contracts (Storage/Ports), as one suite that every implementation must pass, as openraft's
/// storage test suite does: each contract is a function of a factory that opens an implementation over a directory
/// (again after a dispose, as a restart would). It runs over the real stores (Skiff's WAL, the hard-state file,
/// FASTER KV with its checkpoints) and over the in-memory reference ones (PortReference.fs); a new implementation
/// adds one line to each list at the end. The state-machine ports' contracts are in PortConformanceMachineTests.
module Skiff.Integration.PortConformanceTests

open System
open System.Collections.Generic
open System.IO
open Expecto
open Skiff.Core
open Skiff.Net.Storage
open Skiff.Net.Storage.Ports
open Skiff.Integration.StorageSupport
open Skiff.Integration.PortReference
open Skiff.Integration.PortConformanceMachineTests

/// An implementation under test: opens the store kept in a directory (again after a dispose, as a restart would).
type private LogImpl = { Name: string; Open: string -> ILogStore }

/// The WAL's adapter, owning its RaftLog (in a node the NodeStorage owns it), so a dispose closes the files.
type private OwnedWalLog(log: RaftLog) =
    let store = new WalLogStore(log) :> ILogStore
    interface ILogStore with
        member _.SnapshotIndex = store.SnapshotIndex
        member _.SnapshotTerm = store.SnapshotTerm
        member _.LastIndex = store.LastIndex
        member _.Append(entries) = store.Append entries
        member _.Append(entries, commitHint) = store.Append(entries, commitHint)
        member _.RecoveredCommitHint = store.RecoveredCommitHint
        member _.NoteCommit(commitHint) = store.NoteCommit commitHint
        member _.Flush() = store.Flush()
        member _.TermAt(index) = store.TermAt index
        member _.Read(from, upTo) = store.Read(from, upTo)
        member _.CompactUntil(index, term) = store.CompactUntil(index, term)
        member _.Reset(index, term) = store.Reset(index, term)
        member _.Dispose() = log.Dispose()

let private walLog (keepTail: int64) (dir: string) : ILogStore =
    new OwnedWalLog(RaftLog.Open(dir, RaftLogOptions(KeepTail = keepTail, MemorySizeBits = 22, PageSizeBits = 18)))

let private memoryLog (dir: string) : ILogStore = new MemoryLog(diskAt dir)

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
          testCase "a commit index recorded with an append, if kept, never exceeds what was recorded nor the log"
          <| withStore (fun openLog ->
              do
                  use log = openLog "commit-hint"
                  log.Append(batch 1L 10L 1L, 6L)
                  log.Flush()
                  log.Append(batch 11L 12L 1L, 40L)
                  log.Flush()
              use log = openLog "commit-hint"
              let hint = log.RecoveredCommitHint
              Expect.isTrue (hint = 0L || hint = 12L) (sprintf "none, or the last recorded one clamped to the log (got %d)" hint))
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
              Expect.isLessThanOrEqual log.SnapshotIndex 3L "compaction point")
          testCase "a reset survives a reopen, and so do the entries appended after it"
          <| withStore (fun openLog ->
              do
                  use log = openLog "reset-reopen"
                  log.Append(batch 1L 10L 1L)
                  log.Flush()
                  log.Reset(30L, 4L)
                  log.Append(batch 31L 32L 4L)
                  log.Flush()
              use log = openLog "reset-reopen"
              Expect.equal (log.SnapshotIndex, log.SnapshotTerm, log.LastIndex) (30L, 4L, 32L) "after 30, up to 32"
              Expect.equal (log.TermAt 30L) (Nullable 4L) "the reset point's term"
              Expect.isEmpty (log.Read(1L, 10L)) "the entries before the reset are gone"
              Expect.equal (List.ofSeq (log.Read(31L, 32L))) (List.ofSeq (batch 31L 32L 4L)) "entries after it") ]

/// A hard-state store under test, over a directory.
type private HardStateImpl = { Name: string; Open: string -> IHardStateStore }

let private hardStateContract (impl: HardStateImpl) =
    let withStore (f: (string -> IHardStateStore) -> unit) () =
        use tmp = new TempDir "port-conformance-hard"
        f (fun name -> impl.Open(tmp.Sub name))
    let voted (term: int64) (n: int) : HardState = { Term = term; VotedFor = Some(Guid(n, 0s, 0s, Array.zeroCreate 8)) }
    testList
        impl.Name
        [ testCase "a new store holds no term and no vote"
          <| withStore (fun openAt ->
              use store = openAt "fresh"
              match store.Load() |> box with
              | null -> ()
              | :? HardState as h -> Expect.equal h { Term = 0L; VotedFor = None } "term 0, no vote"
              | other -> failtestf "unexpected %O" other)
          testCase "the last state saved is loaded, after a reopen too"
          <| withStore (fun openAt ->
              do
                  use store = openAt "save"
                  store.Save(voted 1L 1)
                  store.Save(voted 2L 2)
                  store.Save { Term = 3L; VotedFor = None }
                  Expect.equal (store.Load()) { Term = 3L; VotedFor = None } "the last one"
                  store.Save(voted 3L 7)
              use store = openAt "save"
              Expect.equal (store.Load()) (voted 3L 7) "the last one after a reopen") ]

/// The hard-state file's adapter owning its store, so a dispose closes the file.
let private hardStateFile (dir: string) : IHardStateStore =
    Directory.CreateDirectory dir |> ignore
    let file = HardStateStore.Open(Path.Combine(dir, "hardstate"))
    let store = new HardStateFileStore(file) :> IHardStateStore
    { new IHardStateStore with
        member _.Load() = store.Load()
        member _.Save(state) = store.Save state
        member _.Dispose() = file.Dispose() }

let private memoryHardState (dir: string) : IHardStateStore = new MemoryHardState(diskAt dir)

/// The FASTER state machine with its checkpoint snapshots, as a node opens them (small memory sizes).
let private kvMachine (limits: HistoryLimits) (dir: string) : Machine =
    let options =
        NodeStorageOptions(
            Kv =
                KvOptions(
                    IndexSizeBytes = (1L <<< 16),
                    MemorySizeBits = 22,
                    PageSizeBits = 18,
                    WatchHistory = limits.Count,
                    WatchHistoryBytes = limits.Bytes
                )
        )
    let storage = NodeStorage.Open(dir, options)
    let machine = new KvStateMachineAdapter(storage.Kv)
    let snapshots = new CheckpointSnapshotStore(storage.Kv, Path.Combine(dir, "snapmeta"))
    { StateMachine = machine
      History = machine
      Snapshots = snapshots
      Close =
        fun () ->
            snapshots.Dispose()
            storage.Dispose() }

let private memoryMachine (limits: HistoryLimits) (dir: string) : Machine =
    let disk = diskAt dir
    let machine = new MemoryStateMachine(disk, limits.Count, limits.Bytes)
    { StateMachine = machine; History = machine; Snapshots = new MemorySnapshots(disk, machine); Close = ignore }

let tests =
    testList
        "port conformance"
        [ testList
              "ILogStore"
              [ logContract { LogImpl.Name = "in-memory reference"; Open = memoryLog }
                // KeepTail 0: the log compacts exactly where asked; the runtime's default keeps 1,000 more entries.
                logContract { LogImpl.Name = "WAL, no kept tail"; Open = walLog 0L }
                logContract { LogImpl.Name = "WAL, default kept tail"; Open = walLog 1000L } ]
          testList
              "IHardStateStore"
              [ hardStateContract { HardStateImpl.Name = "in-memory reference"; Open = memoryHardState }
                hardStateContract { HardStateImpl.Name = "hard-state file"; Open = hardStateFile } ]
          yield!
              contracts
                  [ { MachineImpl.Name = "in-memory reference"; Open = memoryMachine }
                    { MachineImpl.Name = "FASTER KV with checkpoints"; Open = kvMachine } ] ]
