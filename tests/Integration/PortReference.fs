/// In-memory reference implementations of the storage ports (Storage/Ports): each port's contract and nothing else,
/// the yardstick the conformance suite (PortConformanceTests) holds the real implementations against. What a real
/// store keeps on disk they keep in a `MemoryDisk` per directory name, so a "reopen" sees what a restart would: the
/// log and the hard state as saved, the state machine as of its latest snapshot (as FASTER's does).
module Skiff.Integration.PortReference

open System
open System.Collections.Concurrent
open System.Collections.Generic
open System.IO
open Skiff
open Skiff.Core
open Skiff.Net.Storage.Ports
open Skiff.Simulation

/// What survives a reopen of the reference stores kept under one directory name.
type MemoryDisk() =
    member val Entries = SortedDictionary<int64, Entry>()
    member val BaseIndex = 0L with get, set
    member val BaseTerm = 0L with get, set
    member val HardState: HardState option = None with get, set
    member val Snapshot: (SnapshotMeta * byte[]) option = None with get, set

let private disks = ConcurrentDictionary<string, MemoryDisk>()

/// The disk kept under `dir` (a new one the first time).
let diskAt (dir: string) = disks.GetOrAdd(dir, fun _ -> MemoryDisk())

/// The reference log: every append durable at once.
type MemoryLog(disk: MemoryDisk) =
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

/// The reference hard-state store.
type MemoryHardState(disk: MemoryDisk) =
    interface IHardStateStore with
        member _.Load() = disk.HardState |> Option.defaultValue Unchecked.defaultof<HardState>
        member _.Save(state: HardState) = disk.HardState <- Some state
        member _.Dispose() = ()

/// The reference state machine's whole state: the simulator's key-value model (data and sessions), the applied
/// position and the change history (oldest first, each with what it counts against the byte limit).
type private MachineState = { Replica: KvModel.Replica; Applied: int64; AppliedTerm: int64; Floor: int64; History: (Change * int64) list }

let private emptyState = { Replica = KvModel.emptyReplica; Applied = 0L; AppliedTerm = 0L; Floor = 0L; History = [] }

let private magic = "skiff-reference-snapshot-1"

/// FNV-1a, so a damaged stream is refused (the port's promise: never install what would not read back).
let private checksum (bytes: ReadOnlySpan<byte>) =
    let mutable h = 14695981039346656037UL
    for b in bytes do
        h <- (h ^^^ uint64 b) * 1099511628211UL
    h

let private encodeState (s: MachineState) : byte[] =
    use buffer = new MemoryStream()
    use w = new BinaryWriter(buffer)
    w.Write magic
    w.Write s.Applied
    w.Write s.AppliedTerm
    w.Write s.Floor
    w.Write s.Replica.Data.Count
    for KeyValue(k, v) in s.Replica.Data do
        w.Write k
        w.Write v.Length
        w.Write v
    w.Write s.Replica.Sessions.Clock
    w.Write s.Replica.Sessions.Sessions.Count
    for KeyValue(_, session) in s.Replica.Sessions.Sessions do
        let b = Sessions.encode session
        w.Write b.Length
        w.Write b
    w.Write s.History.Length
    for c, cost in s.History do
        w.Write c.Index
        w.Write c.Key
        w.Write cost
        if c.Value.HasValue then
            w.Write c.Value.Value.Length
            w.Write c.Value.Value.Span
        else
            w.Write -1
    w.Flush()
    let body = buffer.ToArray()
    Array.append body (BitConverter.GetBytes(checksum (ReadOnlySpan body)))

