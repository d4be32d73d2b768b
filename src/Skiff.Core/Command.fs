/// The key-value commands that travel inside Raft log entries, their results, and a compact binary codec.
/// The reducer never looks inside a command (entries carry opaque bytes); the state machines do: the FASTER one in
/// Skiff.Net and the in-memory model the simulator and the linearizability checker use.
namespace Skiff.Core

open System
open System.Buffers.Binary
open System.Text

/// A change to the key-value store, as proposed by a client and replicated in the log.
[<RequireQualifiedAccess>]
type Command =
    /// Set `key` to `value`, creating it if absent.
    | Insert of key: string * value: byte[]
    /// Remove `key`; removing an absent key is not an error.
    | Remove of key: string
    /// Atomically: if the current value equals `expected` (None = the key must be absent), set it to `next`
    /// (None = delete it). The result says whether the swap happened.
    | CompareAndSwap of key: string * expected: byte[] option * next: byte[] option

/// What applying a command did, handed back to the client that proposed it.
[<RequireQualifiedAccess>]
type CommandResult =
    /// A put or delete was applied.
    | Done
    /// A compare-and-swap was applied; true if the value matched and was swapped.
    | Swapped of swapped: bool

/// Binary encoding of commands: `[version=1][tag][u16 key length][key UTF-8][payload]`, with values as
/// `[u8 present][i32 length][bytes]`. Little-endian. Decoding never throws: bad bytes give `Error`.
module CommandCodec =
    [<Literal>]
    let private Version = 1uy

    let private tagPut = 1uy
    let private tagDelete = 2uy
    let private tagCas = 3uy

    let private optionLength (v: byte[] option) =
        match v with
        | Some b -> 5 + b.Length
        | None -> 1

    let private writeOption (span: Span<byte>) (v: byte[] option) : int =
        match v with
        | Some b ->
            span[0] <- 1uy
            BinaryPrimitives.WriteInt32LittleEndian(span.Slice 1, b.Length)
            b.AsSpan().CopyTo(span.Slice 5)
            5 + b.Length
        | None ->
            span[0] <- 0uy
            1

    /// Encodes a command into a fresh array.
    let encode (command: Command) : byte[] =
        let key, tag, payloadLength =
            match command with
            | Command.Insert(k, v) -> k, tagPut, 4 + v.Length
            | Command.Remove k -> k, tagDelete, 0
            | Command.CompareAndSwap(k, e, n) -> k, tagCas, optionLength e + optionLength n
        let keyLength = Encoding.UTF8.GetByteCount key
        if keyLength > int UInt16.MaxValue then
            invalidArg "command" "key longer than 65535 UTF-8 bytes"
        let buffer = Array.zeroCreate<byte>(4 + keyLength + payloadLength)
        let span = buffer.AsSpan()
        span[0] <- Version
        span[1] <- tag
        BinaryPrimitives.WriteUInt16LittleEndian(span.Slice 2, uint16 keyLength)
        Encoding.UTF8.GetBytes(key.AsSpan(), span.Slice(4, keyLength)) |> ignore
        let rest = span.Slice(4 + keyLength)
        match command with
        | Command.Insert(_, v) ->
            BinaryPrimitives.WriteInt32LittleEndian(rest, v.Length)
            v.AsSpan().CopyTo(rest.Slice 4)
        | Command.Remove _ -> ()
        | Command.CompareAndSwap(_, e, n) ->
            let used = writeOption rest e
            writeOption (rest.Slice used) n |> ignore
        buffer

    let private readOption (span: ReadOnlySpan<byte>) : Result<byte[] option * int, string> =
        if span.Length < 1 then
            Error "truncated optional value"
        elif span[0] = 0uy then
            Ok(None, 1)
        elif span[0] <> 1uy || span.Length < 5 then
            Error "bad optional value"
        else
            let length = BinaryPrimitives.ReadInt32LittleEndian(span.Slice 1)
            if length < 0 || span.Length < 5 + length then
                Error "truncated value"
            else
                Ok(Some(span.Slice(5, length).ToArray()), 5 + length)

    /// Decodes a command; `Error` with a reason for anything that is not a well-formed encoding.
    let decode (bytes: ReadOnlySpan<byte>) : Result<Command, string> =
        if bytes.Length < 4 then
            Error "command shorter than its header"
        elif bytes[0] <> Version then
            Error(sprintf "unknown command version %d" bytes[0])
        else
            let keyLength = int (BinaryPrimitives.ReadUInt16LittleEndian(bytes.Slice 2))
            if bytes.Length < 4 + keyLength then
                Error "truncated key"
            else
                let key = Encoding.UTF8.GetString(bytes.Slice(4, keyLength))
                let rest = bytes.Slice(4 + keyLength)
                match bytes[1] with
                | 1uy ->
                    if rest.Length < 4 then
                        Error "truncated value length"
                    else
                        let length = BinaryPrimitives.ReadInt32LittleEndian rest
                        if length < 0 || rest.Length <> 4 + length then
                            Error "bad value length"
                        else
                            Ok(Command.Insert(key, rest.Slice(4, length).ToArray()))
                | 2uy -> if rest.Length = 0 then Ok(Command.Remove key) else Error "trailing bytes after delete"
                | 3uy ->
                    match readOption rest with
                    | Error e -> Error e
                    | Ok(expected, used) ->
                        match readOption (rest.Slice used) with
                        | Error e -> Error e
                        | Ok(next, used2) ->
                            if used + used2 <> rest.Length then
                                Error "trailing bytes after compare-and-swap"
                            else
                                Ok(Command.CompareAndSwap(key, expected, next))
                | tag -> Error(sprintf "unknown command tag %d" tag)

    /// Decodes from an array.
    let decodeArray (bytes: byte[]) = decode (ReadOnlySpan bytes)

