/// Crash safety with real processes: a child writes with group commit and prints what was acknowledged; we
/// SIGKILL it at a random moment (chosen by a seeded count of acknowledgements, never by sleeping), reopen the
/// directory and check every acknowledged entry and hard state is there and intact. The seed is printed; rerun one
/// with `--crash-seed <seed>` (environment SKIFF_CRASH_SEED) and the count with SKIFF_CRASH_KILLS.
module Skiff.Integration.CrashTests

open System
open System.Collections.Generic
open System.Diagnostics
open System.IO
open Expecto
open Skiff.Net.Storage
open Skiff.Integration.StorageSupport

type private Expectation() =
    member val Acked = Dictionary<int64, int64>()
    member val IntentBase = 0L with get, set
    member val AckedBase = 0L with get, set
    member val IntentTerm = 0L with get, set
    member val AckedHs: (int64 * Guid) option = None with get, set
    member val Counts = Dictionary<string, int>()

let private feed (e: Expectation) (line: string) =
    if line.EndsWith " ." then
        let parts = line.Substring(0, line.Length - 2).Split ' '
        e.Counts[parts[0]] <-
            (match e.Counts.TryGetValue parts[0] with
             | true, n -> n + 1
             | _ -> 1)
        match parts with
        | [| "A"; i; t |] -> e.Acked[int64 i] <- int64 t
        | [| "R"; from |] ->
            let from = int64 from
            for k in List.ofSeq e.Acked.Keys do
                if k >= from then
                    e.Acked.Remove k |> ignore
        | [| "c"; b |] -> e.IntentBase <- max e.IntentBase (int64 b)
        | [| "C"; b |] -> e.AckedBase <- max e.AckedBase (int64 b)
        | [| "h"; t |] -> e.IntentTerm <- max e.IntentTerm (int64 t)
        | [| "H"; t; g |] -> e.AckedHs <- Some(int64 t, Guid.Parse g)
        | _ -> ()

let private verify (dir: string) (e: Expectation) (context: string) =
    use storage = NodeStorage.Open(dir, smallOptions ())
    let log = storage.Log
    let hs = storage.HardState.State
    match e.AckedHs with
    | Some(t, g) ->
        Expect.isGreaterThanOrEqual hs.Term t (sprintf "%s: hard state term went back" context)
        Expect.isLessThanOrEqual hs.Term (max t e.IntentTerm) (sprintf "%s: hard state from nowhere" context)
        if hs.Term = t then
            Expect.equal hs.VotedFor (Some g) (sprintf "%s: vote of the acknowledged hard state" context)
    | None -> ()
    Expect.isGreaterThanOrEqual (log.FirstIndex - 1L) e.AckedBase (sprintf "%s: acknowledged compaction undone" context)
    Expect.isLessThanOrEqual (log.FirstIndex - 1L) (max e.IntentBase e.AckedBase) (sprintf "%s: compacted more than asked" context)
    let present = readAll log
    Expect.equal (int64 present.Length) (log.LastIndex - log.FirstIndex + 1L) (sprintf "%s: read back every entry" context)
    for en in present do
        if en.Payload.AsSpan().SequenceEqual(ReadOnlySpan(payloadOf en.Index en.Term)) |> not then
            failtestf "%s: entry %d (term %d) has a wrong payload" context en.Index en.Term
    for KeyValue(i, t) in e.Acked do
        if i >= log.FirstIndex then
            match log.TermAt i |> Option.ofNullable with
            | Some term -> Expect.equal term t (sprintf "%s: acknowledged entry %d has the wrong term" context i)
            | None -> failtestf "%s: acknowledged entry %d is missing (log %d..%d)" context i log.FirstIndex log.LastIndex
    // The state machine: its snapshot is never behind the log's start, and replaying the log after it gives, for
    // every key, the value of the last entry that wrote it.
    let kv = storage.Kv
    let applied = kv.AppliedIndex
    Expect.isGreaterThanOrEqual applied (log.FirstIndex - 1L) (sprintf "%s: the log was compacted past the snapshot" context)
    Expect.isLessThanOrEqual applied log.LastIndex (sprintf "%s: snapshot ahead of the log" context)
    for en in present do
        if en.Index > applied then
            kv.ApplyEncoded(en.Index, en.Term, ReadOnlySpan en.Payload) |> ignore
    for j in 0L .. 99L do
        let lastWriter = log.LastIndex - (((log.LastIndex - j) % 100L + 100L) % 100L)
        match kv.Get(sprintf "k/%d" j) with
        | null ->
            if lastWriter >= 1L then
                failtestf "%s: key k/%d missing (last written by entry %d)" context j lastWriter
        | value ->
            let index, term = originOf value
            Expect.equal index lastWriter (sprintf "%s: key k/%d holds the value of entry %d" context j index)
            if index >= log.FirstIndex then
                Expect.equal (Nullable term) (log.TermAt index) (sprintf "%s: key k/%d value's term" context j)
    // Compacted entries are no longer expected.
    for k in List.ofSeq e.Acked.Keys do
        if k < log.FirstIndex then
            e.Acked.Remove k |> ignore
    log.LastIndex