let private decodeState (bytes: byte[]) : MachineState =
    let refuse why = raise (SkiffException(ErrorKind.DeserializeFailed, "reference snapshot: " + why))
    if bytes.Length < 8 then
        refuse "too short"
    let body = ReadOnlySpan(bytes, 0, bytes.Length - 8)
    if checksum body <> BitConverter.ToUInt64(bytes, bytes.Length - 8) then
        refuse "checksum mismatch"
    try
        use r = new BinaryReader(new MemoryStream(bytes, 0, bytes.Length - 8))
        if r.ReadString() <> magic then
            refuse "not a reference snapshot"
        let applied = r.ReadInt64()
        let appliedTerm = r.ReadInt64()
        let floor = r.ReadInt64()
        let data = Map.ofList [ for _ in 1 .. r.ReadInt32() -> r.ReadString(), r.ReadBytes(r.ReadInt32()) ]
        let clock = r.ReadInt64()
        let sessions =
            [ for _ in 1 .. r.ReadInt32() ->
                  match Sessions.decode (ReadOnlySpan(r.ReadBytes(r.ReadInt32()))) with
                  | Ok s -> s.Id, s
                  | Error e -> refuse e ]
        let history =
            [ for _ in 1 .. r.ReadInt32() ->
                  let index = r.ReadInt64()
                  let key = r.ReadString()
                  let cost = r.ReadInt64()
                  match r.ReadInt32() with
                  | -1 -> Change.Removed(index, key), cost
                  | n -> Change.Inserted(index, key, ReadOnlyMemory(r.ReadBytes n)), cost ]
        { Replica = { Data = data; Sessions = { Clock = clock; Sessions = Map.ofList sessions } }
          Applied = applied
          AppliedTerm = appliedTerm
          Floor = floor
          History = history }
    with
    | :? SkiffException -> reraise ()
    | e -> refuse e.Message

/// The reference state machine and change history: the simulator's key-value model through the session layer,
/// keeping the newest `historyCount` changes and no more than `historyBytes` of their keys and values.
type MemoryStateMachine(disk: MemoryDisk, historyCount: int, historyBytes: int64) =
    let mutable state =
        match disk.Snapshot with
        | Some(_, bytes) -> decodeState bytes
        | None -> emptyState

    /// Records a change and trims the oldest beyond either limit.
    let record (change: Change) =
        if historyCount > 0 then
            let cost =
                int64 (Text.Encoding.UTF8.GetByteCount change.Key)
                + (change.Value |> Option.ofNullable |> Option.map (fun v -> int64 v.Length) |> Option.defaultValue 0L)
            let mutable kept = state.History @ [ change, cost ]
            let mutable floor = state.Floor
            while not kept.IsEmpty && (kept.Length > historyCount || List.sumBy snd kept > historyBytes) do
                floor <- (fst kept.Head).Index
                kept <- kept.Tail
            state <- { state with History = kept; Floor = floor }
        else
            state <- { state with Floor = change.Index }

    member _.AppliedTerm = state.AppliedTerm
    member _.Encode() = encodeState state
    member _.Restore(bytes: byte[]) = state <- decodeState bytes

    interface IStateMachine with
        member _.AppliedIndex = state.Applied
        member _.Skip(index: int64, term: int64) =
            if index > state.Applied then
                state <- { state with Applied = index; AppliedTerm = term }
        member _.Apply(index: int64, term: int64, command: LogCommand, change: byref<Change>) =
            change <- null
            if index <= state.Applied then
                LogResult.Applied CommandResult.Done
            else
                let data = ref state.Replica.Data
                let made = ref (null: Change | null)
                let applyData (c: Command) =
                    let before = data.Value
                    let after, result = KvModel.apply before c
                    data.Value <- after
                    match c with
                    | Command.Insert(key, _)
                    | Command.Remove key
                    | Command.CompareAndSwap(key, _, _) ->
                        match Map.tryFind key before, Map.tryFind key after with
                        | _, Some v when result <> CommandResult.Swapped false ->
                            made.Value <- Change.Inserted(index, key, ReadOnlyMemory v)
                        | Some _, None -> made.Value <- Change.Removed(index, key)
                        | _ -> ()
                    result
                let result =
                    match command with
                    | LogCommand.Auth _ -> LogResult.AuthRefused "the reference state machine keeps no auth state"
                    | _ ->
                        let applied = Sessions.apply applyData state.Replica.Sessions index command
                        state <- { state with Replica = { Data = data.Value; Sessions = applied.Table } }
                        applied.Result
                state <- { state with Applied = index; AppliedTerm = term }
                match made.Value with
                | null -> ()
                | m -> record m
                change <- made.Value
                result
        member _.SessionOwner(session: int64) : string | null =
            match Map.tryFind session state.Replica.Sessions.Sessions with
            | Some s -> s.Owner
            | None -> null

        member _.Get(key: string) = Map.tryFind key state.Replica.Data |> Option.toObj
        member _.ListKeys(prefix: string, startAfter: string, limit: int) =
            state.Replica.Data.Keys
            |> Seq.filter (fun k ->
                k.StartsWith(prefix, StringComparison.Ordinal) && (isNull startAfter || String.CompareOrdinal(k, startAfter) > 0))
            |> Seq.truncate limit
            |> Seq.toArray
            :> IReadOnlyList<string>
        member _.GetPrefixes(startAfter: string, limit: int) =
            state.Replica.Data.Keys
            |> Seq.choose (fun k ->
                match k.LastIndexOf '/' with
                | -1 -> None
                | i -> Some(k.Substring(0, i)))
            |> Seq.distinct
            |> Seq.sortWith (fun a b -> String.CompareOrdinal(a, b))
            |> Seq.filter (fun p -> isNull startAfter || String.CompareOrdinal(p, startAfter) > 0)
            |> Seq.truncate limit
            |> Seq.toArray
            :> IReadOnlyList<string>
        member _.Dispose() = ()

    interface IChangeHistory with
        member _.TryReadChanges(from: int64, upTo: int64, prefix: string, into: List<Change>, floor: byref<int64>) =
            floor <- state.Floor
            if from <= state.Floor then
                false
            else
                for c, _ in state.History do
                    if c.Index >= from && c.Index <= upTo && c.Key.StartsWith(prefix, StringComparison.Ordinal) then
                        into.Add c
                true

