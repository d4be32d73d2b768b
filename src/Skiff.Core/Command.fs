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
    | Put of key: string * value: byte[]
    /// Remove `key`; removing an absent key is not an error.
    | Delete of key: string
    /// Atomically: if the current value equals `expected` (None = the key must be absent), set it to `next`
    /// (None = delete it). The result says whether the swap happened.
    | CompareAndSwap of key: string * expected: byte[] option * next: byte[] option

/// What applying a command did, handed back to the client that proposed it.
[<RequireQualifiedAccess>]
type CommandResult =
    /// A put or delete was applied.
    | Done
    /// A compare-and-swap was applied; true if the value matched and was swapped.
    | Swapped of bool

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
            | Command.Put(k, v) -> k, tagPut, 4 + v.Length
            | Command.Delete k -> k, tagDelete, 0
            | Command.CompareAndSwap(k, e, n) -> k, tagCas, optionLength e + optionLength n
        let keyLength = Encoding.UTF8.GetByteCount key
        if keyLength > int UInt16.MaxValue then invalidArg "command" "key longer than 65535 UTF-8 bytes"
        let buffer = Array.zeroCreate<byte> (4 + keyLength + payloadLength)
        let span = buffer.AsSpan()
        span[0] <- Version
        span[1] <- tag
        BinaryPrimitives.WriteUInt16LittleEndian(span.Slice 2, uint16 keyLength)
        Encoding.UTF8.GetBytes(key.AsSpan(), span.Slice(4, keyLength)) |> ignore
        let rest = span.Slice(4 + keyLength)
        match command with
        | Command.Put(_, v) ->
            BinaryPrimitives.WriteInt32LittleEndian(rest, v.Length)
            v.AsSpan().CopyTo(rest.Slice 4)
        | Command.Delete _ -> ()
        | Command.CompareAndSwap(_, e, n) ->
            let used = writeOption rest e
            writeOption (rest.Slice used) n |> ignore
        buffer

    let private readOption (span: ReadOnlySpan<byte>) : Result<byte[] option * int, string> =
        if span.Length < 1 then Error "truncated optional value"
        elif span[0] = 0uy then Ok(None, 1)
        elif span[0] <> 1uy || span.Length < 5 then Error "bad optional value"
        else
            let length = BinaryPrimitives.ReadInt32LittleEndian(span.Slice 1)
            if length < 0 || span.Length < 5 + length then Error "truncated value"
            else Ok(Some(span.Slice(5, length).ToArray()), 5 + length)

    /// Decodes a command; `Error` with a reason for anything that is not a well-formed encoding.
    let decode (bytes: ReadOnlySpan<byte>) : Result<Command, string> =
        if bytes.Length < 4 then Error "command shorter than its header"
        elif bytes[0] <> Version then Error(sprintf "unknown command version %d" bytes[0])
        else
            let keyLength = int (BinaryPrimitives.ReadUInt16LittleEndian(bytes.Slice 2))
            if bytes.Length < 4 + keyLength then Error "truncated key"
            else
                let key = Encoding.UTF8.GetString(bytes.Slice(4, keyLength))
                let rest = bytes.Slice(4 + keyLength)
                match bytes[1] with
                | 1uy ->
                    if rest.Length < 4 then Error "truncated value length"
                    else
                        let length = BinaryPrimitives.ReadInt32LittleEndian rest
                        if length < 0 || rest.Length <> 4 + length then Error "bad value length"
                        else Ok(Command.Put(key, rest.Slice(4, length).ToArray()))
                | 2uy -> if rest.Length = 0 then Ok(Command.Delete key) else Error "trailing bytes after delete"
                | 3uy ->
                    match readOption rest with
                    | Error e -> Error e
                    | Ok(expected, used) ->
                        match readOption (rest.Slice used) with
                        | Error e -> Error e
                        | Ok(next, used2) ->
                            if used + used2 <> rest.Length then Error "trailing bytes after compare-and-swap"
                            else Ok(Command.CompareAndSwap(key, expected, next))
                | tag -> Error(sprintf "unknown command tag %d" tag)

    /// Decodes from an array.
    let decodeArray (bytes: byte[]) = decode (ReadOnlySpan bytes)
