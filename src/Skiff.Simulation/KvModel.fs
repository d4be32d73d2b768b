/// The in-memory key-value state machine the simulator applies committed commands to: the reference semantics of
/// Insert, Remove and CompareAndSwap (see Command.fs), as plain immutable data so that snapshots are free to copy.
module Skiff.Simulation.KvModel

open Skiff.Core

/// A key-value store: keys to values. Values compare by content.
type Store = Map<string, byte[]>

/// The empty store.
let empty: Store = Map.empty

/// Applies one command, returning the new store and the result its client sees.
let apply (store: Store) (command: Command) : Store * CommandResult =
    match command with
    | Command.Insert(key, value) -> Map.add key value store, CommandResult.Done
    | Command.Remove key -> Map.remove key store, CommandResult.Done
    | Command.CompareAndSwap(key, expected, next) ->
        let current = Map.tryFind key store
        let matches =
            match current, expected with
            | None, None -> true
            | Some c, Some e -> c = e
            | _ -> false
        if not matches then
            store, CommandResult.Swapped false
        else
            let store' =
                match next with
                | Some v -> Map.add key v store
                | None -> Map.remove key store
            store', CommandResult.Swapped true

/// A simulated member's whole state machine: the data and the client sessions that make retried writes apply
/// at most once.
type Replica =
    {
        /// The keys and their values.
        Data: Store
        /// Each open session's last request numbers and results, for answering a retried request again.
        Sessions: Sessions.Table
    }

/// An empty replica.
let emptyReplica: Replica = { Data = empty; Sessions = Sessions.empty }

/// Applies an encoded log command (an entry's `Payload.Command` bytes) through the session layer. With `dedup`
/// false the session layer is bypassed (a request inside a session is applied every time it is in the log): the
/// broken variant the tests use to show that the "no request applied twice" invariant catches it.
let applyLogCommand (dedup: bool) (replica: Replica) (index: int64) (bytes: byte[]) : Result<Replica * LogResult * LogCommand, string> =
    match LogCommandCodec.decodeArray bytes with
    | Error e -> Error e
    | Ok command ->
        let mutable data = replica.Data
        let applyData c =
            let d, r = apply data c
            data <- d
            r
        match command with
        | LogCommand.InSession(_, c) when not dedup ->
            let result = applyData c
            Ok({ replica with Data = data }, LogResult.Applied result, command)
        | _ ->
            let applied = Sessions.apply applyData replica.Sessions index command
            Ok({ Data = data; Sessions = applied.Table }, applied.Result, command)

/// Reads a key.
let get (store: Store) (key: string) : byte[] option = Map.tryFind key store

/// Whether two stores hold the same keys with the same values (by content).
let same (a: Store) (b: Store) : bool =
    a.Count = b.Count
    && Seq.forall2
        (fun (x: System.Collections.Generic.KeyValuePair<string, byte[]>) (y: System.Collections.Generic.KeyValuePair<string, byte[]>) ->
            x.Key = y.Key && x.Value = y.Value)
        a
        b