/// The reference snapshot store: a snapshot is the state machine's state encoded (with a checksum), kept on the
/// disk with its metadata, streamed as those bytes, and installed by decoding them.
type MemorySnapshots(disk: MemoryDisk, machine: MemoryStateMachine) =
    let staged = ConcurrentDictionary<string, byte[]>()

    interface ISnapshotStore with
        member _.Latest = disk.Snapshot |> Option.map fst |> Option.defaultValue Unchecked.defaultof<SnapshotMeta>
        member _.Take(_term: int64, configuration: Configuration) =
            let meta = { Index = (machine :> IStateMachine).AppliedIndex; Term = machine.AppliedTerm; Configuration = configuration }
            disk.Snapshot <- Some(meta, machine.Encode())
            meta
        member _.OpenLatest() =
            match disk.Snapshot with
            // A boxed tuple unboxes to the Nullable the port returns (F# cannot name its nullable element types).
            | Some(meta, bytes) -> unbox (box (struct (meta, new MemoryStream(bytes, false) :> Stream)))
            | None -> Unchecked.defaultof<_> // none: a null Nullable
        member _.BeginStaging() =
            let received = new MemoryStream()
            { new IStagedSnapshot with
                member _.Write(chunk) = received.Write chunk
                member _.Finish() =
                    let bytes = received.ToArray()
                    decodeState bytes |> ignore // refuse a damaged stream before Raft may install it
                    let name = "memory-" + Guid.NewGuid().ToString "N"
                    staged[name] <- bytes
                    name
                member _.Dispose() = received.Dispose() }
        member _.Install(name: string, meta: SnapshotMeta) =
            match staged.TryRemove name with
            | true, bytes ->
                machine.Restore bytes
                disk.Snapshot <- Some(meta, bytes)
            | _ -> raise (SkiffException(ErrorKind.StorageError, sprintf "staged snapshot %s is gone" name))
        member _.Dispose() = ()
