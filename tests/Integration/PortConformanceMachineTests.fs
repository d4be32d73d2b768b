/// The contracts of the state-machine ports (IStateMachine, IChangeHistory, ISnapshotStore, IStagedSnapshot), as
/// functions of a factory: every implementation must pass them (see PortConformanceTests for the list).
module Skiff.Integration.PortConformanceMachineTests

open System
open System.Collections.Generic
open System.IO
open System.Threading
open Expecto
open Skiff
open Skiff.Core
open Skiff.Net.Storage.Ports

/// What the change history may keep: changes, and bytes of them.
type HistoryLimits = { Count: int; Bytes: int64 }

/// An open state machine with its change history and snapshot store, all over one directory.
type Machine =
    { StateMachine: IStateMachine
      History: IChangeHistory
      Snapshots: ISnapshotStore
      Close: unit -> unit }

    interface IDisposable with
        member this.Dispose() = this.Close()

/// An implementation under test: opens (again after a close, as a restart would) the stores kept in a directory.
type MachineImpl = { Name: string; Open: HistoryLimits -> string -> Machine }

let private roomy = { Count = 1000; Bytes = 1L <<< 20 }

let private put (key: string) (value: string) = LogCommand.Plain(Command.Insert(key, Text.Encoding.UTF8.GetBytes value))
let private remove (key: string) = LogCommand.Plain(Command.Remove key)
let private text (bytes: byte[] | null) : string | null =
    match bytes with
    | null -> null
    | b -> Text.Encoding.UTF8.GetString b

let private valueOf (c: Change) : string | null = if c.Value.HasValue then Text.Encoding.UTF8.GetString(c.Value.Value.Span) else null

let private apply (m: Machine) (index: int64) (command: LogCommand) =
    let result, change = m.StateMachine.Apply(index, 1L, command)
    result, change

/// Applies `commands` at indexes `first`, `first + 1`, …
let private applyAll (m: Machine) (first: int64) (commands: LogCommand list) =
    commands |> List.iteri (fun i c -> apply m (first + int64 i) c |> ignore)

/// The whole history from `from` (None if it does not reach back that far), as (index, key, value) text.
let private changes (m: Machine) (from: int64) =
    let into = List<Change>()
    match m.History.TryReadChanges(from, Int64.MaxValue, "", into) with
    | true, _ -> Some [ for c in into -> c.Index, c.Key, valueOf c ]
    | false, _ -> None

let private floorOf (m: Machine) =
    let _, floor = m.History.TryReadChanges(Int64.MaxValue, Int64.MaxValue, "", List<Change>())
    floor

/// A workload of every kind of command: puts, deletes (of a key that exists and one that does not), compare-and-
/// swaps that match and that do not, and a session's request applied twice.
let private workload =
    [ put "a/1" "one" // 1
      put "a/2" "two" // 2
      put "b/x/1" "bx" // 3
      remove "a/2" // 4
      remove "missing" // 5
      LogCommand.Plain(Command.CompareAndSwap("a/1", Some(Text.Encoding.UTF8.GetBytes "one"), Some(Text.Encoding.UTF8.GetBytes "uno"))) // 6
      LogCommand.Plain(Command.CompareAndSwap("a/1", Some(Text.Encoding.UTF8.GetBytes "one"), None)) // 7: no match
      LogCommand.OpenSession(1000L, 60_000L, "") // 8: session 8
      LogCommand.InSession({ Session = 8L; Sequence = 1L; Acknowledged = 1L; Time = 1001L }, Command.Insert("c", [| 1uy |])) // 9
      LogCommand.InSession({ Session = 8L; Sequence = 1L; Acknowledged = 1L; Time = 1002L }, Command.Insert("c", [| 2uy |])) // 10: a retry
      put "b/y" "by" ] // 11

let private stateOf (m: Machine) =
    [ for k in [ "a/1"; "a/2"; "b/x/1"; "b/y"; "c"; "missing" ] -> k, m.StateMachine.Get k |> Option.ofObj |> Option.map Convert.ToHexString ],
    m.StateMachine.ListKeys("", null, 100) |> List.ofSeq

