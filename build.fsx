// Skiff's build script: `dotnet fsi build.fsx <target> [args]`.
// Targets: build | check | test | soak [count] | replay <schedule|seed> | pack [dir] | bench [args] | faults [--minutes N|--catches]. A plain script
// that starts processes: FAKE 6 does not restore here and FAKE 5 needs hand-set context, and this is all we need.
open System
open System.Diagnostics
open System.Text.RegularExpressions

let root = __SOURCE_DIRECTORY__
let solution = IO.Path.Combine(root, "Skiff.Functional.sln")

/// Runs a process with inherited environment, echoing each output line and handing it to `onLine`.
let runStreaming (file: string) (args: string list) (onLine: string -> unit) : int =
    let psi = ProcessStartInfo(file, WorkingDirectory = root, RedirectStandardOutput = true, RedirectStandardError = true)
    args |> List.iter psi.ArgumentList.Add
    use p = new Process(StartInfo = psi)
    let gate = obj ()
    let handle (e: DataReceivedEventArgs) =
        if not (isNull e.Data) then
            lock gate (fun () ->
                Console.Out.WriteLine e.Data
                onLine e.Data)
    p.OutputDataReceived.Add handle
    p.ErrorDataReceived.Add handle
    p.Start() |> ignore
    p.BeginOutputReadLine()
    p.BeginErrorReadLine()
    p.WaitForExit()
    p.ExitCode

let run file args = runStreaming file args ignore

let build () =
    let code = run "dotnet" [ "build"; solution; "-c"; "Release"; "-nologo"; "-v"; "q"; "-clp:NoSummary" ]
    if code <> 0 then
        eprintfn "build failed (exit %d)" code
        exit code

/// Source files of the product (src/, generated code and build output aside).
let productSources () =
    IO.Directory.EnumerateFiles(IO.Path.Combine(root, "src"), "*.*", IO.SearchOption.AllDirectories)
    |> Seq.filter (fun f -> f.EndsWith ".cs" || f.EndsWith ".fs")
    |> Seq.filter (fun f -> not (f.Contains "/obj/" || f.Contains "/bin/"))
    |> Seq.toList

/// The longest file the product may have (tests and the simulator aside): past it, a file has more than one job.
let maxProductFileLines = 400

/// Fails on drift from the project's habits: F# not as Fantomas formats it, C# not as `dotnet format` formats it
/// (whitespace and the .editorconfig style rules), or a product file over `maxProductFileLines` lines. Returns the
/// failures found (empty when clean).
let checkHabits () : string list =
    let failures = ResizeArray<string>()
    if run "dotnet" [ "tool"; "restore" ] <> 0 then
        failures.Add "dotnet tool restore failed"
    else
        if run "dotnet" [ "fantomas"; "--check"; "src"; "tests"; "bench"; "samples"; "build.fsx" ] <> 0 then
            failures.Add "F# formatting drifted: run `dotnet fantomas src tests bench samples build.fsx`"
        if run "dotnet" [ "format"; "whitespace"; solution; "--verify-no-changes" ] <> 0 then
            failures.Add "C# whitespace drifted: run `dotnet format whitespace Skiff.Functional.sln`"
        if run "dotnet" [ "format"; "style"; solution; "--verify-no-changes"; "--severity"; "warn" ] <> 0 then
            failures.Add "C# style drifted: run `dotnet format style Skiff.Functional.sln --severity warn`"
    for file in productSources () do
        let relative = IO.Path.GetRelativePath(root, file)
        let lines = IO.File.ReadAllLines(file).Length
        if lines > maxProductFileLines && not (relative.StartsWith "src/Skiff.Simulation/") then
            failures.Add(sprintf "%s has %d lines (at most %d outside tests and the simulator)" relative lines maxProductFileLines)
    for f in failures do
        eprintfn "check: %s" f
    List.ofSeq failures

let check () =
    let failures = checkHabits ()
    printfn "check: %s" (if failures.IsEmpty then "passed" else sprintf "FAILED (%d)" failures.Length)
    exit (if failures.IsEmpty then 0 else 1)

