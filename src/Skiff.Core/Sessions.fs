/// Client sessions (Raft dissertation §6.3): how a replicated state machine applies each client request at most
/// once although clients retry. A client opens a session through the log and numbers its writes; the state machine
/// keeps, per session, the results of the requests the client may still retry, and answers a request seen again
/// with its recorded result instead of applying it again.
///
/// Everything here is a pure function of the table and the log command, so every member decides the same: expiry
/// uses the log's own clock (the largest leader time stamped into an applied entry), never a member's clock.
/// Both state machines use it: the simulator's in-memory one (KvModel) and the FASTER one in Skiff.Net.
module Skiff.Core.Sessions

open System
open System.Buffers.Binary

/// A request's result, kept so that a retry gets the same answer.
type Recorded =
    {
        /// What the request did when it was applied.
        Result: CommandResult
        /// The log index it was applied at.
        Index: int64
    }

/// One client session.
type Session =
    {
        /// The log index of the entry that opened the session.
        Id: int64
        /// The session expires after this many milliseconds of log time without a request.
        TimeoutMs: int64
        /// The log time of the session's latest request.
        LastActive: int64
        /// Requests numbered below this were answered (or their results dropped): their results are forgotten, and
        /// a request numbered below it is never applied.
        Floor: int64
        /// Results of the requests numbered at or above `Floor` that were applied.
        Results: ResultWindow<Recorded>
        /// Who opened it ("" for nobody in particular: auth was off, or the embedding application opened it). The
        /// members check it (with auth on, only the owner, root or a member may use the session); the session
        /// layer itself only keeps it.
        Owner: string
    }

/// The state machine's sessions.
type Table =
    {
        /// The log's clock: the largest leader time (Unix milliseconds) of any applied session command.
        Clock: int64
        /// Live sessions (and expired ones not yet swept: `isExpired` decides, not presence).
        Sessions: Map<int64, Session>
    }

/// A change to the table that a durable state machine must persist.
[<RequireQualifiedAccess>]
type Touched =
    | Saved of session: Session
    | Removed of session: int64

/// No sessions, clock at zero.
let empty: Table = { Clock = 0L; Sessions = Map.empty }

/// At most this many sessions; opening one more evicts the least recently active.
[<Literal>]
let MaxSessions = 16384

/// At most this many results per session: past it, the oldest are dropped (and their requests are never applied
/// again: a retry of one gets `ResultDiscarded`). A client with fewer writes in flight never reaches it.
[<Literal>]
let MaxResultsPerSession = 1024

/// The shortest and longest session timeout a member proposes (the state machine takes what the log says).
let MinTimeoutMs, MaxTimeoutMs = 1_000L, 7L * 24L * 3600L * 1000L

/// Whether a session has expired at log time `clock`.
let isExpired (clock: int64) (session: Session) = clock - session.LastActive > session.TimeoutMs

let private removeExpired (table: Table) : Table * Touched list =
    let expired =
        table.Sessions |> Seq.filter (fun kv -> isExpired table.Clock kv.Value) |> Seq.map (fun kv -> kv.Key) |> List.ofSeq
    { table with Sessions = List.fold (fun m id -> Map.remove id m) table.Sessions expired }, expired |> List.map Touched.Removed

let private evictOverCap (table: Table) : Table * Touched list =
    let over = table.Sessions.Count - (MaxSessions - 1)
    if over <= 0 then
        table, []
    else
        let victims =
            table.Sessions
            |> Seq.map (fun kv -> kv.Value)
            |> Seq.sortBy (fun s -> s.LastActive, s.Id)
            |> Seq.truncate over
            |> Seq.map (fun s -> s.Id)
            |> List.ofSeq
        { table with Sessions = List.fold (fun m id -> Map.remove id m) table.Sessions victims }, victims |> List.map Touched.Removed