let private configOf (n: int) : Configuration =
    let id = Guid(n, 0s, 0s, Array.zeroCreate 8)
    { Configuration.Empty with Members = Map.ofList [ id, { Id = id; Address = sprintf "127.0.0.%d" n; Voter = true } ] }

/// Streams `source`'s latest snapshot into `target`, `damage` applied to the bytes on the way; the staged name.
let private stream (source: Machine) (target: Machine) (damage: byte[] -> byte[]) =
    let latest = source.Snapshots.OpenLatest()
    Expect.isTrue latest.HasValue "the source has a snapshot to send"
    let struct (meta, data) = latest.Value
    use data = data
    use copy = new MemoryStream()
    data.CopyTo copy
    let bytes = damage (copy.ToArray())
    use staging = target.Snapshots.BeginStaging()
    for chunk in bytes |> Array.chunkBySize 1000 do
        staging.Write(ReadOnlySpan chunk)
    meta, staging.Finish()

/// Runs a test with `impl` opening its stores under a fresh directory, deleted afterwards.
let private inFreshDir (impl: MachineImpl) (f: (HistoryLimits -> string -> Machine) -> unit) () =
    use tmp = new StorageSupport.TempDir "port-conformance"
    f (fun limits name -> impl.Open limits (tmp.Sub name))

let private stateMachineContract (impl: MachineImpl) =
    let withDir = inFreshDir impl
    testList
        impl.Name
        [ testCase "commands apply in order, and reads and pages see them"
          <| withDir (fun openAt ->
              use m = openAt roomy "apply"
              applyAll m 1L workload
              Expect.equal m.StateMachine.AppliedIndex 11L "applied index"
              Expect.equal (text (m.StateMachine.Get "a/1")) "uno" "the matching compare-and-swap took, the other did not"
              Expect.isNull (m.StateMachine.Get "a/2") "deleted"
              Expect.equal (m.StateMachine.Get "c") [| 1uy |] "the retried session request was not applied again"
              Expect.equal (List.ofSeq (m.StateMachine.ListKeys("", null, 100))) [ "a/1"; "b/x/1"; "b/y"; "c" ] "every key, in order"
              Expect.equal (List.ofSeq (m.StateMachine.ListKeys("b/", "b/x/1", 100))) [ "b/y" ] "a page under a prefix"
              Expect.equal (List.ofSeq (m.StateMachine.ListKeys("", null, 2))) [ "a/1"; "b/x/1" ] "a page of two"
              Expect.equal (List.ofSeq (m.StateMachine.GetPrefixes(null, 100))) [ "a"; "b"; "b/x" ] "directory parts"
              Expect.equal (List.ofSeq (m.StateMachine.GetPrefixes("a", 1))) [ "b" ] "a page of directory parts")
          testCase "a session request seen again answers with its first result"
          <| withDir (fun openAt ->
              use m = openAt roomy "session"
              let opened, _ = apply m 1L (LogCommand.OpenSession(1000L, 60_000L, "alice"))
              Expect.equal opened (LogResult.SessionOpened 1L) "the session is named by its index"
              Expect.equal (m.StateMachine.SessionOwner 1L) "alice" "its owner"
              Expect.isTrue (isNull (m.StateMachine.SessionOwner 2L)) "no owner of a session never opened"
              let cas = Command.CompareAndSwap("k", None, Some [| 7uy |])
              let stamp = { Session = 1L; Sequence = 1L; Acknowledged = 1L; Time = 1001L }
              let first, change = apply m 2L (LogCommand.InSession(stamp, cas))
              Expect.equal first (LogResult.Applied(CommandResult.Swapped true)) "applied"
              Expect.isNotNull change "a change"
              let again, change = apply m 3L (LogCommand.InSession(stamp, cas))
              Expect.equal again (LogResult.Repeated(CommandResult.Swapped true, 2L)) "answered from the first time"
              Expect.isNull change "no change the second time")
          testCase "an index at or below the applied one changes nothing; a skip only moves the applied index"
          <| withDir (fun openAt ->
              use m = openAt roomy "idempotent"
              applyAll m 1L [ put "k" "1"; put "k" "2" ]
              let _, change = apply m 1L (put "k" "1")
              Expect.isNull change "no change reported for a replayed index"
              Expect.equal (text (m.StateMachine.Get "k")) "2" "the replay did not apply"
              m.StateMachine.Skip(3L, 1L)
              m.StateMachine.Skip(2L, 1L)
              Expect.equal m.StateMachine.AppliedIndex 3L "skipped to 3, never back"
              Expect.equal (text (m.StateMachine.Get "k")) "2" "a skip changes no data"
              Expect.equal (changes m 1L |> Option.map List.length) (Some 2) "two changes, none from the replay or the skips")
          testCase "after a reopen, replaying the log after the applied index gives the same state and history"
          <| withDir (fun openAt ->
              let before =
                  use m = openAt roomy "reopen"
                  applyAll m 1L (List.take 6 workload)
                  let meta = m.Snapshots.Take(1L, configOf 1)
                  Expect.equal meta.Index 6L "snapshot at the applied index"
                  applyAll m 7L (List.skip 6 workload)
                  stateOf m, changes m 1L
              use m = openAt roomy "reopen"
              let applied = m.StateMachine.AppliedIndex
              Expect.isTrue (applied >= 6L && applied <= 11L) (sprintf "restarts between its snapshot and what it applied (%d)" applied)
              applyAll m 1L workload // the whole log again: what was applied must be ignored
              Expect.equal (stateOf m, changes m 1L) before "same data, keys and history") ]

