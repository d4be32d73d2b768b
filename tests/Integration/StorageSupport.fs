/// Helpers shared by the storage tests and the crash-writer child process.
module Skiff.Integration.StorageSupport

open System
open System.Collections.Generic
open System.IO
open System.Threading
open Expecto
open Skiff.Net.Storage

/// Starts a process (never null: failure throws).
let startProcess (psi: System.Diagnostics.ProcessStartInfo) : System.Diagnostics.Process =
    match System.Diagnostics.Process.Start psi with
    | null -> failwithf "could not start %s" psi.FileName
    | p -> p

/// Runs this test program again as a child process with `args` (a probe that must measure something in a fresh process:
/// compiled code, the thread pool's defaults) and returns the line its output starts with `PROBE`; fails the test if
/// the child does not finish in three minutes, exits non-zero or prints no such line.
let runChildProbe (args: string list) : string =
    let self = (nonNull (System.Reflection.Assembly.GetEntryAssembly())).Location
    let psi =
        System.Diagnostics.ProcessStartInfo("dotnet", RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    self :: args |> List.iter psi.ArgumentList.Add
    use p = startProcess psi
    let err = p.StandardError.ReadToEndAsync()
    let out = p.StandardOutput.ReadToEnd()
    // Not a synchronisation: only stops a wedged child from hanging the run.
    if not (p.WaitForExit(TimeSpan.FromMinutes 3.0)) then
        p.Kill true
        failwithf "the probe %A did not finish: %s" args out
    if p.ExitCode <> 0 then
        failwithf "the probe %A exited %d: %s %s" args p.ExitCode out err.Result
    match out.Split('\n') |> Array.tryFind (fun l -> l.StartsWith "PROBE") with
    | Some line -> line.Trim()
    | None -> failwithf "the probe %A printed no PROBE line: %s" args out

/// The value of `name=value` in a probe's line.
let probeField (line: string) (name: string) =
    line.Split(' ') |> Array.pick (fun f -> if f.StartsWith(name + "=") then Some(f.Substring(name.Length + 1)) else None)

/// A fresh directory under the temp dir; deleted when disposed.
type TempDir(name: string) =
    let path = Path.Combine(Path.GetTempPath(), sprintf "skiff-%s-%s" name (Guid.NewGuid().ToString("N")))
    do Directory.CreateDirectory path |> ignore
    member _.Path = path
    member _.Sub(name: string) = Path.Combine(path, name)
    interface IDisposable with
        member _.Dispose() =
            // SKIFF_KEEP_TMP=1 keeps the directory, to look at a failed run's files.
            if Environment.GetEnvironmentVariable "SKIFF_KEEP_TMP" <> "1" then
                try
                    Directory.Delete(path, true)
                with _ ->
                    ()

/// The payload of entry (index, term): an encoded put of key `k/<index % 100>` whose value starts with the index
/// and term, then a deterministic filler of variable length, so a checker can recompute and recognise it.
let payloadOf (index: int64) (term: int64) : byte[] =
    let rng = Random(int (index * 7919L + term * 104729L))
    let value = Array.zeroCreate<byte>(16 + rng.Next(0, 200))
    rng.NextBytes value
    BitConverter.TryWriteBytes(Span(value, 0, 8), index) |> ignore
    BitConverter.TryWriteBytes(Span(value, 8, 8), term) |> ignore
    Skiff.Core.CommandCodec.encode (Skiff.Core.Command.Insert(sprintf "k/%d" (index % 100L), value))

/// The (index, term) a value written by `payloadOf` carries.
let originOf (value: byte[]) = BitConverter.ToInt64(value, 0), BitConverter.ToInt64(value, 8)

let entry (index: int64) (term: int64) = LogEntry(index, term, payloadOf index term)

let entries (first: int64) (last: int64) (term: int64) : IReadOnlyList<LogEntry> =
    [| for i in first..last -> entry i term |] :> IReadOnlyList<LogEntry>

let append (log: RaftLog) (es: IReadOnlyList<LogEntry>) = log.AppendAsync(es, CancellationToken.None).GetAwaiter().GetResult()

let readAll (log: RaftLog) : LogEntry list =
    if log.LastIndex < log.FirstIndex then
        []
    else
        log.ReadAsync(log.FirstIndex, log.LastIndex).GetAwaiter().GetResult() |> List.ofSeq

/// Writes a log as the FasterLog of older versions did (records through FASTER, one commit), optionally with a
/// base record after the entries; for the migration tests.
let writeLegacyLog (dir: string) (options: RaftLogOptions) (es: LogEntry list) (baseAt: (int64 * int64) option) =
    Directory.CreateDirectory dir |> ignore
    StoreGeometry.Resolve(dir, StoreGeometry(options.PageSizeBits, options.SegmentSizeBits), RaftLogOptions.LegacyGeometry, "raft.log")
    |> ignore
    use files = FasterLogFiles.Open(dir, options)
    for e in es do
        files.Log.Enqueue(LogRecord.Encode(LogRecordType.Entry, e.Index, e.Term, ReadOnlySpan e.Payload)) |> ignore
    match baseAt with
    | Some(i, t) -> files.Log.Enqueue(LogRecord.Encode(LogRecordType.Base, i, t, ReadOnlySpan<byte>.Empty)) |> ignore
    | None -> ()
    files.Log.Commit(true)

/// Finds `needle` in a file; returns its offset, or -1.
let findInFile (path: string) (needle: byte[]) : int =
    let hay = File.ReadAllBytes path
    hay.AsSpan().IndexOf(ReadOnlySpan needle)

/// Flips one byte of a file in place.
let flipByte (path: string) (offset: int) =
    use fs = new FileStream(path, FileMode.Open, FileAccess.ReadWrite)
    fs.Position <- int64 offset
    let b = fs.ReadByte()
    fs.Position <- int64 offset
    fs.WriteByte(byte (b ^^^ 0xFF))
    fs.Flush true

/// The number in environment variable `name`, or `fallback` when it is unset.
let intFromEnv (name: string) (fallback: unit -> int) =
    match Environment.GetEnvironmentVariable name with
    | null
    | "" -> fallback ()
    | v -> int v

/// A random test's seed: SKIFF_SEED to replay one, else a new one.
let seedFromEnv () = intFromEnv "SKIFF_SEED" Random.Shared.Next

/// Small in-memory sizes for the crash tests' many opens.
let smallOptions () =
    NodeStorageOptions(
        Log = RaftLogOptions(KeepTail = 50L, MemorySizeBits = 22, PageSizeBits = 18),
        Kv = KvOptions(IndexSizeBytes = (1L <<< 18), MemorySizeBits = 22, PageSizeBits = 18)
    )

/// Polls `condition` every 10 ms until it holds or `seconds` pass (then fails with `what`).
let waitUntil (seconds: float) (what: string) (condition: unit -> bool) =
    let deadline = DateTime.UtcNow.AddSeconds seconds
    let mutable ok = condition ()
    while not ok && DateTime.UtcNow < deadline do
        Thread.Sleep 10
        ok <- condition ()
    if not ok then
        failtestf "timed out after %.1f s waiting for: %s" seconds what

/// Runs a shell command, returning its exit code.
let sh (cmd: string) =
    let psi = System.Diagnostics.ProcessStartInfo("sh", RedirectStandardOutput = true, RedirectStandardError = true)
    [ "-c"; cmd ] |> List.iter psi.ArgumentList.Add
    use p = startProcess psi
    p.WaitForExit()
    p.ExitCode

/// A small tmpfs mounted for the test (tests run as root); unmounted afterwards.
let withTmpfs (sizeKb: int) (f: string -> unit) =
    use tmp = new TempDir "mnt"
    if sh (sprintf "mount -t tmpfs -o size=%dk tmpfs '%s'" sizeKb tmp.Path) <> 0 then
        failtest "could not mount a tmpfs (these tests need root, as CI has)"
    try
        f tmp.Path
    finally
        sh (sprintf "umount -l '%s'" tmp.Path) |> ignore