/// A client session's stamp on one write (Raft dissertation §6.3): which session, which of its requests, which of
/// its replies the client still waits for, and the leader's clock when it proposed the write.
type SessionStamp =
    {
        /// The session, named by the log index of the entry that opened it.
        Session: int64
        /// The request's number within the session (1, 2, 3 …); a retry reuses its request's number.
        Sequence: int64
        /// Every request numbered below this has been answered to the client, so the state machine may forget
        /// their results.
        Acknowledged: int64
        /// The proposing leader's clock (Unix milliseconds). The state machine keeps the largest time it has seen
        /// as its clock, so session expiry is decided by the log and is the same on every member.
        Time: int64
    }

/// What a log entry's command bytes carry: a key-value command, alone or inside a client session, or the opening
/// or closing of a session.
[<RequireQualifiedAccess>]
type LogCommand =
    /// A command outside any session (the skiff-rs wire calls): applied each time it is in the log.
    | Plain of command: Command
    /// A command inside a session: applied at most once per (session, sequence).
    | InSession of stamp: SessionStamp * command: Command
    /// Opens a session that expires after `timeoutMs` of log time without requests. Its id is the entry's index.
    /// `owner` is the user the leader identified as opening it ("" when auth was off or for the embedding
    /// application): with auth on, only that user (or root, or a member) may write in it or close it.
    | OpenSession of time: int64 * timeoutMs: int64 * owner: string
    /// Closes a session and forgets its results.
    | CloseSession of session: int64 * time: int64
    /// Changes the auth state (users, roles, the auth switch); outside any session, refused or applied as a whole.
    | Auth of command: AuthCommand

/// What applying a log command did, as the proposing client's call sees it.
[<RequireQualifiedAccess>]
type LogResult =
    /// The command was applied now.
    | Applied of result: CommandResult
    /// The same session request was applied before, at `index`; this is what it did then. Nothing changed now.
    | Repeated of result: CommandResult * index: int64
    /// A session was opened; its id.
    | SessionOpened of session: int64
    /// A session was closed (or was already gone).
    | SessionClosed
    /// The session does not exist (it expired, was closed or evicted): nothing was applied now, and whether an
    /// earlier attempt of the same request applied is unknown.
    | SessionUnknown
    /// The request's number is below what the session still remembers (its reply was acknowledged or dropped):
    /// nothing was applied now, and whether an earlier attempt applied is unknown.
    | ResultDiscarded
    /// An auth change was applied; the auth revision it made.
    | AuthApplied of revision: int64
    /// An auth change was refused (a user that exists, a missing role, enabling auth without a root user …).
    | AuthRefused of reason: string