let private historyContract (impl: MachineImpl) =
    let withDir = inFreshDir impl
    testList
        impl.Name
        [ testCase "changes read back in order, within a range and under a prefix"
          <| withDir (fun openAt ->
              use m = openAt roomy "read"
              applyAll m 1L workload
              Expect.equal (floorOf m) 0L "a new history keeps everything"
              let all = changes m 1L |> Option.defaultValue []
              Expect.equal
                  [ for i, k, _ in all -> i, k ]
                  [ 1L, "a/1"; 2L, "a/2"; 3L, "b/x/1"; 4L, "a/2"; 6L, "a/1"; 9L, "c"; 11L, "b/y" ]
                  "one change per entry that changed a key (not the delete of a missing key, the failed swap or the retry)"
              Expect.equal (all |> List.find (fun (i, _, _) -> i = 4L)) (4L, "a/2", (null: string | null)) "a delete has no value"
              let into = List<Change>()
              let ok, _ = m.History.TryReadChanges(2L, 6L, "a/", into)
              Expect.isTrue ok "in range"
              Expect.equal [ for c in into -> c.Index ] [ 2L; 4L; 6L ] "only a/ between 2 and 6")
          testCase "the history keeps at most its count of changes, and the floor says where it starts"
          <| withDir (fun openAt ->
              use m = openAt { roomy with Count = 5 } "count"
              applyAll m 1L [ for i in 1..12 -> put (sprintf "k%d" (i % 3)) (string i) ]
              let floor = floorOf m
              Expect.isTrue (floor >= 7L && floor < 12L) (sprintf "at most 5 kept, the newest among them (floor %d)" floor)
              Expect.isNone (changes m floor) "not from the floor"
              Expect.equal
                  (changes m (floor + 1L) |> Option.map (List.map (fun (i, _, _) -> i)))
                  (Some [ floor + 1L .. 12L ])
                  "all after it")
          testCase "the history keeps no more than its bytes of changes"
          <| withDir (fun openAt ->
              use m = openAt { Count = 1000; Bytes = 4096L } "bytes"
              applyAll m 1L [ for i in 1..10 -> put (sprintf "k%d" i) (String('v', 1024)) ]
              let floor = floorOf m
              let kept = changes m (floor + 1L) |> Option.defaultValue []
              Expect.isLessThanOrEqual kept.Length 4 (sprintf "4 KiB holds at most four 1 KiB values (floor %d)" floor)
              Expect.equal [ for i, _, _ in kept -> i ] [ floor + 1L .. 10L ] "every change after the floor")
          testCase "with no history kept, every read from before the applied index is refused"
          <| withDir (fun openAt ->
              use m = openAt { Count = 0; Bytes = 0L } "none"
              applyAll m 1L [ put "a" "1"; put "b" "2" ]
              Expect.isNone (changes m 2L) "nothing kept"
              Expect.equal (changes m 3L) (Some []) "from after the last change: nothing to read, but not refused") ]