/// Forgets the results the client has acknowledged, and the oldest ones past the cap.
let private trim (acknowledged: int64) (session: Session) : Session =
    let mutable floor = max session.Floor acknowledged
    let mutable results = session.Results.DropBelow floor
    while results.Count > MaxResultsPerSession do
        let oldest = results.MinKey
        results <- results.DropBelow(oldest + 1L)
        floor <- oldest + 1L
    if floor = session.Floor && obj.ReferenceEquals(results, session.Results) then
        session
    else
        { session with Floor = floor; Results = results }

// What a write did is kept a while after it is applied (the runtime answers late waiters from its recent results):
// the three results of an applied write are shared, not made per write, so keeping them costs the collector nothing.
let private appliedDone = LogResult.Applied CommandResult.Done
let private appliedSwapped = LogResult.Applied(CommandResult.Swapped true)
let private appliedNotSwapped = LogResult.Applied(CommandResult.Swapped false)

let private applied (result: CommandResult) : LogResult =
    match result with
    | CommandResult.Done -> appliedDone
    | CommandResult.Swapped true -> appliedSwapped
    | CommandResult.Swapped false -> appliedNotSwapped

/// What applying one log command did: what the proposing client sees, the new table, and the sessions a durable
/// state machine must write or delete.
type Applied = { Result: LogResult; Table: Table; Touched: Touched list }

let private applyCommand
    (applyData: Command -> CommandResult)
    (table: Table)
    (index: int64)
    (command: LogCommand)
    : LogResult * Table * Touched list =
    let tick time = { table with Clock = max table.Clock time }
    match command with
    | LogCommand.Plain c -> applied (applyData c), table, []
    // The state machine applies auth changes to its auth state before the session layer sees a command.
    | LogCommand.Auth _ -> LogResult.AuthRefused "auth changes are not applied by the session layer", table, []
    | LogCommand.OpenSession(time, timeoutMs, owner) ->
        let swept, expired = removeExpired (tick time)
        let room, evicted = evictOverCap swept
        let session =
            { Id = index
              TimeoutMs = max 1L timeoutMs
              LastActive = room.Clock
              Floor = 1L
              Results = ResultWindow.Empty
              Owner = owner }
        LogResult.SessionOpened index,
        { room with Sessions = Map.add index session room.Sessions },
        expired @ evicted @ [ Touched.Saved session ]
    | LogCommand.CloseSession(id, time) ->
        let t = tick time
        if Map.containsKey id t.Sessions then
            LogResult.SessionClosed, { t with Sessions = Map.remove id t.Sessions }, [ Touched.Removed id ]
        else
            LogResult.SessionClosed, t, []
    | LogCommand.InSession(stamp, c) ->
        let t = tick stamp.Time
        match Map.tryFind stamp.Session t.Sessions with
        | None -> LogResult.SessionUnknown, t, []
        | Some s when isExpired t.Clock s ->
            LogResult.SessionUnknown, { t with Sessions = Map.remove s.Id t.Sessions }, [ Touched.Removed s.Id ]
        | Some s ->
            // One new session per write: the floor, the results and the activity change together.
            let before = trim stamp.Acknowledged s
            let outcome, results =
                if stamp.Sequence < before.Floor then
                    LogResult.ResultDiscarded, before.Results
                else
                    match before.Results.TryFind stamp.Sequence with
                    | ValueSome r -> LogResult.Repeated(r.Result, r.Index), before.Results
                    | ValueNone ->
                        let result = applyData c
                        applied result, before.Results.Add(stamp.Sequence, { Result = result; Index = index })
            let s = trim before.Floor { before with LastActive = max s.LastActive t.Clock; Results = results }
            outcome, { t with Sessions = Map.add s.Id s t.Sessions }, [ Touched.Saved s ]

/// The key-value result a client call reports for a log result that took (or had taken) effect.
let resultOf (result: LogResult) : CommandResult option =
    match result with
    | LogResult.Applied r
    | LogResult.Repeated(r, _) -> Some r
    | _ -> None