/// Not a synchronisation: only stops a wedged child from hanging the run.
let private hangGuard = TimeSpan.FromMinutes 3.0

let private runKills (kills: int) (seed: int) =
    printfn "crash test: seed=%d kills=%d (replay with SKIFF_CRASH_SEED=%d SKIFF_CRASH_KILLS=%d)" seed kills seed kills
    use tmp = new TempDir "crash"
    let dir = tmp.Sub "node"
    let rng = Random seed
    let e = Expectation()
    let self = (nonNull (Reflection.Assembly.GetEntryAssembly())).Location
    let mutable totalAcked = 0
    for run in 1..kills do
        let killAfter = if rng.Next 5 = 0 then 0 else rng.Next(1, 1500)
        let psi = ProcessStartInfo("dotnet", RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
        [ self; "--crash-writer"; dir; string run; string (rng.Next()) ] |> List.iter psi.ArgumentList.Add
        use p = startProcess psi
        let errors = p.StandardError.ReadToEndAsync()
        let mutable acks = 0
        let mutable killed = false
        let mutable reading = true
        // The last run is killed only after a snapshot and a compaction were acknowledged, so every default run
        // exercises them however slow the machine is (the random kill points alone may all come too early).
        let mustCompact = run = kills
        let mutable compacted = false
        let mutable due = false
        let started = Diagnostics.Stopwatch.StartNew()
        while reading do
            match p.StandardOutput.ReadLine() with
            | null -> reading <- false
            | line ->
                feed e line
                if line.StartsWith "A " && line.EndsWith " ." then
                    acks <- acks + 1
                if run = 1 && line.StartsWith "READY" then
                    // Another process holds the directory: opening it here must fail, not share it.
                    try
                        (NodeStorage.Open dir).Dispose()
                        failtest "opened a data directory another process holds"
                    with :? Skiff.SkiffException as ex ->
                        Expect.equal ex.Kind Skiff.ErrorKind.DataDirectoryLocked "locked by the child"
                if line.StartsWith "C " && line.EndsWith " ." then
                    compacted <- true
                // Once due, the kill waits (on the last run) for the compaction the writer starts at once; a kill
                // point at READY stays due after it. (Requiring READY and the compaction on the same line once made
                // the last run wait for a kill that could never come.)
                if line.StartsWith "READY" && killAfter = 0 || acks >= killAfter && killAfter > 0 then
                    due <- true
                if not killed && due && (not mustCompact || compacted) then
                    p.Kill()
                    killed <- true
                elif not killed && started.Elapsed > hangGuard then
                    p.Kill()
                    failtestf "run %d (seed %d): the writer neither reached its kill point nor compacted within %O" run seed hangGuard
        p.WaitForExit()
        if not killed then
            failtestf "run %d (seed %d): the writer exited on its own (code %d): %s" run seed p.ExitCode errors.Result
        totalAcked <- totalAcked + acks
        verify dir e (sprintf "run %d (seed %d, killed after %d acks)" run seed killAfter) |> ignore
    let count k =
        match e.Counts.TryGetValue k with
        | true, n -> n
        | _ -> 0
    printfn
        "crash test: %d kills, %d acknowledged entries checked, %d suffix replacements, %d snapshots, %d compactions, %d hard-state saves acknowledged"
        kills
        totalAcked
        (count "R")
        (count "S")
        (count "C")
        (count "H")
    Expect.isGreaterThan (count "R") 0 "the runs exercised suffix replacement"
    Expect.isGreaterThan (count "H") 0 "the runs exercised hard-state saves"
    Expect.isGreaterThan (count "C") 0 "the runs exercised compaction"
    Expect.isGreaterThan (count "S") 0 "the runs exercised snapshots"

let tests =
    testList
        "crash safety"
        [ testCase "SIGKILL at random moments loses nothing acknowledged"
          <| fun () ->
              let env name (d: int) =
                  match Environment.GetEnvironmentVariable name with
                  | null
                  | "" -> d
                  | s -> int s
              let seed = env "SKIFF_CRASH_SEED" (Random.Shared.Next())
              runKills (env "SKIFF_CRASH_KILLS" 20) seed ]
