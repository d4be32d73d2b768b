/// The `skiff` command as a process: every command, its error paths and exit codes, against a cluster of
/// `skiff serve` processes on 127.0.0.x; and the demo run to completion with nothing left behind.
module Skiff.Integration.CliTests

open System
open System.Diagnostics
open System.IO
open System.Net
open System.Runtime.InteropServices
open System.Text.Json
open System.Text.RegularExpressions
open System.Threading
open Expecto
open Skiff

[<DllImport("libc", EntryPoint = "kill", SetLastError = true)>]
extern int private sysKill(int pid, int signal)

/// Sends a signal to a process (15 SIGTERM, 19 SIGSTOP, 18 SIGCONT on Linux).
let signal (pid: int) (signal: int) = sysKill (pid, signal) |> ignore

/// The built command, run as `dotnet Skiff.Cli.dll` (the test project builds it first).
let cliDll =
    Path.Combine(SamplesTests.repoRoot, "src", "Skiff.Cli", "bin", SamplesTests.configuration, "net10.0", "Skiff.Cli.dll")

let private startInfo (args: string list) =
    let psi =
        ProcessStartInfo("dotnet", RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true)
    psi.ArgumentList.Add cliDll
    for a in args do
        psi.ArgumentList.Add a
    psi

/// Runs `skiff args` to its end with environment variables `env` set (stdin closed, or fed `input`); returns exit
/// code, stdout, stderr.
let skiffIn (env: (string * string) list) (input: string option) (args: string list) =
    let psi = startInfo args
    for k, v in env do
        psi.Environment[k] <- v
    use p = new Process(StartInfo = psi)
    p.Start() |> ignore
    input |> Option.iter p.StandardInput.Write
    p.StandardInput.Close()
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEndAsync()
    if not (p.WaitForExit(TimeSpan.FromSeconds 40.0)) then
        p.Kill true
        failtestf "skiff %A did not end within 40 s" args
    p.ExitCode, out.Result, err.Result

/// Runs `skiff args` to its end (stdin closed, or fed `input`); returns exit code, stdout, stderr.
let skiffWith (input: string option) (args: string list) = skiffIn [] input args

let skiff args = skiffWith None args

/// An expected error: the exit code, exactly one line on stderr, and no stack trace.
let expectError (code: int) (args: string list) =
    let c, out, err = skiff args
    Expect.equal c code (sprintf "exit code of skiff %A; stdout: %s; stderr: %s" args out err)
    let lines = err.Trim().Split('\n')
    Expect.equal lines.Length 1 (sprintf "one line on stderr for skiff %A, got:\n%s" args err)
    Expect.stringStarts lines[0] "skiff: " "the line names the command"
    Expect.isFalse (err.Contains "   at ") "no stack trace"
    err

/// Polls until `condition` holds; fails with `what` after `seconds`.
let waitUntil (seconds: float) (what: string) (condition: unit -> bool) =
    let deadline = DateTime.UtcNow.AddSeconds seconds
    while not (condition ()) do
        if DateTime.UtcNow > deadline then
            failtestf "waited %.0f s for: %s" seconds what
        Thread.Sleep 50

/// `skiff serve` for node n on 127.0.0.n, joining through `join`, or founding the cluster.
let serveArgs (n: int) (port: int) (dir: string) (join: string option) =
    [ "serve"; "--dir"; dir; "--bind"; sprintf "127.0.0.%d" n; "--port"; string port ]
    @ (match join with
       | Some j -> [ "--join"; j ]
       | None -> [ "--new-cluster" ]) // founds on the first start; a restart on the same directory ignores it

/// A `skiff` process running in the background (`skiff serve`, say), its output kept.
type ServeProcess(args: string list) =
    let lines = ResizeArray<string>()
    let p = new Process(StartInfo = startInfo args)
    let keep (e: DataReceivedEventArgs) =
        match e.Data with
        | null -> ()
        | line -> lock lines (fun () -> lines.Add line)
    do
        p.OutputDataReceived.Add keep
        p.ErrorDataReceived.Add keep
        p.Start() |> ignore
        p.BeginOutputReadLine()
        p.BeginErrorReadLine()
    member _.Output = lock lines (fun () -> String.Join("\n", lines))
    member _.Process = p
    member _.Terminate() = sysKill (p.Id, 15) |> ignore
    interface IDisposable with
        member _.Dispose() =
            if not p.HasExited then
                p.Kill true
                p.WaitForExit 5000 |> ignore
            p.Dispose()

