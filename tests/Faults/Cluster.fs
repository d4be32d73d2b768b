/// The members: `skiff serve` processes on 127.0.0.1–5, each under its own uid (inside the namespace), with their
/// logs, their exits (expected or not) and admin clients for status and membership.
module Skiff.Faults.Cluster

open System
open System.Collections.Concurrent
open System.Diagnostics
open System.IO
open System.Runtime.InteropServices
open System.Threading
open System.Threading.Tasks
open Skiff.Net.Runtime

[<DllImport("libc", SetLastError = true)>]
extern int kill(int pid, int signal)

let SIGKILL = 9
let SIGTERM = 15
let SIGSTOP = 19
let SIGCONT = 18

/// Time since the harness started, in microseconds: the clock of histories and timelines.
let private epoch = Stopwatch.StartNew()
let now () : int64 = epoch.Elapsed.Ticks / 10L
let showTime (us: int64) = sprintf "%8.3f" (float us / 1e6)

/// The timeline of one run: nemesis actions, member starts and exits, notes.
type Timeline() =
    let events = ConcurrentQueue<int64 * string>()
    member _.Add(text: string) = events.Enqueue((now (), text))
    member _.Lines = events |> Seq.sortBy fst |> Seq.map (fun (t, s) -> showTime t + "  " + s) |> List.ofSeq

/// Finds the built `skiff` command (Skiff.Cli.dll) next to the repository's Release or Debug output.
let skiffDll () : string =
    let rec up (dir: DirectoryInfo) =
        if isNull dir then
            failwith "cannot find the repository root (Skiff.Functional.sln) above the test program"
        elif File.Exists(Path.Combine(dir.FullName, "Skiff.Functional.sln")) then
            dir.FullName
        else
            up dir.Parent
    let root = up (DirectoryInfo AppContext.BaseDirectory)
    [ "Release"; "Debug" ]
    |> List.map (fun c -> Path.Combine(root, "src", "Skiff.Cli", "bin", c, "net10.0", "Skiff.Cli.dll"))
    |> List.tryFind File.Exists
    |> Option.defaultWith (fun () -> failwith "Skiff.Cli.dll not built: run `dotnet build Skiff.Functional.sln -c Release` first")

