/// The in-memory indexes written beside each checkpoint (KeyIndexFile) and the key index's frozen views: opening from
/// the file gives what a rebuild gives, describes the checkpoint's state (not writes made while it was taken), and a
/// missing or damaged file falls back to the rebuild.
module Skiff.Integration.KeyIndexFileTests

open System
open System.Collections.Generic
open System.IO
open System.Text
open System.Threading
open Expecto
open Skiff
open Skiff.Core
open Skiff.Net.Storage
open Skiff.Integration.StorageSupport

let private ordinal (xs: seq<string>) = xs |> Seq.sortWith (fun a b -> String.CompareOrdinal(a, b)) |> List.ofSeq

let private dirsOf (keys: seq<string>) = keys |> Seq.choose (fun k -> Option.ofObj (KeyIndex.DirectoryOf k)) |> Seq.distinct |> ordinal

let private seedOf (name: string) =
    let seed =
        match Environment.GetEnvironmentVariable "SKIFF_TEST_SEED" with
        | null
        | "" -> Random().Next()
        | s -> int s
    printfn "%s: seed %d (replay with SKIFF_TEST_SEED=%d)" name seed seed
    seed

let private options fileOn =
    KvOptions(IndexSizeBytes = (1L <<< 18), MemorySizeBits = 18, PageSizeBits = 16, WatchHistory = 300, KeyIndexFile = fileOn)

/// What an open store's indexes say: keys, prefixes, the change history, the session ids.
let private indexesOf (kv: KvStateMachine) =
    let history = List<Change>()
    kv.TryReadHistory(kv.HistoryFloor + 1L, Int64.MaxValue, "", history) |> ignore
    let sessions = kv.ClientSessions.Sessions |> Seq.map (fun p -> p.Key) |> List.ofSeq
    List.ofSeq (kv.ListKeys ""),
    List.ofSeq (kv.GetPrefixes()),
    kv.HistoryFloor,
    history |> Seq.map (fun c -> c.Index, c.Key) |> List.ofSeq,
    sessions

