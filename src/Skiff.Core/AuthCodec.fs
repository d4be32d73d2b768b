/// Binary encoding of auth commands (inside log entries) and of the whole auth state (the record the state machine
/// keeps in its store). Strings are length-prefixed UTF-8 (BinaryWriter's form). Decoding never throws: bad bytes
/// give `Error`, and counts are checked against the bytes left before anything is allocated.
module Skiff.Core.AuthCodec

open System
open System.IO
open System.Text

[<Literal>]
let private Version = 1uy

let private writeBytes (w: BinaryWriter) (b: byte[]) =
    w.Write b.Length
    w.Write b

let private writeHash (w: BinaryWriter) (h: PasswordHash option) =
    match h with
    | None -> w.Write 0uy
    | Some h ->
        w.Write 1uy
        w.Write h.Iterations
        writeBytes w h.Salt
        writeBytes w h.Hash

let private writePermission (w: BinaryWriter) (p: Permission) =
    w.Write p.Prefix
    w.Write p.Write

let private withWriter (f: BinaryWriter -> unit) =
    use stream = new MemoryStream()
    use w = new BinaryWriter(stream, UTF8Encoding(false, true))
    w.Write Version
    f w
    w.Flush()
    stream.ToArray()

/// Encodes a command.
let encodeCommand (command: AuthCommand) : byte[] =
    withWriter (fun w ->
        // A tag, then the command's strings, then its other fields.
        let tagged (tag: byte) (strings: string list) =
            w.Write tag
            strings |> List.iter (fun (x: string) -> w.Write x)
        match command with
        | AuthCommand.UserAdd(n, h) ->
            tagged 1uy [ n ]
            writeHash w h
        | AuthCommand.UserDelete n -> tagged 2uy [ n ]
        | AuthCommand.UserChangePassword(n, h) ->
            tagged 3uy [ n ]
            writeHash w h
        | AuthCommand.UserGrantRole(u, r) -> tagged 4uy [ u; r ]
        | AuthCommand.UserRevokeRole(u, r) -> tagged 5uy [ u; r ]
        | AuthCommand.RoleAdd n -> tagged 6uy [ n ]
        | AuthCommand.RoleDelete n -> tagged 7uy [ n ]
        | AuthCommand.RoleGrantPermission(r, p) ->
            tagged 8uy [ r ]
            writePermission w p
        | AuthCommand.RoleRevokePermission(r, prefix) -> tagged 9uy [ r; prefix ]
        | AuthCommand.Enable key ->
            tagged 10uy []
            writeBytes w key
        | AuthCommand.Disable -> tagged 11uy [])

/// Encodes the whole state.
let encodeState (state: AuthState) : byte[] =
    withWriter (fun w ->
        w.Write state.Enabled
        w.Write state.Revision
        writeBytes w state.SigningKey
        w.Write state.Users.Count
        for u in state.Users.Values do
            w.Write u.Name
            writeHash w u.Password
            w.Write u.Roles.Count
            for r in u.Roles do
                w.Write r
        w.Write state.Roles.Count
        for KeyValue(name, perms) in state.Roles do
            w.Write name
            w.Write perms.Length
            for p in perms do
                writePermission w p)

let private readCount (r: BinaryReader) =
    let n = r.ReadInt32()
    if n < 0 || int64 n > r.BaseStream.Length - r.BaseStream.Position then
        raise (InvalidDataException(sprintf "bad count %d" n))
    n

let private readBytes (r: BinaryReader) = r.ReadBytes(readCount r)

let private readHash (r: BinaryReader) =
    match r.ReadByte() with
    | 0uy -> None
    | 1uy ->
        let iterations = r.ReadInt32()
        let salt = readBytes r
        Some { Iterations = iterations; Salt = salt; Hash = readBytes r }
    | b -> raise (InvalidDataException(sprintf "bad password tag %d" b))

let private readPermission (r: BinaryReader) =
    let prefix = r.ReadString()
    { Prefix = prefix; Write = r.ReadBoolean() }

let private withReader (bytes: ReadOnlySpan<byte>) (f: BinaryReader -> 'T) : Result<'T, string> =
    try
        use r = new BinaryReader(new MemoryStream(bytes.ToArray()), UTF8Encoding(false, true))
        if r.ReadByte() <> Version then
            Error "unknown auth encoding version"
        else
            let value = f r
            if r.BaseStream.Position <> r.BaseStream.Length then
                Error "trailing bytes after the auth record"
            else
                Ok value
    with e ->
        Error(sprintf "bad auth record: %s" e.Message)

/// Decodes a command.
let decodeCommand (bytes: ReadOnlySpan<byte>) : Result<AuthCommand, string> =
    withReader bytes (fun r ->
        // Fields in the order encodeCommand wrote them (F# evaluates a tuple's parts left to right).
        let str () = r.ReadString()
        let two (make: string * string -> AuthCommand) = make (str (), str ())
        match r.ReadByte() with
        | 1uy -> AuthCommand.UserAdd(str (), readHash r)
        | 2uy -> AuthCommand.UserDelete(str ())
        | 3uy -> AuthCommand.UserChangePassword(str (), readHash r)
        | 4uy -> two AuthCommand.UserGrantRole
        | 5uy -> two AuthCommand.UserRevokeRole
        | 6uy -> AuthCommand.RoleAdd(str ())
        | 7uy -> AuthCommand.RoleDelete(str ())
        | 8uy -> AuthCommand.RoleGrantPermission(str (), readPermission r)
        | 9uy -> two AuthCommand.RoleRevokePermission
        | 10uy -> AuthCommand.Enable(readBytes r)
        | 11uy -> AuthCommand.Disable
        | t -> raise (InvalidDataException(sprintf "unknown auth command %d" t)))

/// Decodes the whole state.
let decodeState (bytes: ReadOnlySpan<byte>) : Result<AuthState, string> =
    withReader bytes (fun r ->
        let enabled = r.ReadBoolean()
        let revision = r.ReadInt64()
        let key = readBytes r
        let users =
            [ for _ in 1 .. readCount r ->
                  let name = r.ReadString()
                  let password = readHash r
                  let roles = [ for _ in 1 .. readCount r -> r.ReadString() ]
                  name, { Name = name; Password = password; Roles = Set.ofList roles } ]
        let roles =
            [ for _ in 1 .. readCount r ->
                  let name = r.ReadString()
                  name, [ for _ in 1 .. readCount r -> readPermission r ] ]
        { Enabled = enabled; Revision = revision; SigningKey = key; Users = Map.ofList users; Roles = Map.ofList roles })
