/// The key-value store's disk I/O must not need the .NET thread pool (Storage/DeviceIoThreads.cs): its lock is held
/// while FASTER waits for a read from disk, and callers block pool threads on that lock. The test runs in a fresh
/// child process (`Integration.dll --pool-starvation-probe <dir>`) with the pool as an application has it by default;
/// this program's own Main raises the pool's minimum for its many in-process nodes, which would hide the fault.
module Skiff.Integration.IoThreadTests

open System
open System.Diagnostics
open System.Threading
open System.Threading.Tasks
open Expecto
open Skiff.Core
open Skiff.Net.Storage
open Skiff.Integration.StorageSupport

/// The child: a store eight times larger than its memory budget, then 64 pool work items that each read ten keys
/// from the evicted part, as 64 request handlers doing stale reads would.
let runProbe (dir: string) : int =
    let options =
        KvOptions(IndexSizeBytes = (1L <<< 16), PageSizeBits = 16, MemorySizeBits = 18, SegmentSizeBits = 20, WatchHistory = 0)
    use kv = KvStateMachine.Open(dir, options)
    for i in 1..2000 do
        kv.Apply(int64 i, 1L, Command.Insert(sprintf "k/%04d" i, Array.create 1024 (byte i))) |> ignore
    let started = Stopwatch.StartNew()
    let readers =
        [| for i in 0..63 ->
               Task.Run(fun () ->
                   for j in 0..9 do
                       let key = 1 + (i * 10 + j) % 1000
                       match kv.Get(sprintf "k/%04d" key) with
                       | null -> failwithf "k/%04d is missing" key
                       | value when value[0] <> byte key -> failwithf "k/%04d holds another value" key
                       | _ -> ()) |]
    // Not a synchronisation: a starved pool would take minutes, and the parent only needs to see that it did.
    let finished = Task.WaitAll(readers, TimeSpan.FromSeconds 60.0)
    printfn "PROBE finished=%b ms=%d pool_threads=%d" finished started.ElapsedMilliseconds ThreadPool.ThreadCount
    if finished then 0 else 3

let tests =
    testList
        "io threads"
        [ testCase "reads of evicted keys from 64 pool threads finish at disk speed with the pool's default minimum"
          <| fun () ->
              use tmp = new TempDir "pool-probe"
              // A starved pool takes minutes: the child's own deadline (60 s) fails it then, with a non-zero exit.
              let line = runChildProbe [ "--pool-starvation-probe"; tmp.Sub "kv" ]
              printfn "io threads probe: %s" line
              let ms = int (probeField line "ms")
              // 640 reads from disk take well under a second here; a pool starved until it grows takes tens of seconds.
              Expect.isLessThan ms 10_000 "640 reads of evicted keys took too long: the store's I/O waited for the thread pool" ]