/// Three `skiff serve` processes on a fresh port: node 1 starts the cluster, 2 and 3 join it.
type CliCluster() =
    let port = RuntimeTests.nextPort ()
    let root = Path.Combine(Path.GetTempPath(), "skiff-cli-" + Guid.NewGuid().ToString("N"))
    let node n join = new ServeProcess(serveArgs n port (Path.Combine(root, sprintf "n%d" n)) join)
    let nodes = ResizeArray<ServeProcess>()
    let client =
        (new Client([ IPAddress.Parse "127.0.0.1"; IPAddress.Parse "127.0.0.2"; IPAddress.Parse "127.0.0.3" ]))
            .WithPort(port)
            .WithTimeout(TimeSpan.FromSeconds 2.0)
    member _.Port = port
    member _.Root = root
    member _.Nodes = nodes
    member _.Endpoints = sprintf "127.0.0.1:%d,127.0.0.2:%d,127.0.0.3:%d" port port port
    member _.Endpoint n = sprintf "127.0.0.%d:%d" n port
    member _.Status() =
        try
            Some(client.GetStatusAsync().GetAwaiter().GetResult())
        with _ ->
            None
    member this.Start() =
        nodes.Add(node 1 None)
        waitUntil 30.0 "node 1 leads" (fun () ->
            match this.Status() with
            | Some s -> s.LeaderId.HasValue
            | None -> false)
        nodes.Add(node 2 (Some "127.0.0.1"))
        nodes.Add(node 3 (Some "127.0.0.1"))
        this.WaitFormed 3
    member this.WaitFormed(count: int) =
        waitUntil 40.0 (sprintf "%d voters with one leader" count) (fun () ->
            match this.Status() with
            | Some s ->
                s.Members.Count = count
                && s.LeaderId.HasValue
                && s.Members |> Seq.forall (fun m -> m.Reachable && m.Voter && m.LeaderId = s.LeaderId)
            | None -> false)
    interface IDisposable with
        member _.Dispose() =
            for n in nodes do
                (n :> IDisposable).Dispose()
            client.DisposeAsync().AsTask().Wait()
            try
                Directory.Delete(root, true)
            with _ ->
                ()

let private json (text: string) = JsonDocument.Parse(text).RootElement

let private processGone (pid: int) =
    try
        use p = Process.GetProcessById pid
        p.HasExited
    with :? ArgumentException ->
        true

