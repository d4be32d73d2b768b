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
let configuration = if AppContext.BaseDirectory.Contains("/Release/") then "Release" else "Debug"

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
    <| testList
        "Samples"
        [ sample "samples/QuickStart" [ "hello world" ]
          sample "samples/MultiNode" [ "members: 3"; "node 3 saw config/mode = replicated" ]
          sample "samples/FSharpQuickStart" [ "hello world"; "watched: greeting" ]
          // A simulation, not a network sample: its arguments are a schedule count and a seed, not a port.
          test "samples/ModelChecking runs and ends by itself" {
              let code, output = runProject "samples/ModelChecking" [ "50"; "1" ] 90.0
              Expect.equal code 0 (sprintf "exit code; output:\n%s" output)
              Expect.stringContains output "model-checking the counter on 50 schedules, seed 1" "it says what it checks"
              Expect.stringContains output "passed" "expected output"
          }

          test "the README's C# quick start is the QuickStart sample, as it compiles" {
              let readme = File.ReadAllText(Path.Combine(repoRoot, "README.md"))
              let block = Regex.Match(readme, "## Quick start.*?```csharp\n(.*?)```", RegexOptions.Singleline)
              Expect.isTrue block.Success "README has a csharp block under '## Quick start'"
              let sampleCode = File.ReadAllText(Path.Combine(repoRoot, "samples", "QuickStart", "Program.cs"))
              Expect.equal (block.Groups[1].Value.Trim()) (sampleCode.Trim()) "README block = samples/QuickStart/Program.cs"
          }

          test "dotnet pack makes every library package with README, license and symbols" {
              let output = Path.Combine(Path.GetTempPath(), "skiff-pack-" + Guid.NewGuid().ToString("N"))
              try
                  let psi =
                      ProcessStartInfo("dotnet", WorkingDirectory = repoRoot, RedirectStandardOutput = true, RedirectStandardError = true)
                  for a in [ "pack"; "Skiff.Functional.sln"; "-c"; configuration; "--no-build"; "-o"; output ] do
                      psi.ArgumentList.Add a
                  use p = new Process(StartInfo = psi)
                  p.Start() |> ignore
                  let log = p.StandardOutput.ReadToEndAsync()
                  let err = p.StandardError.ReadToEndAsync()
                  Expect.isTrue (p.WaitForExit(TimeSpan.FromMinutes 3.0)) "pack ends"
                  Expect.equal p.ExitCode 0 (sprintf "dotnet pack:\n%s%s" log.Result err.Result)
                  for id in [ "Skiff.Core"; "Skiff.Simulation"; "Skiff.Net"; "Skiff"; "Skiff.FSharp"; "Skiff.Cli" ] do
                      let nupkg = Path.Combine(output, id + ".0.1.0.nupkg")
                      Expect.isTrue (File.Exists nupkg) (sprintf "%s was packed" id)
                      Expect.isTrue (File.Exists(Path.Combine(output, id + ".0.1.0.snupkg"))) (sprintf "%s has symbols" id)
                      use zip = IO.Compression.ZipFile.OpenRead nupkg
                      let names = zip.Entries |> Seq.map (fun e -> e.FullName) |> Set.ofSeq
                      Expect.contains names "README.md" (sprintf "%s carries the README" id)
                      Expect.contains names "LICENSE" (sprintf "%s carries the license" id)
                  let packed = Directory.GetFiles(output, "*.nupkg") |> Array.map Path.GetFileName |> Array.sort
                  Expect.equal packed.Length 6 (sprintf "only the libraries and the tool are packages: %A" packed)
              finally
                  try
                      Directory.Delete(output, true)
                  with _ ->
                      ()
          } ]
