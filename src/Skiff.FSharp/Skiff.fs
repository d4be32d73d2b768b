/// Skiff for F#: the key-value calls as `Async` functions that take the store first (so they pipe), absent values
/// as `option`, and watches and committed changes as `AsyncSeq`. They work on an embedded `SkiffNode` and on a
/// network `Client` alike. The Raft reducer and the simulator are in Skiff.Core, usable directly.
namespace Skiff.FSharp

// The C# facade's generic reads return `T?` on an unconstrained T, which F#'s nullness analysis cannot type for a
// generic 'T; the null case is handled explicitly where it arises (tryGet), so that warning is noise in this file.
#nowarn "3261"

open System
open System.Threading
open FSharp.Control
open Skiff

/// Key-value calls on a node or a client.
[<RequireQualifiedAccess>]
module Kv =
    let private await (start: CancellationToken -> Threading.Tasks.Task<'T>) : Async<'T> =
        async {
            let! token = Async.CancellationToken
            return! start token |> Async.AwaitTask
        }

    let private awaitUnit (start: CancellationToken -> Threading.Tasks.Task) : Async<unit> =
        async {
            let! token = Async.CancellationToken
            return! start token |> Async.AwaitTask
        }

    /// Sets `key` to `value` once committed.
    let insert (store: KeyValueStoreBase) (key: string) (value: 'T) : Async<unit> =
        awaitUnit (fun t -> store.InsertAsync<'T>(key, value, t))

    /// The value of `key`, or None when absent (linearizable).
    let tryGet<'T> (store: KeyValueStoreBase) (key: string) : Async<'T option> =
        async {
            let! bytes = await (fun t -> store.GetBytesAsync(key, ReadConsistency.Linearizable, t))
            return
                match bytes with
                | null -> None
                | bytes ->
                    // The serializer is a C# generic returning `T?`; an F# 'T carries no nullness, so go through obj.
                    // A stored JSON null also reads as None.
                    match store.Serializer.Deserialize<'T>(ReadOnlyMemory bytes) |> box with
                    | null -> None
                    | value -> Some(unbox<'T> value)
        }

    /// Removes `key` (absent is fine).
    let remove (store: KeyValueStoreBase) (key: string) : Async<unit> = awaitUnit (fun t -> store.RemoveAsync(key, t))

    /// Sets `key` to `next` if its value is `expected`; true if it swapped.
    let compareAndSwap (store: KeyValueStoreBase) (key: string) (expected: 'T) (next: 'T) : Async<bool> =
        await (fun t -> store.CompareAndSwapAsync<'T>(key, expected, next, t))

    /// Every key under `prefix` ("" lists all), in ordinal order.
    let listKeys (store: KeyValueStoreBase) (prefix: string) : Async<string list> =
        async {
            let! keys = await (fun t -> store.ListKeysAsync(prefix, t))
            return List.ofSeq keys
        }

    /// One page of the keys under `prefix` after `startAfter` (None: from the first): at most `limit` (0: the
    /// member's largest page). Continue with the page's `Next` until it is null.
    let listKeysPage (store: KeyValueStoreBase) (prefix: string) (limit: int) (startAfter: string option) : Async<ListPage> =
        await (fun t -> store.ListKeysAsync(prefix, limit, Option.toObj startAfter, t))

    /// Every key under `prefix`, in ordinal order, read one page at a time as the sequence is read.
    let keys (store: KeyValueStoreBase) (prefix: string) : AsyncSeq<string> =
        asyncSeq {
            let! token = Async.CancellationToken
            let found = store.EnumerateKeysAsync(prefix, token).GetAsyncEnumerator(token)
            let mutable more = true
            while more do
                let! next = found.MoveNextAsync().AsTask() |> Async.AwaitTask
                if next then yield found.Current else more <- false
        }

    /// Every level above the stored keys, in ordinal order.
    let prefixes (store: KeyValueStoreBase) : Async<string list> =
        async {
            let! found = await (fun t -> store.GetPrefixesAsync t)
            return List.ofSeq found
        }

    /// Starts a watch on `prefix` and returns, once it is active, its committed changes in commit order: every
    /// change committed after this Async completes is in the sequence. The watch ends when the enumeration stops.
    let watch (store: KeyValueStoreBase) (prefix: string) : Async<AsyncSeq<Change>> =
        async {
            let! token = Async.CancellationToken
            let! subscriber = store.WatchAsync(prefix, token) |> Async.AwaitTask
            return
                asyncSeq {
                    use _ =
                        { new IDisposable with
                            member _.Dispose() = subscriber.DisposeAsync().AsTask().Wait() }
                    let! readToken = Async.CancellationToken
                    let changes = subscriber.ReadAllAsync(readToken).GetAsyncEnumerator(readToken)
                    let mutable more = true
                    while more do
                        let! next = changes.MoveNextAsync().AsTask() |> Async.AwaitTask
                        if next then yield changes.Current else more <- false
                }
        }

/// Running an embedded node.
[<RequireQualifiedAccess>]
module Node =
    /// A node with these settings (not started).
    let create (options: SkiffOptions) : SkiffNode = SkiffNode.Create options

    /// Starts serving; returns once serving.
    let start (node: SkiffNode) : Async<unit> =
        async {
            let! token = Async.CancellationToken
            return! node.StartAsync token |> Async.AwaitTask
        }

    /// Waits until the node knows a leader (LeaderElectionTimeout otherwise).
    let waitForLeader (timeout: TimeSpan) (node: SkiffNode) : Async<unit> =
        async {
            let! token = Async.CancellationToken
            return! node.WaitForLeaderAsync(timeout, token) |> Async.AwaitTask
        }

    /// Every change the node applies from this call on, in commit order, buffered until read (subscribed at once,
    /// not at the first read, so nothing between the call and the first read is missed).
    let changes (node: SkiffNode) : AsyncSeq<Change> =
        let buffer = Threading.Channels.Channel.CreateUnbounded<Change>()
        let subscription =
            node.Changes.Subscribe(
                (fun c -> buffer.Writer.TryWrite c |> ignore),
                (fun (e: exn) -> buffer.Writer.TryComplete e |> ignore),
                (fun () -> buffer.Writer.TryComplete() |> ignore)
            )
        asyncSeq {
            use _ = subscription
            let! token = Async.CancellationToken
            let mutable more = true
            while more do
                let! ready = buffer.Reader.WaitToReadAsync(token).AsTask() |> Async.AwaitTask
                if ready then
                    match buffer.Reader.TryRead() with
                    | true, change -> yield change
                    | _ -> ()
                else
                    more <- false
        }

    /// Stops the node and releases its data directory.
    let shutdown (node: SkiffNode) : Async<unit> = node.ShutdownAsync() |> Async.AwaitTask
