/// The child process of the crash tests: `Integration.dll --crash-writer <dir> <run> <seed>`. It opens the node
/// storage (recovering whatever the previous, killed, run left), optionally replaces the last few entries, then
/// appends from several concurrent writers with group commit, now and then compacts and saves hard state, and
/// prints one line per acknowledged operation. Lines end with " ." so a line torn by the kill is recognisable.
module Skiff.Integration.CrashWriter

open System
open System.Threading
open System.Threading.Tasks
open Skiff.Net.Storage
open Skiff.Integration.StorageSupport

let private out = obj ()
let private say (line: string) =
    lock out (fun () ->
        Console.Out.Write(line + " .\n")
        Console.Out.Flush())

let run (dir: string) (runNo: int64) (seed: int) : int =
    let rng = Random(seed)
    use storage = NodeStorage.Open(dir, smallOptions ())
    let log = storage.Log
    let term = runNo
    // Replay what the previous run applied but did not snapshot, as the runtime does at start.
    let commitAtStart = log.LastIndex - 10L
    if storage.Kv.AppliedIndex < commitAtStart then
        for en in log.ReadAsync(storage.Kv.AppliedIndex + 1L, commitAtStart).GetAwaiter().GetResult() do
            storage.Kv.ApplyEncoded(en.Index, en.Term, ReadOnlySpan en.Payload) |> ignore
    say (sprintf "READY last=%d first=%d" log.LastIndex log.FirstIndex)
    // Replace a short suffix now and then, as a follower would after a leader change.
    if log.LastIndex >= log.FirstIndex + 5L && rng.Next(2) = 0 then
        let from = log.LastIndex - int64 (rng.Next(1, 5))
        say (sprintf "R %d" from)
        append log (entries from (from + 2L) term)
        for i in from .. from + 2L do
            say (sprintf "A %d %d" i term)
    let gate = obj ()
    let mutable next = log.LastIndex
    let writers = 8
    let writer () =
        task {
            let r = Random(seed + Thread.CurrentThread.ManagedThreadId)
            while true do
                let n = r.Next(1, 6)
                let t, first =
                    lock gate (fun () ->
                        let first = next + 1L
                        next <- next + int64 n
                        log.AppendAsync(entries first (first + int64 n - 1L) term, CancellationToken.None), first)
                do! t
                for i in first .. first + int64 n - 1L do
                    say (sprintf "A %d %d" i term)
        }
    // Applies entries that can no longer be replaced (ten behind the durable end stand in for the commit index:
    // suffix replacement only ever reaches back four).
    let applier () =
        task {
            while true do
                let commit = log.LastIndex - 10L
                if storage.Kv.AppliedIndex < commit && storage.Kv.AppliedIndex + 1L >= log.FirstIndex then
                    let! batch = log.ReadAsync(storage.Kv.AppliedIndex + 1L, commit, 1L <<< 20)
                    for en in batch do
                        storage.Kv.ApplyEncoded(en.Index, en.Term, ReadOnlySpan en.Payload) |> ignore
                else
                    do! Task.Delay 1
        }
    // Hard-state saves run on their own, so kills land inside them too.
    let hardStater () =
        task {
            let mutable k = 0L
            while true do
                k <- k + 1L
                let hs: Skiff.Core.HardState = { Term = runNo * 1_000_000L + k; VotedFor = Some(Guid.NewGuid()) }
                say (sprintf "h %d" hs.Term)
                storage.HardState.Save hs
                say (sprintf "H %d %O" hs.Term hs.VotedFor.Value)
                do! Task.Delay 1
        }
    let housekeeping () =
        task {
            let mutable k = 0L
            while true do
                do! Task.Yield()
                k <- k + 1L
                if (k = 1L || k % 10L = 0L) && storage.Kv.AppliedIndex > 100L then
                    // Snapshot, then compact the log behind it, keeping the tail: the runtime's sequence.
                    say (sprintf "c %d" log.LastIndex)
                    let snap = storage.Kv.TakeSnapshot()
                    say (sprintf "S %d" snap.Index)
                    do! log.CompactUntil snap.Index
                    say (sprintf "C %d" (max 0L (snap.Index - 50L)))
                do! Task.Delay 1
        }
    let all =
        [| for _ in 1..writers -> Task.Run(fun () -> writer () :> Task) |]
        |> Array.append
            [| Task.Run(fun () -> housekeeping () :> Task)
               Task.Run(fun () -> applier () :> Task)
               Task.Run(fun () -> hardStater () :> Task) |]
    Task.WaitAny all |> ignore
    // Only reached if something failed.
    for t in all do
        if t.IsFaulted then
            eprintfn "crash writer failed: %O" t.Exception
    2