let private clusterTests =
    test "skiff against a cluster of skiff serve processes: every command and its errors" {
        use c = new CliCluster()
        c.Start()
        let e = [ "--endpoints"; c.Endpoints ]
        let on n = [ "--endpoints"; c.Endpoint n ]
        let ok (args: string list) =
            let code, out, err = skiff args
            Expect.equal code 0 (sprintf "skiff %A: stdout %s stderr %s" args out err)
            out

        // serve logs its start, the election and the joins.
        Expect.stringContains c.Nodes[0].Output "serving at 127.0.0.1" "node 1 logs serving"
        waitUntil 10.0 "node 1 logs three members" (fun () -> c.Nodes[0].Output.Contains "members (3)")
        Expect.stringContains c.Nodes[0].Output "Leader in term" "node 1 logs its election"
        Expect.stringContains c.Nodes[1].Output "joining through 127.0.0.1" "node 2 logs its join"

        // put/get through different nodes; values are raw UTF-8 bytes.
        Expect.equal (ok ([ "put"; "app/greeting"; "hello world" ] @ on 1)) "OK\n" "put"
        Expect.equal (ok ([ "get"; "app/greeting" ] @ on 2)) "hello world\n" "get through another node"
        let code, _, _ = skiffWith (Some "from stdin") ([ "put"; "app/piped" ] @ on 3)
        Expect.equal code 0 "put from stdin"
        let viaJson = json (ok ([ "get"; "app/piped"; "--output"; "json" ] @ e))
        Expect.equal (viaJson.GetProperty("value").GetString()) "from stdin" "stdin value, read back as json"
        let typed = (new Client([ IPAddress.Parse "127.0.0.1" ])).WithPort(c.Port)
        let raw = typed.GetBytesAsync("app/greeting").GetAwaiter().GetResult()
        Expect.equal (Text.Encoding.UTF8.GetString(nonNull raw)) "hello world" "other clients see the raw bytes"
        typed.DisposeAsync().AsTask().Wait()

        // ls, prefixes, cas, del.
        Expect.equal (ok ([ "ls"; "app/" ] @ e)) "app/greeting\napp/piped\n" "ls"
        let listed = json (ok ([ "ls"; "--output"; "json" ] @ e))
        Expect.equal (listed.GetProperty("keys").GetArrayLength()) 2 "ls json"
        Expect.stringContains (ok ([ "prefixes" ] @ e)) "app" "prefixes"
        // One page at a time: --limit, and the --start-after it names.
        Expect.equal (ok ([ "ls"; "app/"; "--limit"; "1" ] @ e)) "app/greeting\n" "ls --limit 1"
        let page = json (ok ([ "ls"; "app/"; "--limit"; "1"; "--output"; "json" ] @ e))
        Expect.equal (page.GetProperty("next").GetString()) "app/greeting" "ls --limit json names where to continue"
        let rest = json (ok ([ "ls"; "app/"; "--limit"; "1"; "--start-after"; "app/greeting"; "--output"; "json" ] @ e))
        let restKeys = rest.GetProperty "keys"
        Expect.equal
            (restKeys[0].GetString(), (rest.GetProperty "next").ValueKind)
            ("app/piped", Text.Json.JsonValueKind.Null)
            "the last page"
        expectError 2 ([ "ls"; "--limit"; "0" ] @ e) |> ignore
        Expect.equal (ok ([ "cas"; "app/greeting"; "hello world"; "bonjour" ] @ e)) "OK\n" "cas swaps"
        expectError 6 ([ "cas"; "app/greeting"; "hello world"; "hola" ] @ e) |> ignore
        Expect.equal (ok ([ "get"; "app/greeting" ] @ e)) "bonjour\n" "a failed cas changed nothing"
        ok ([ "cas"; "app/new"; "-"; "created"; "--absent" ] @ e) |> ignore
        expectError 6 ([ "cas"; "app/new"; "-"; "again"; "--absent" ] @ e) |> ignore
        ok ([ "del"; "app/new" ] @ e) |> ignore
        Expect.stringContains (expectError 5 ([ "get"; "app/new" ] @ e)) "not found" "get of a deleted key"

        // watch: live changes, then a replay from an index.
        use watcher = new Process(StartInfo = startInfo ([ "watch"; "w/"; "--count"; "2" ] @ on 3))
        let seen = ResizeArray<string>()
        let mutable ready = false
        watcher.OutputDataReceived.Add(fun a ->
            match a.Data with
            | null -> ()
            | l -> lock seen (fun () -> seen.Add l))
        watcher.ErrorDataReceived.Add(fun a ->
            match a.Data with
            | null -> ()
            | l ->
                if l.StartsWith "watching" then
                    ready <- true)
        watcher.Start() |> ignore
        watcher.BeginOutputReadLine()
        watcher.BeginErrorReadLine()
        waitUntil 20.0 "the watch is registered" (fun () -> ready)
        ok ([ "put"; "w/a"; "1" ] @ on 1) |> ignore
        ok ([ "del"; "w/a" ] @ on 2) |> ignore
        Expect.isTrue (watcher.WaitForExit(TimeSpan.FromSeconds 20.0)) "watch --count 2 ends"
        watcher.WaitForExit()
        Expect.equal watcher.ExitCode 0 "watch exit code"
        let got = lock seen (fun () -> List.ofSeq seen)
        Expect.equal got.Length 2 (sprintf "two changes: %A" got)
        Expect.isTrue (Regex.IsMatch(got[0], @"^\d+ put w/a 1$")) (sprintf "the put: %s" got[0])
        Expect.isTrue (Regex.IsMatch(got[1], @"^\d+ del w/a$")) (sprintf "the delete: %s" got[1])
        let replay = ok ([ "watch"; "app/"; "--from"; "1"; "--count"; "2"; "--output"; "json" ] @ e)
        let first = json (replay.Split('\n')[0])
        Expect.equal (first.GetProperty("key").GetString()) "app/greeting" "replay starts at the first write"

        // status and members.
        let status = json (ok ([ "status"; "--output"; "json" ] @ e))
        let members = [ for m in status.GetProperty("members").EnumerateArray() -> m ]
        Expect.equal members.Length 3 "three members"
        Expect.equal (members |> List.filter (fun m -> m.GetProperty("role").GetString() = "leader") |> List.length) 1 "one leader"
        let table = ok ([ "status" ] @ e)
        for h in [ "id"; "address"; "role"; "term"; "commit"; "applied"; "leader" ] do
            Expect.stringContains table h "status table header"
        Expect.equal ((ok ([ "members" ] @ e)).Trim().Split('\n').Length) 3 "members lists three"

        // transfer-leader to a follower (by id prefix), then to an unknown id.
        let leaderId = status.GetProperty("leader").GetString() |> nonNull
        let follower = members |> List.find (fun m -> m.GetProperty("role").GetString() = "follower")
        let followerId = follower.GetProperty("id").GetString() |> nonNull
        Expect.stringContains (ok ([ "transfer-leader"; followerId[..7] ] @ e)) followerId "the new leader"
        waitUntil 10.0 "the follower leads" (fun () ->
            match c.Status() with
            | Some s -> s.LeaderId = Nullable(Guid.Parse followerId)
            | None -> false)
        expectError 5 ([ "transfer-leader"; "ffffffff-0000" ] @ e) |> ignore
        ignore leaderId

        // member remove, then member add of the same running node (it learns the id from the node).
        let node3 = members |> List.find (fun m -> m.GetProperty("address").GetString() = c.Endpoint 3)
        let node3Id = node3.GetProperty("id").GetString() |> nonNull
        ok ([ "member"; "remove"; node3Id ] @ on 1) |> ignore
        waitUntil 20.0 "two members" (fun () ->
            match c.Status() with
            | Some s -> s.Members.Count = 2
            | None -> false)
        expectError 5 ([ "member"; "remove"; node3Id ] @ on 1) |> ignore
        Expect.stringContains (ok ([ "member"; "add"; "127.0.0.3" ] @ on 1)) node3Id "added under the node's own id"
        c.WaitFormed 3
        // HOST:PORT names the same node: already a member.
        Expect.stringContains (expectError 2 ([ "member"; "add"; c.Endpoint 3 ] @ on 1)) "already a member" "HOST:PORT form"
        expectError 2 ([ "member"; "add"; "not an address" ] @ on 1) |> ignore

        // bad input and usage: exit 2, one line.
        expectError 2 ([ "put"; ""; "x" ] @ e) |> ignore
        expectError 2 [ "get"; "k"; "--endpoints"; "not an address" ] |> ignore
        expectError 2 [ "get"; "k"; "--endpoints"; "127.0.0.1:1,[::1" ] |> ignore
        // Legacy inet_aton forms are typos here, not addresses: 1.2.3 would be 1.2.0.3, off this machine.
        for bad in [ "1.2.3"; "127.1"; "127.0.0.1.5"; "0x7f.0.0.1"; "127.0.0.256"; "127.0.0.1:0" ] do
            Expect.stringContains (expectError 2 [ "get"; "k"; "--endpoints"; bad ]) "not" (sprintf "--endpoints %s refused" bad)
        expectError 2 ([ "member"; "add"; "127.0.3" ] @ on 1) |> ignore
        expectError 2 [ "frobnicate" ] |> ignore
        expectError 2 [ "get" ] |> ignore
        expectError 2 [ "ls"; "--output"; "yaml" ] |> ignore
        expectError 2 ([ "put"; "k"; "v"; "--timeout"; "0" ] @ e) |> ignore
        let helpCode, help, _ = skiff [ "--help" ]
        Expect.equal helpCode 0 "help exits 0"
        Expect.stringContains help "exit codes:" "help carries the exit-code table"

        // unreachable: nobody listens on that port.
        let unused = RuntimeTests.nextPort ()
        Expect.stringContains (expectError 3 [ "get"; "k"; "--endpoints"; sprintf "127.0.0.1:%d" unused ]) "unreachable" "unreachable"
        expectError 3 [ "status"; "--endpoints"; sprintf "127.0.0.1:%d" unused ] |> ignore

        // serve errors: a locked data directory, a bad bind address.
        expectError 7 [ "serve"; "--dir"; Path.Combine(c.Root, "n1"); "--bind"; "127.0.0.1"; "--port"; string unused ] |> ignore
        expectError 2 [ "serve"; "--dir"; Path.Combine(c.Root, "x"); "--bind"; "nowhere" ] |> ignore
        Expect.stringContains
            (expectError 2 [ "serve"; "--dir"; Path.Combine(c.Root, "x"); "--state-machine-memory-mib"; "0" ])
            "--state-machine-memory-mib"
            "a memory budget of 0 MiB is refused"

        // no quorum: with two of three nodes gone, a write through the last one cannot commit.
        let s = c.Status() |> Option.get
        let survivor = s.Members |> Seq.find (fun m -> m.LeaderId.HasValue && m.Id <> m.LeaderId.Value)
        let survivorNode = c.Nodes |> Seq.find (fun n -> survivor.Address.StartsWith(sprintf "127.0.0.%d:" (c.Nodes.IndexOf n + 1)))
        for n in c.Nodes do
            if not (obj.ReferenceEquals(n, survivorNode)) then
                n.Process.Kill()
                n.Process.WaitForExit()
        expectError 4 ([ "put"; "k"; "v"; "--timeout"; "2"; "--endpoints"; survivor.Address ]) |> ignore

        // serve ends cleanly on SIGTERM with exit 0.
        survivorNode.Terminate()
        Expect.isTrue (survivorNode.Process.WaitForExit(TimeSpan.FromSeconds 15.0)) "serve ends on SIGTERM"
        survivorNode.Process.WaitForExit()
        Expect.equal survivorNode.Process.ExitCode 0 "serve's exit code after SIGTERM"
        Expect.stringContains survivorNode.Output "stopped cleanly" "serve logs its clean stop"
    }