/// The test projects, in the order they run: the fast deterministic ones first. tests/Faults runs real clusters under
/// faults (two one-minute runs, about 3 minutes; it installs iproute2/nftables/faketime with apt-get when missing).
let testProjects = [ "tests/PropertyTests"; "tests/Integration"; "tests/Faults" ]

let countLine = Regex(@"SKIFF-TESTS passed=(\d+) failed=(\d+)")

let test (extra: string list) =
    build ()
    let watch = Stopwatch.StartNew()
    let mutable passed = 0
    let mutable failed = 0
    // The habits check (formatting, file sizes) counts as one test, so drift fails CI like a broken test.
    if checkHabits().IsEmpty then
        printfn "check: passed"
        passed <- passed + 1
    else
        eprintfn "check: FAILED"
        failed <- failed + 1
    for project in testProjects do
        let mutable counted = false
        let onLine (line: string) =
            let m = countLine.Match line
            if m.Success then
                counted <- true
                passed <- passed + int m.Groups[1].Value
                failed <- failed + int m.Groups[2].Value
        let args = [ "run"; "--project"; project; "-c"; "Release"; "--no-build"; "--" ] @ extra
        let code = runStreaming "dotnet" args onLine
        // A test program that died before printing its count is one failure, never a silent pass.
        if not counted then
            eprintfn "%s ended (exit %d) without reporting its results" project code
            failed <- failed + 1
        elif code <> 0 && failed = 0 then
            eprintfn "%s exited %d with no failed test reported" project code
            failed <- failed + 1
    // Bench smoke: the side-by-side cluster benchmark in --quick mode (skiff, etcd, dotnext and the TLS rows of skiff and etcd; about 2.5 minutes), so the
    // harness and the adapters never rot. One test: passed if it exits 0. Its report goes to bench/results/smoke
    // (ignored by git), not docs/. Needs etcd (.ci/run installs it with bench/install-peers.sh).
    let smoke = Stopwatch.StartNew()
    let harness = IO.Path.Combine(root, "bench", "Skiff.Bench.Cluster", "bin", "Release", "net10.0", "Skiff.Bench.Cluster.dll")
    let smokeCode =
        // SIGINT on timeout: the harness then stops its members (after a SIGTERM they were seen left running).
        run "timeout" [ "-s"; "INT"; "-k"; "30"; "600"; "dotnet"; harness; "--quick"; "--no-build"; "--docs"; "bench/results/smoke" ]
    if smokeCode = 0 then
        printfn "bench smoke: passed in %.0f s" smoke.Elapsed.TotalSeconds
        passed <- passed + 1
    else
        eprintfn "bench smoke: FAILED (exit %d) after %.0f s" smokeCode smoke.Elapsed.TotalSeconds
        failed <- failed + 1
    printfn "test run took %.0f s" watch.Elapsed.TotalSeconds
    printfn "%d passed, %d failed" passed failed
    exit (if failed = 0 then 0 else 1)

/// The simulation tools' flags, passed to the PropertyTests program as the environment it reads
/// (tests/PropertyTests/SimulationTools.fs); what is left is returned.
let rec simulationFlags (args: string list) : string list =
    let set name value = Environment.SetEnvironmentVariable(name, value)
    match args with
    | "--seed" :: seed :: rest ->
        set "SKIFF_SEED" seed
        simulationFlags rest
    | "--steps" :: steps :: rest ->
        set "SKIFF_SOAK_STEPS" steps
        simulationFlags rest
    | "--plain" :: rest ->
        set "SKIFF_PLAIN" "1"
        simulationFlags rest
    | "--sessions" :: rest ->
        set "SKIFF_SOAK_SESSIONS" "1"
        simulationFlags rest
    | "--all" :: rest ->
        set "SKIFF_SOAK_ALL" "1"
        simulationFlags rest
    | "--shrink" :: rest ->
        set "SKIFF_SHRINK" "1"
        simulationFlags rest
    | "--schedules" :: count :: rest -> count :: simulationFlags rest
    | other :: rest -> other :: simulationFlags rest
    | [] -> []

let private propertyTests (args: string list) =
    build ()
    exit (run "dotnet" ([ "run"; "--project"; "tests/PropertyTests"; "-c"; "Release"; "--no-build"; "--" ] @ args))