let private tests' =
    testList
        "key index file"
        [ test "a frozen view sorts what the index held when frozen, and adopting it keeps the live keys (random, seeded)" {
              let seed = seedOf "key index freeze/adopt"
              let rng = Random seed
              let index = KeyIndex()
              let model = HashSet<string>(StringComparer.Ordinal)
              let key () = sprintf "d%d/k%d" (rng.Next 40) (rng.Next 3000)
              let check what =
                  Expect.equal (List.ofSeq (index.List("", Int32.MaxValue))) (ordinal model) (sprintf "seed %d, %s: keys" seed what)
                  Expect.equal index.Count model.Count (sprintf "seed %d, %s: count" seed what)
                  Expect.equal (List.ofSeq (index.Prefixes())) (dirsOf model) (sprintf "seed %d, %s: prefixes" seed what)
              let step () =
                  let k = key ()
                  if rng.Next 3 = 0 then
                      Expect.equal (index.Remove k) (model.Remove k) (sprintf "seed %d: remove %s" seed k)
                  else
                      index.Add k
                      model.Add k |> ignore
              for round in 1..30 do
                  for _ in 1 .. rng.Next(0, 2000) do
                      step ()
                  let frozen = index.Freeze()
                  let expected = ordinal model
                  for _ in 1 .. rng.Next(0, 500) do
                      step ()
                  if rng.Next 4 = 0 then
                      check (sprintf "round %d, listed while frozen" round)
                  Expect.equal (List.ofSeq (frozen.Sorted())) expected (sprintf "seed %d, round %d: the frozen view" seed round)
                  if rng.Next 5 = 0 then index.Thaw() else index.Adopt frozen
                  check (sprintf "round %d, after adopting" round)
          }

          test
              "opening from the index file gives the rebuild's indexes and the checkpoint's state, with writes during snapshots (random, seeded)" {
              let seed = seedOf "key index file vs rebuild"
              let rng = Random seed
              use tmp = new TempDir "kv-index-file"
              let dir = tmp.Sub "kv"
              let model = HashSet<string>(StringComparer.Ordinal)
              let mutable atSnapshot: string list option = None
              let value () = Encoding.UTF8.GetBytes(String('v', rng.Next(1, 40)))
              let apply (kv: KvStateMachine) =
                  let i = kv.AppliedIndex + 1L
                  let k = sprintf "a%d/b%d/c%d" (rng.Next 5) (rng.Next 20) (rng.Next 400)
                  match rng.Next 10 with
                  | 0
                  | 1 ->
                      kv.Apply(i, 1L, Command.Remove k) |> ignore
                      model.Remove k |> ignore
                  | 2 -> kv.Apply(i, 1L, LogCommand.OpenSession(i, 3_600_000L, "")) |> ignore
                  | 3 ->
                      let open' = kv.ClientSessions.Sessions |> Seq.map (fun p -> p.Key) |> Array.ofSeq
                      if open'.Length > 0 then
                          kv.Apply(i, 1L, LogCommand.CloseSession(open'[rng.Next open'.Length], i)) |> ignore
                      else
                          kv.AdvanceApplied(i, 1L)
                  | _ ->
                      kv.Apply(i, 1L, Command.Insert(k, value ())) |> ignore
                      model.Add k |> ignore
              for round in 1..12 do
                  // Writes after the last snapshot are lost on reopening (a node replays them from its log): the model
                  // restarts from the snapshot's keys.
                  match atSnapshot with
                  | Some keys ->
                      model.Clear()
                      model.UnionWith keys
                  | None -> ()
                  let rebuilt =
                      use kv = KvStateMachine.Open(dir, options false)
                      indexesOf kv
                  let kv = KvStateMachine.Open(dir, options true)
                  try
                      if atSnapshot.IsSome then
                          Expect.equal kv.LastOpen.IndexSource "file" (sprintf "seed %d, round %d: opened from the index file" seed round)
                      Expect.equal (indexesOf kv) rebuilt (sprintf "seed %d, round %d: the file's indexes are the rebuild's" seed round)
                      let (keys, _, _, _, _) = rebuilt
                      Expect.equal keys (ordinal model) (sprintf "seed %d, round %d: the keys are the snapshot's" seed round)
                      for _ in 1 .. rng.Next(50, 600) do
                          apply kv
                      use ready = new ManualResetEventSlim()
                      kv.BeginSnapshot(fun () -> ready.Set())
                      atSnapshot <- Some(ordinal model)
                      // Writes while the checkpoint is taken go to the overlay: not in the checkpoint, nor in its file.
                      for _ in 1 .. rng.Next(0, 300) do
                          apply kv
                      Expect.isTrue (ready.Wait(TimeSpan.FromSeconds 30.)) "the checkpoint finishes"
                      kv.FinishSnapshot() |> ignore
                      Expect.equal
                          (List.ofSeq (kv.ListKeys ""))
                          (ordinal model)
                          (sprintf "seed %d, round %d: live keys after the snapshot" seed round)
                      Expect.equal (List.ofSeq (kv.GetPrefixes())) (dirsOf model) (sprintf "seed %d, round %d: live prefixes" seed round)
                      for _ in 1 .. rng.Next(0, 100) do
                          apply kv
                  finally
                      kv.Dispose()
          }

          test "a snapshot streamed to another store carries its index file, and the installed store opens from it" {
              use tmp = new TempDir "kv-index-install"
              let keys = [ for i in 0..1999 -> sprintf "d%d/k%04d" (i % 13) i ] |> ordinal
              use a = KvStateMachine.Open(tmp.Sub "a", options true)
              keys |> List.iteri (fun i k -> a.Apply(int64 i + 1L, 1L, Command.Insert(k, [| 2uy |])) |> ignore)
              let snap = a.TakeSnapshot()
              Expect.isTrue
                  (snap.Files |> Seq.exists (fun struct (path, _) -> path.Contains("skiff-index")))
                  "the snapshot's manifest holds the index file"
              use b = KvStateMachine.Open(tmp.Sub "b", options true)
              use reader = a.OpenSnapshotReader snap
              use installer = b.BeginInstall()
              let mutable chunk = reader.ReadChunk 65536
              while chunk.Length > 0 do
                  installer.WriteChunk(ReadOnlySpan chunk)
                  chunk <- reader.ReadChunk 65536
              installer.Complete()
              Expect.equal b.LastOpen.IndexSource "file" "the installed store read the index file"
              Expect.equal (List.ofSeq (b.ListKeys "")) keys "every key"
              Expect.equal (List.ofSeq (b.GetPrefixes())) (dirsOf keys) "every prefix"
          }

          test "a key that is not valid UTF-16 is kept: no index file is written for it, and opening rebuilds" {
              use tmp = new TempDir "kv-index-surrogate"
              let dir = tmp.Sub "kv"
              // Built from chars: F# turns a lone surrogate in a string literal into U+FFFD.
              let odd = String([| 'l'; 'o'; 'n'; 'e'; char 0xD800; 's' |])
              let token =
                  use kv = KvStateMachine.Open(dir, options true)
                  kv.Apply(1L, 1L, Command.Insert("plain", [| 1uy |])) |> ignore
                  kv.Apply(2L, 1L, Command.Insert(odd, [| 2uy |])) |> ignore
                  kv.TakeSnapshot().Token
              Expect.isFalse (File.Exists(KeyIndexFile.PathOf(dir, token))) "no index file, not even a partial one"
              let rebuilt =
                  use kv = KvStateMachine.Open(dir, options false)
                  List.ofSeq (kv.ListKeys "")
              use kv = KvStateMachine.Open(dir, options true)
              Expect.equal kv.LastOpen.IndexSource "no index file" "rebuilt"
              // As the store gives them back: FASTER's key serializer writes the lone surrogate as U+FFFD (an older
              // limit of the store, not of the index file).
              Expect.equal (List.ofSeq (kv.ListKeys "")) rebuilt "the store's keys"
              Expect.equal kv.KeyCount 2 "both keys"
          }

          test "a missing, damaged or foreign index file falls back to the rebuild" {
              use tmp = new TempDir "kv-index-fallback"
              let dir = tmp.Sub "kv"
              let keys = [ for i in 0..999 -> sprintf "k/%04d" i ]
              let token =
                  use kv = KvStateMachine.Open(dir, options true)
                  keys |> List.iteri (fun i k -> kv.Apply(int64 i + 1L, 1L, Command.Insert(k, [| 1uy |])) |> ignore)
                  kv.TakeSnapshot().Token
              let file = KeyIndexFile.PathOf(dir, token)
              let openedWith (what: string) =
                  use kv = KvStateMachine.Open(dir, options true)
                  Expect.equal (List.ofSeq (kv.ListKeys "")) keys (sprintf "%s: every key" what)
                  kv.LastOpen.IndexSource
              Expect.equal (openedWith "intact") "file" "an intact file is used"
              let good = File.ReadAllBytes file
              let damaged = Array.copy good
              damaged[damaged.Length / 2] <- damaged[damaged.Length / 2] ^^^ 0x40uy
              File.WriteAllBytes(file, damaged)
              Expect.stringContains (openedWith "damaged") "damaged" "a damaged file is not used"
              File.WriteAllBytes(file, good[.. good.Length - 10])
              Expect.stringContains (openedWith "truncated") "damaged" "a truncated file is not used"
              // A whole, valid file of another applied index (a newer checkpoint's, say) is not this one's.
              let other = KeyIndexFile.Contents(5L, [| "k/0001" |], [||], [||])
              Expect.isTrue (KeyIndexFile.Write(dir, token, other)) "written"
              Expect.stringContains (openedWith "foreign") "describes index 5" "a file of another index is not used"
              File.Delete file
              Expect.equal (openedWith "missing") "no index file" "no file: rebuilt"
          } ]

let tests = tests'