let private demoTest =
    test "skiff demo runs to completion, reports its measurements and leaves no process or directory behind" {
        let code, output = SamplesTests.runProject "src/Skiff.Cli" [ "demo" ] 120.0
        Expect.equal code 0 (sprintf "demo exit code; output:\n%s" output)
        for line in
            [ "Summary"
              "writes and reads through different nodes"
              "watch: 3 changes received"
              "killed with SIGKILL: writes accepted again after"
              "rejoined and caught up in"
              "data intact ("
              "none left running"
              "demo finished in" ] do
            Expect.stringContains output line "summary line"
        Expect.isTrue
            (Regex.IsMatch(output, @"writes accepted again after \d+ ms \(new leader node [1-3], term [2-9]"))
            "the new leader is named"
        let intact = Regex.Match(output, @"data intact \((\d+)/(\d+) keys\)")
        Expect.equal intact.Groups[1].Value intact.Groups[2].Value "every key intact"
        let pids = [ for m in Regex.Matches(output, @"pid (\d+)") -> int m.Groups[1].Value ]
        Expect.isGreaterThanOrEqual pids.Length 4 (sprintf "the demo names its node processes: %A" pids)
        for pid in pids do
            Expect.isTrue (processGone pid) (sprintf "node process %d is gone" pid)
        let dir = Regex.Match(output, @"cluster directory (\S+),")
        Expect.isTrue dir.Success "the demo names its directory"
        Expect.isFalse (Directory.Exists dir.Groups[1].Value) "the demo's directory is removed"
        let seconds = Regex.Match(output, @"demo finished in ([\d.]+) s")
        Expect.isLessThan (float seconds.Groups[1].Value) 60.0 "the demo ends within a minute"
    }

let tests = testSequenced <| testList "Cli" [ clusterTests; demoTest ]