// ----- a compact binary form, for state machines that store sessions (and snapshots that carry them)

let private resultTag (r: CommandResult) =
    match r with
    | CommandResult.Done -> 0uy
    | CommandResult.Swapped false -> 1uy
    | CommandResult.Swapped true -> 2uy

/// Encodes a session: `[id][timeout][last active][floor][i32 count]` then `[sequence][index][u8 result]` per
/// result, little-endian, then the owner in UTF-8 (nothing when it has none, as records written before sessions
/// had owners).
let encode (s: Session) : byte[] =
    let owner = Text.Encoding.UTF8.GetBytes s.Owner
    let results = s.Results.ToArray()
    let buffer = Array.zeroCreate<byte>(36 + 17 * results.Length + owner.Length)
    let span = buffer.AsSpan()
    BinaryPrimitives.WriteInt64LittleEndian(span, s.Id)
    BinaryPrimitives.WriteInt64LittleEndian(span.Slice 8, s.TimeoutMs)
    BinaryPrimitives.WriteInt64LittleEndian(span.Slice 16, s.LastActive)
    BinaryPrimitives.WriteInt64LittleEndian(span.Slice 24, s.Floor)
    BinaryPrimitives.WriteInt32LittleEndian(span.Slice 32, results.Length)
    let mutable at = 36
    for struct (sequence, recorded) in results do
        BinaryPrimitives.WriteInt64LittleEndian(span.Slice at, sequence)
        BinaryPrimitives.WriteInt64LittleEndian(span.Slice(at + 8), recorded.Index)
        span[at + 16] <- resultTag recorded.Result
        at <- at + 17
    owner.CopyTo(buffer, at)
    buffer

/// Decodes what `encode` wrote; `Error` for anything else.
let decode (bytes: ReadOnlySpan<byte>) : Result<Session, string> =
    if bytes.Length < 36 then
        Error "session record shorter than its header"
    else
        let count = BinaryPrimitives.ReadInt32LittleEndian(bytes.Slice 32)
        let ownerBytes = bytes.Length - 36 - 17 * count
        if count < 0 || count > (bytes.Length - 36) / 17 || ownerBytes > LogCommandCodec.MaxSessionOwnerBytes then
            Error "bad session record length"
        else
            let mutable results = Map.empty
            let mutable bad = false
            for i in 0 .. count - 1 do
                let at = 36 + 17 * i
                let result =
                    match bytes[at + 16] with
                    | 0uy -> CommandResult.Done
                    | 1uy -> CommandResult.Swapped false
                    | 2uy -> CommandResult.Swapped true
                    | _ ->
                        bad <- true
                        CommandResult.Done
                results <-
                    Map.add
                        (BinaryPrimitives.ReadInt64LittleEndian(bytes.Slice at))
                        { Result = result; Index = BinaryPrimitives.ReadInt64LittleEndian(bytes.Slice(at + 8)) }
                        results
            if bad then
                Error "unknown result tag in session record"
            else
                Ok
                    { Id = BinaryPrimitives.ReadInt64LittleEndian bytes
                      TimeoutMs = BinaryPrimitives.ReadInt64LittleEndian(bytes.Slice 8)
                      LastActive = BinaryPrimitives.ReadInt64LittleEndian(bytes.Slice 16)
                      Floor = BinaryPrimitives.ReadInt64LittleEndian(bytes.Slice 24)
                      Results = ResultWindow.OfSeq(Map.toSeq results)
                      Owner = Text.Encoding.UTF8.GetString(bytes.Slice(36 + 17 * count)) }

/// Applies one log command at `index` through the session layer. `applyData` applies a key-value command to the
/// data; it is called at most once, and only when the command must take effect now.
let apply (applyData: Command -> CommandResult) (table: Table) (index: int64) (command: LogCommand) : Applied =
    let result, table, touched = applyCommand applyData table index command
    { Result = result; Table = table; Touched = touched }
