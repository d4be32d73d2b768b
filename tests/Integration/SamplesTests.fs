/// The samples run and end by themselves, and the README's quick start is the QuickStart sample, verbatim.
module Skiff.Integration.SamplesTests

open System
open System.Diagnostics
open System.IO
open System.Text.RegularExpressions
open Expecto

/// The repository root: the nearest folder above the test program holding the solution.
let repoRoot =
    let rec up (dir: DirectoryInfo | null) =
        match dir with
        | null -> failwith "Skiff.Functional.sln not found above the test program"
        | d when File.Exists(Path.Combine(d.FullName, "Skiff.Functional.sln")) -> d.FullName
        | d -> up d.Parent
    up (DirectoryInfo AppContext.BaseDirectory)

/// Release or Debug: whichever this test program was built as, so the samples built beside it are run.
let configuration =
    if AppContext.BaseDirectory.Contains("/Release/") then "Release" else "Debug"

/// Runs a built project with arguments; returns exit code and everything it printed. Killed after `seconds`.
let runProject (project: string) (args: string list) (seconds: float) =
    let psi =
        ProcessStartInfo("dotnet", WorkingDirectory = repoRoot, RedirectStandardOutput = true, RedirectStandardError = true)
    for a in [ "run"; "--project"; project; "-c"; configuration; "--no-build"; "--" ] @ args do
        psi.ArgumentList.Add a
    use p = new Process(StartInfo = psi)
    p.Start() |> ignore
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEndAsync()
    if not (p.WaitForExit(TimeSpan.FromSeconds seconds)) then
        p.Kill true
        failtestf "%s did not end within %.0f s" project seconds
    p.ExitCode, out.Result + err.Result

let private sample (project: string) (expected: string list) =
    test (sprintf "%s runs and ends by itself" project) {
        let code, output = runProject project [ string (RuntimeTests.nextPort ()) ] 90.0
        Expect.equal code 0 (sprintf "exit code; output:\n%s" output)
        for line in expected do
            Expect.stringContains output line "expected output"
    }

let tests =
    testSequenced
    <| testList "Samples" [
        sample "samples/QuickStart" [ "hello world" ]
        sample "samples/MultiNode" [ "members: 3"; "node 3 saw config/mode = replicated" ]
        sample "samples/FSharpQuickStart" [ "hello world"; "watched: greeting" ]

        test "the README's C# quick start is the QuickStart sample, as it compiles" {
            let readme = File.ReadAllText(Path.Combine(repoRoot, "README.md"))
            let block = Regex.Match(readme, "## Quick start.*?```csharp\n(.*?)```", RegexOptions.Singleline)
            Expect.isTrue block.Success "README has a csharp block under '## Quick start'"
            let sampleCode = File.ReadAllText(Path.Combine(repoRoot, "samples", "QuickStart", "Program.cs"))
            Expect.equal (block.Groups[1].Value.Trim()) (sampleCode.Trim()) "README block = samples/QuickStart/Program.cs"
        }
    ]