/// `soak [--schedules N | N] [--seed S] [--steps K] [--plain] [--sessions] [--all]`: N random schedules (until
/// Ctrl-C without N) of up to K faults (12), with Pre-Vote and CheckQuorum unless --plain; --all reports every
/// violation instead of stopping at the first.
let soak (extra: string list) = propertyTests ("--soak" :: simulationFlags extra)

/// `replay '<schedule>' | <soak seed> [--plain] [--steps K] [--shrink]`: one schedule again with its full trace
/// (for a seed: the first failure of that soak).
let replay (extra: string list) = propertyTests ("--replay" :: simulationFlags extra)

/// NuGet packages of every library and the CLI tool, with README, license and symbols, into `artifacts/`.
let pack (extra: string list) =
    build ()
    let output =
        match extra with
        | dir :: _ -> dir
        | [] -> IO.Path.Combine(root, "artifacts")
    exit (run "dotnet" [ "pack"; solution; "-c"; "Release"; "--no-build"; "-o"; output ])

/// Every benchmark, in one run: the storage benchmark (durable appends against raw fsync, recovery, snapshots), the
/// BenchmarkDotNet micro-benchmarks of the storage paths and of the reducer (short jobs), then the side-by-side
/// cluster benchmark, which gets the extra args (e.g. `bench --systems skiff,etcd`). With `--quick` the
/// micro-benchmarks run in their quick modes. Fails if any part does; the others still run.
let bench (extra: string list) =
    build ()
    // The cluster benchmark reads Skiff members' snapshot pauses with dotnet-counters, a tool of the manifest.
    if run "dotnet" [ "tool"; "restore" ] <> 0 then
        eprintfn "dotnet tool restore failed: the cluster benchmark will not measure snapshot pauses"
    let quick = List.contains "--quick" extra
    let project name args = run "dotnet" ([ "run"; "--project"; name; "-c"; "Release"; "--no-build"; "--" ] @ args)
    let parts =
        [ "storage benchmark", (fun () -> project "bench/Skiff.Bench" [ "storage" ])
          if not quick then
              "storage micro-benchmarks", (fun () -> project "bench/Skiff.Bench" [ "micro" ])
          "reducer micro-benchmarks",
          (fun () -> project "bench/Skiff.Bench.Reducer" (if quick then [ "--quick" ] else [ "--job"; "short" ]))
          "cluster benchmark", (fun () -> project "bench/Skiff.Bench.Cluster" ([ "--no-build" ] @ extra)) ]
    let failures =
        [ for name, part in parts do
              let code = part ()
              if code <> 0 then
                  eprintfn "%s failed (exit %d)" name code
                  yield code ]
    exit (
        match failures with
        | code :: _ -> code
        | [] -> 0
    )

/// Fault runs (tests/Faults): `faults` alone is the default run (a partition proof and two one-minute runs);
/// `faults --minutes N [--profile partitions|crashes|everything]` one run of N minutes (every fault by default);
/// `faults --catches` shows the harness catching known bugs (stale reads without ReadIndex, duplicated writes without
/// sessions). SKIFF_FAULTS_SEED=<seed> replays a run's faults; a failing run prints the folder holding its history,
/// timeline and member logs.
let faults (extra: string list) =
    build ()
    exit (
        run "dotnet" ([ "run"; "--project"; "tests/Faults"; "-c"; "Release"; "--no-build"; "--"; "--colours"; "0"; "--no-spinner" ] @ extra)
    )

match fsi.CommandLineArgs |> Array.toList |> List.tail with
| "build" :: _ -> build ()
| "check" :: _ -> check ()
| "test" :: rest -> test rest
| "soak" :: rest -> soak rest
| "replay" :: rest -> replay rest
| "pack" :: rest -> pack rest
| "bench" :: rest -> bench rest
| "faults" :: rest -> faults rest
| other ->
    eprintfn
        "usage: dotnet fsi build.fsx build|check|test|soak [--schedules N]|replay <schedule|seed>|pack [dir]|bench [args]|faults [--minutes N|--catches] (got %A)"
        other
    exit 2
