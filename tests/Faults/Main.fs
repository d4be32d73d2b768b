module Skiff.Faults.Main

open System
open System.Threading
open Skiff.Faults

[<System.Runtime.InteropServices.DllImport("libc")>]
extern int getppid()

/// Leaves when the process that started us is gone (the namespace parent, or the test runner), so no member
/// outlives an interrupted run: members watch this process's pid themselves.
let private watchParent () =
    let parent = getppid ()
    let t =
        Thread(
            (fun () ->
                while getppid () = parent do
                    Thread.Sleep 500
                eprintfn "faults: parent process %d is gone: stopping" parent
                exit 3),
            IsBackground = true
        )
    t.Start()

let private freePort () =
    let l = new Net.Sockets.TcpListener(Net.IPAddress.Loopback, 0)
    l.Start()
    let p = (l.LocalEndpoint :?> Net.IPEndPoint).Port
    l.Stop()
    p

[<EntryPoint>]
let main argv =
    // Our own options: --minutes N (one long run of every fault instead of the default tests).
    let minutes, rest =
        match Array.tryFindIndex ((=) "--minutes") argv with
        | Some i when i + 1 < argv.Length -> Some(float argv[i + 1]), Array.append argv[.. i - 1] argv[i + 2 ..]
        | _ -> None, argv
    let profile, rest =
        match Array.tryFindIndex ((=) "--profile") rest with
        | Some i when i + 1 < rest.Length ->
            let p =
                match rest[i + 1] with
                | "partitions" -> Nemesis.partitions
                | "crashes" -> Nemesis.crashes
                | "everything" -> Nemesis.everything
                | other -> failwithf "--profile %s: expected partitions, crashes or everything" other
            p, Array.append rest[.. i - 1] rest[i + 2 ..]
        | _ -> Nemesis.everything, rest
    let catches, rest =
        match Array.tryFindIndex ((=) "--catches") rest with
        | Some i -> true, Array.append rest[.. i - 1] rest[i + 1 ..]
        | None -> false, rest
    let notes = Collections.Generic.List<string>()
    if String.IsNullOrEmpty(Environment.GetEnvironmentVariable Netns.NamespaceVariable) then
        notes.AddRange(Netns.ensureTools ())
    match Netns.reexecInside argv notes with
    | Some code -> code
    | None ->
        watchParent ()
        for n in notes do
            printfn "faults: %s" n
        match Netns.mode.Value with
        | Netns.Private ns -> printfn "faults: running inside private network namespace %s (links cut with nftables there)" ns
        | Netns.HostLoopback why ->
            Run.Port <- freePort ()
            printfn
                "faults: FALLBACK: %s; members on the host's 127.0.0.x port %d, kills and pauses only, NO partitions (the fault-injecting proxy is not built yet)"
                why
                Run.Port
        let tests =
            match minutes, catches with
            | Some m, _ -> FaultTests.longRun m profile
            | None, true -> FaultTests.catches
            | None, false -> FaultTests.tests
        try
            Skiff.Tests.TestMain.run rest tests
        finally
            (try
                IO.Directory.Delete(Run.workRoot, true)
             with _ ->
                 ())