/// Encoding of log commands. Plain commands keep CommandCodec's version-1 layout (logs written before sessions
/// existed stay readable); the session forms use version 2: `[2][kind][fields as little-endian i64][inner]`.
module LogCommandCodec =
    [<Literal>]
    let private Version = 2uy

    let private kindInSession = 1uy
    let private kindOpen = 2uy
    let private kindClose = 3uy
    let private kindAuth = 4uy

    /// The longest session owner (a user name) an open-session entry may carry, in UTF-8 bytes.
    [<Literal>]
    let MaxSessionOwnerBytes = 1024

    let private header (kind: byte) (longs: int64 list) (tail: byte[]) =
        let buffer = Array.zeroCreate<byte>(2 + 8 * longs.Length + tail.Length)
        buffer[0] <- Version
        buffer[1] <- kind
        longs |> List.iteri (fun i v -> BinaryPrimitives.WriteInt64LittleEndian(buffer.AsSpan(2 + 8 * i), v))
        tail.CopyTo(buffer, 2 + 8 * longs.Length)
        buffer

    /// Encodes a log command into a fresh array.
    let encode (command: LogCommand) : byte[] =
        match command with
        | LogCommand.Plain c -> CommandCodec.encode c
        | LogCommand.InSession(s, c) -> header kindInSession [ s.Session; s.Sequence; s.Acknowledged; s.Time ] (CommandCodec.encode c)
        | LogCommand.OpenSession(time, timeout, owner) -> header kindOpen [ time; timeout ] (Encoding.UTF8.GetBytes owner)
        | LogCommand.CloseSession(session, time) -> header kindClose [ session; time ] [||]
        | LogCommand.Auth a -> header kindAuth [] (AuthCodec.encodeCommand a)

    let private long (bytes: ReadOnlySpan<byte>) (i: int) = BinaryPrimitives.ReadInt64LittleEndian(bytes.Slice(2 + 8 * i))

    /// Decodes a log command; `Error` with a reason for anything that is not a well-formed encoding.
    let decode (bytes: ReadOnlySpan<byte>) : Result<LogCommand, string> =
        if bytes.Length >= 1 && bytes[0] <> Version then
            match CommandCodec.decode bytes with
            | Ok c -> Ok(LogCommand.Plain c)
            | Error e -> Error e
        elif bytes.Length < 2 then
            Error "session command shorter than its header"
        else
            match bytes[1] with
            | k when k = kindInSession ->
                if bytes.Length < 34 then
                    Error "truncated session stamp"
                else
                    let stamp = { Session = long bytes 0; Sequence = long bytes 1; Acknowledged = long bytes 2; Time = long bytes 3 }
                    match CommandCodec.decode (bytes.Slice 34) with
                    | Ok c -> Ok(LogCommand.InSession(stamp, c))
                    | Error e -> Error e
            | k when k = kindOpen ->
                // The owner follows the two fields (none in entries written before sessions had owners).
                if bytes.Length < 18 || bytes.Length > 18 + MaxSessionOwnerBytes then
                    Error "bad open-session length"
                else
                    Ok(LogCommand.OpenSession(long bytes 0, long bytes 1, Encoding.UTF8.GetString(bytes.Slice 18)))
            | k when k = kindClose ->
                if bytes.Length <> 18 then
                    Error "bad close-session length"
                else
                    Ok(LogCommand.CloseSession(long bytes 0, long bytes 1))
            | k when k = kindAuth ->
                match AuthCodec.decodeCommand (bytes.Slice 2) with
                | Ok a -> Ok(LogCommand.Auth a)
                | Error e -> Error e
            | k -> Error(sprintf "unknown session command kind %d" k)

    /// Decodes from an array.
    let decodeArray (bytes: byte[]) = decode (ReadOnlySpan bytes)
