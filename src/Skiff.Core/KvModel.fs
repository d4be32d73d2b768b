/// The in-memory key-value state machine the simulator applies committed commands to: the reference semantics of
/// Put, Delete and CompareAndSwap (see Command.fs), as plain immutable data so that snapshots are free to copy.
module Skiff.Core.KvModel

/// A key-value store: keys to values. Values compare by content.
type Store = Map<string, byte[]>

/// The empty store.
let empty: Store = Map.empty

/// Applies one command, returning the new store and the result its client sees.
let apply (store: Store) (command: Command) : Store * CommandResult =
    match command with
    | Command.Put(key, value) -> Map.add key value store, CommandResult.Done
    | Command.Delete key -> Map.remove key store, CommandResult.Done
    | Command.CompareAndSwap(key, expected, next) ->
        let current = Map.tryFind key store
        let matches =
            match current, expected with
            | None, None -> true
            | Some c, Some e -> c = e
            | _ -> false
        if not matches then store, CommandResult.Swapped false
        else
            let store' =
                match next with
                | Some v -> Map.add key v store
                | None -> Map.remove key store
            store', CommandResult.Swapped true

/// Applies an encoded command (an entry's `Payload.Command` bytes). Bytes that do not decode leave the store
/// unchanged and give `Error`.
let applyEncoded (store: Store) (bytes: byte[]) : Result<Store * CommandResult, string> =
    match CommandCodec.decodeArray bytes with
    | Ok command -> Ok(apply store command)
    | Error e -> Error e

/// Reads a key.
let get (store: Store) (key: string) : byte[] option = Map.tryFind key store

/// Whether two stores hold the same keys with the same values (by content).
let same (a: Store) (b: Store) : bool =
    a.Count = b.Count && Seq.forall2 (fun (x: System.Collections.Generic.KeyValuePair<string, byte[]>) (y: System.Collections.Generic.KeyValuePair<string, byte[]>) -> x.Key = y.Key && x.Value = y.Value) a b