/// One member slot: a fixed address and uid; its process comes and goes.
type Member(slot: int, port: int, runDir: string, timeline: Timeline, separateUids: bool, parentPid: int, serveFlags: string list) =
    let ip = sprintf "127.0.0.%d" slot
    let uid = 47000 + slot
    let dataDir = Path.Combine(runDir, sprintf "n%d" slot)
    let home = Path.Combine(runDir, sprintf "home%d" slot)
    let logPath = Path.Combine(runDir, sprintf "member%d.log" slot)
    let log = new StreamWriter(logPath, true, AutoFlush = true)
    let gate = obj ()
    let mutable proc: Process option = None
    let mutable expectingExit = false
    let mutable paused = false
    let mutable incarnation = 0
    // False from a wipe until the member reports itself a member of the cluster: until then a restart must join
    // again (without --join a node with no cluster founds a new one).
    let mutable joined = true
    let mutable lastJoin: string list = []
    let unexpected = ResizeArray<string>()
    let remarks = ResizeArray<string>()
    let mutable serving = false
    let suspicious = ResizeArray<string>()
    let admin = lazy (new SkiffGrpcClient([ sprintf "%s:%d" ip port ]))

    let chown (path: string) =
        if separateUids then
            Netns.run "chown" [ "-R"; sprintf "%d:%d" uid uid; path ] 30_000 |> ignore

    let write (line: string) =
        lock gate (fun () -> log.WriteLine line)
        if line.Contains " serving at " then
            serving <- true
        // Log lines that speak of a crash: counted and reported (the runtime logs "crit" for fatal errors).
        if line.Contains " crit " || line.Contains "Unhandled exception" || line.Contains "FATAL" then
            lock suspicious (fun () -> suspicious.Add(sprintf "member %d: %s" slot line))

    do
        Directory.CreateDirectory dataDir |> ignore
        Directory.CreateDirectory home |> ignore
        chown dataDir
        chown home

    member _.Slot = slot
    member _.Ip = ip
    member _.Uid = uid
    member _.Address = sprintf "%s:%d" ip port
    member _.Admin = admin.Value
    member _.LogPath = logPath
    member _.Running = lock gate (fun () -> proc.IsSome)
    member _.Paused = paused
    /// False between a wipe and the member reporting itself part of the cluster.
    member _.Joined = joined
    member _.Unexpected = lock gate (fun () -> List.ofSeq unexpected)
    member _.Remarks = lock gate (fun () -> List.ofSeq remarks)
    member _.Suspicious = lock suspicious (fun () -> List.ofSeq suspicious)

    /// Starts `skiff serve` (joining through `join` if given). `faketimeFile`: run under libfaketime, whose offset
    /// is read from that file.
    member this.Start(join: string list, faketime: (string * string) option) =
        lock gate (fun () ->
            if proc.IsSome then
                failwithf "member %d already running" slot
            let join = if join.IsEmpty && not joined then lastJoin else join
            if not join.IsEmpty then
                lastJoin <- join
            incarnation <- incarnation + 1
            let dll = skiffDll ()
            let serve =
                [ "dotnet"
                  dll
                  "serve"
                  "--dir"
                  dataDir
                  "--bind"
                  ip
                  "--port"
                  string port
                  "--heartbeat-ms"
                  "50"
                  "--election-ms"
                  "300"
                  "--parent-pid"
                  string parentPid ]
                @ serveFlags
                @ (if not join.IsEmpty then [ "--join"; String.Join(",", join) ]
                   elif incarnation = 1 then [ "--new-cluster" ] // the seed's first start founds the cluster
                   else [])
            // libfaketime is preloaded into the member only (through `env`, after setpriv dropped to the member's
            // uid), not into setpriv: a root setpriv would create faketime's semaphore where the member cannot open it.
            let serve =
                match faketime with
                | Some(lib, file) ->
                    [ "env"
                      "LD_PRELOAD=" + lib
                      "FAKETIME_TIMESTAMP_FILE=" + file
                      "FAKETIME_CACHE_DURATION=1"
                      "FAKETIME_DONT_RESET=1"
                      "FAKETIME_DISABLE_SHM=1" ]
                    @ serve
                | None -> serve
            let command =
                if separateUids then
                    [ "setpriv"; "--reuid"; string uid; "--regid"; string uid; "--clear-groups"; "--" ] @ serve
                else
                    serve
            let psi =
                ProcessStartInfo(List.head command, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
            command |> List.tail |> List.iter psi.ArgumentList.Add
            psi.Environment["HOME"] <- home
            psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] <- "1"
            psi.Environment["DOTNET_NOLOGO"] <- "1"
            psi.Environment["DOTNET_gcServer"] <- "0"
            let p = new Process(StartInfo = psi, EnableRaisingEvents = true)
            let n = incarnation
            let onLine (e: DataReceivedEventArgs) =
                if not (isNull e.Data) then
                    write e.Data
            p.OutputDataReceived.Add onLine
            p.ErrorDataReceived.Add onLine
            p.Exited.Add(fun _ ->
                let code =
                    try
                        p.ExitCode
                    with _ ->
                        -1
                lock gate (fun () ->
                    let expected = expectingExit
                    write (
                        sprintf
                            "### harness: incarnation %d exited with %d%s"
                            n
                            code
                            (if expected then " (expected)" else " (UNEXPECTED)")
                    )
                    timeline.Add(sprintf "member %d exited with %d%s" slot code (if expected then "" else " UNEXPECTED"))
                    if not expected then
                        unexpected.Add(sprintf "member %d (incarnation %d) exited by itself with code %d" slot n code)
                    match proc with
                    | Some q when obj.ReferenceEquals(q, p) -> proc <- None
                    | _ -> ()))
            write (sprintf "### harness: starting incarnation %d: %s" n (String.Join(" ", command)))
            expectingExit <- false
            serving <- false
            paused <- false
            p.Start() |> ignore
            p.BeginOutputReadLine()
            p.BeginErrorReadLine()
            proc <- Some p
            timeline.Add(
                sprintf
                    "member %d started (pid %d)%s"
                    slot
                    p.Id
                    (if join.IsEmpty then "" else " joining through " + String.Join(",", join))
            ))

    member private _.Signal(signal: int) =
        match lock gate (fun () -> proc) with
        | Some p -> kill (p.Id, signal) |> ignore
        | None -> ()

    /// Marks the exit that follows as expected and resumes a paused member (so it can take the signal); the running
    /// process, if any.
    member private this.ExpectExit() =
        let running =
            lock gate (fun () ->
                expectingExit <- true
                proc)
        if running.IsSome && paused then
            this.Signal SIGCONT
        running

    /// Forgets the process once it is gone.
    member private _.Gone() =
        lock gate (fun () -> proc <- None)
        paused <- false

    /// SIGKILL, and waits (bounded) until it is gone.
    member this.Kill() =
        match this.ExpectExit() with
        | Some p ->
            kill (p.Id, SIGKILL) |> ignore
            p.WaitForExit 10_000 |> ignore
            this.Gone()
        | None -> ()

    /// SIGTERM (a clean shutdown, exit 0 expected), then SIGKILL after 10 s.
    member this.Stop() =
        match this.ExpectExit() with
        | Some p ->
            kill (p.Id, SIGTERM) |> ignore
            if not (p.WaitForExit 10_000) then
                timeline.Add(sprintf "member %d did not stop within 10 s of SIGTERM: killed" slot)
                kill (p.Id, SIGKILL) |> ignore
                p.WaitForExit 5_000 |> ignore
            else
                p.WaitForExit()
                if p.ExitCode <> 0 then
                    // Only a member that was serving promises a clean exit; one stopped while still starting or
                    // joining (under heavy load, before .NET handles SIGTERM at all) is remarked on, not failed.
                    let text = sprintf "member %d exited with %d after SIGTERM (expected 0)" slot p.ExitCode
                    lock gate (fun () -> if serving then unexpected.Add text else remarks.Add(text + " before it was serving"))
            this.Gone()
        | None -> ()

    member this.Pause() =
        if this.Running && not paused then
            this.Signal SIGSTOP
            paused <- true

    member this.Resume() =
        if paused then
            this.Signal SIGCONT
            paused <- false

    /// Deletes the data directory (the member must be stopped).
    member _.Wipe() =
        joined <- false
        if Directory.Exists dataDir then
            Directory.Delete(dataDir, true)
        Directory.CreateDirectory dataDir |> ignore
        chown dataDir

    /// The member's own status, or None if it does not answer within `ms`.
    member this.Status(ms: int) : Skiff.Net.Protocol.ClusterStatusReply option =
        if not this.Running || paused then
            None
        else
            use cts = new CancellationTokenSource(ms)
            try
                let s = this.Admin.ClusterStatusAsync(cts.Token).GetAwaiter().GetResult()
                if not joined && s.Members |> Seq.exists (fun m -> m.Id = s.Id && m.Address = this.Address) then
                    joined <- true
                Some s
            with _ ->
                None

    interface IDisposable with
        member this.Dispose() =
            (try
                this.Kill()
             with _ ->
                 ())
            if admin.IsValueCreated then
                admin.Value.Dispose()
            lock gate (fun () -> log.Dispose())

/// Polls until `f` returns Some or the time is up.
let waitFor (ms: int) (f: unit -> 'a option) : 'a option =
    let watch = Stopwatch.StartNew()
    let mutable result = f ()
    while result.IsNone && watch.ElapsedMilliseconds < int64 ms do
        Thread.Sleep 100
        result <- f ()
    result

/// The current leader as the running members report it: (member, status) of the member that says it is leader
/// in the highest term.
let leader (members: Member list) : (Member * Skiff.Net.Protocol.ClusterStatusReply) option =
    members
    |> List.choose (fun m -> m.Status 500 |> Option.map (fun s -> m, s))
    |> List.filter (fun (_, s) -> s.Role = "Leader" || s.Role = "leader")
    |> List.sortByDescending (fun (_, s) -> s.Term)
    |> List.tryHead