let private snapshotContract (impl: MachineImpl) =
    let withDir = inFreshDir impl
    testList
        impl.Name
        [ testCase "no snapshot before one is taken; a taken one carries its configuration and survives a reopen"
          <| withDir (fun openAt ->
              do
                  use m = openAt roomy "take"
                  Expect.isNull (box m.Snapshots.Latest) "no snapshot yet"
                  Expect.isFalse (m.Snapshots.OpenLatest().HasValue) "nothing to send"
                  applyAll m 1L workload
                  let meta = m.Snapshots.Take(1L, configOf 3)
                  Expect.equal
                      (meta.Index, meta.Term, meta.Configuration)
                      (11L, 1L, configOf 3)
                      "at the applied index, with the configuration"
                  Expect.equal m.Snapshots.Latest meta "the latest"
              use m = openAt roomy "take"
              Expect.equal m.Snapshots.Latest { Index = 11L; Term = 1L; Configuration = configOf 3 } "after a reopen"
              Expect.equal (text (m.StateMachine.Get "a/1")) "uno" "its data")
          testCase "a snapshot streamed to another store installs the same state, history and metadata"
          <| withDir (fun openAt ->
              use source = openAt roomy "source"
              applyAll source 1L workload
              let taken = source.Snapshots.Take(1L, configOf 2)
              let expected = stateOf source, changes source 1L
              do
                  use target = openAt roomy "target"
                  apply target 1L (put "stale" "x") |> ignore
                  let meta, staged = stream source target id
                  Expect.equal meta taken "the stream's metadata"
                  target.Snapshots.Install(staged, meta)
                  Expect.equal target.StateMachine.AppliedIndex 11L "applied up to the snapshot"
                  Expect.isNull (target.StateMachine.Get "stale") "what the target had is replaced"
                  Expect.equal (stateOf target, changes target 1L) expected "same data, keys and history"
              use target = openAt roomy "target"
              Expect.equal target.Snapshots.Latest taken "the installed snapshot after a reopen"
              Expect.equal (stateOf target) (fst expected) "its data after a reopen")
          testCase "a damaged or cut stream is refused before it can be installed"
          <| withDir (fun openAt ->
              use source = openAt roomy "source"
              applyAll source 1L workload
              source.Snapshots.Take(1L, configOf 2) |> ignore
              use target = openAt roomy "target"
              let flip (b: byte[]) =
                  let copy = Array.copy b
                  copy[copy.Length / 2] <- copy[copy.Length / 2] ^^^ 0xFFuy
                  copy
              for name, damage in [ "flipped", flip; "cut", (fun (b: byte[]) -> b[.. b.Length - 10]) ] do
                  Expect.throwsT<SkiffException> (fun () -> stream source target damage |> ignore) (name + ": refused")
              Expect.equal target.StateMachine.AppliedIndex 0L "nothing installed"
              Expect.isNull (box target.Snapshots.Latest) "no snapshot")
          testCase "a snapshot begun beside applying holds the state where it began"
          <| withDir (fun openAt ->
              use m = openAt roomy "begin"
              applyAll m 1L [ put "k" "1"; put "k" "2" ]
              use ready = new ManualResetEventSlim()
              let meta =
                  match m.Snapshots.Begin(1L, configOf 1, Action ready.Set) |> Option.ofObj with
                  | Some done' -> done' // a store that snapshots in one step
                  | None ->
                      apply m 3L (put "k" "3") |> ignore // applying goes on meanwhile
                      Expect.isTrue (ready.Wait(TimeSpan.FromSeconds 30.0)) "the snapshot became ready"
                      m.Snapshots.Finish()
              Expect.equal meta.Index 2L "where it began"
              Expect.equal m.Snapshots.Latest meta "the latest"
              apply m 4L (put "k" "4") |> ignore
              Expect.equal (text (m.StateMachine.Get "k")) "4" "applying went on") ]

/// The three contract lists over the implementations.
let contracts (impls: MachineImpl list) =
    [ testList "IStateMachine" [ for i in impls -> stateMachineContract i ]
      testList "IChangeHistory" [ for i in impls -> historyContract i ]
      testList "ISnapshotStore" [ for i in impls -> snapshotContract i ] ]
