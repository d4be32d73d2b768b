/// The model-checking toolkit: the checker for any sequential model on small hand-made histories, and the
/// samples/ModelChecking counter, which must pass with compare-and-swap and be caught with get-then-put, and
/// whose code the README shows verbatim.
module Skiff.PropertyTests.ModelCheckingTests

open System.IO
open System.Text.RegularExpressions
open Expecto
open FsCheck
open FsCheck.FSharp
open Skiff.Simulation
open Skiff.Simulation.ModelChecker
open ModelChecking

let private call client invoked op outcome = { Client = client; Invoked = invoked; Op = op; Outcome = outcome }
let private returned at value = Outcome.Returned(at, Counter.Value value)

let private checker =
    testList
        "model checker"
        [ testCase "sequential increments that count up are linearizable"
          <| fun () ->
              let history = [ call 0 1L Counter.Increment (returned 2L 1L); call 1 3L Counter.Increment (returned 4L 2L) ]
              Expect.equal (check Counter.model defaultBudget history) Verdict.Linearizable "1 then 2"
          testCase "two increments that both set 1 are not, and the minimal history is those two"
          <| fun () ->
              let read = call 2 0L Counter.Read (returned 1L 0L)
              let a = call 0 2L Counter.Increment (returned 5L 1L)
              let b = call 1 3L Counter.Increment (returned 6L 1L)
              match check Counter.model defaultBudget [ read; a; b ] with
              | Verdict.NotLinearizable minimal -> Expect.equal minimal [ a; b ] "the read is not needed to show it"
              | other -> failtestf "expected NotLinearizable, got %A" other
          testCase "an increment of unknown outcome may have taken effect, or not"
          <| fun () ->
              let unknown = call 0 1L Counter.Increment Outcome.Unknown
              for seen in [ 0L; 1L ] do
                  let history = [ unknown; call 1 2L Counter.Read (returned 3L seen) ]
                  Expect.equal (check Counter.model defaultBudget history) Verdict.Linearizable (sprintf "read %d" seen)
              let history = [ unknown; call 1 2L Counter.Read (returned 3L 2L) ]
              Expect.notEqual (check Counter.model defaultBudget history) Verdict.Linearizable "but it applied once at most"
          testCase "real time: a read after an increment returned cannot miss it"
          <| fun () ->
              let history = [ call 0 1L Counter.Increment (returned 2L 1L); call 1 3L Counter.Read (returned 4L 0L) ]
              Expect.notEqual (check Counter.model defaultBudget history) Verdict.Linearizable "stale read" ]

let private sample =
    testList
        "samples/ModelChecking"
        [ testCase "the counter on compare-and-swap is linearizable on random schedules"
          <| fun () ->
              let seed = Simulation.fsCheckSeed ()
              printfn "samples/ModelChecking: 200 schedules, SKIFF_SEED=%d" seed
              match Program.checkSchedules Counter.increment 200 seed with
              | Some report -> failtestf "SKIFF_SEED=%d\n%s" seed report
              | None -> ()
          testCase "the counter's runs are not vacuous: increments return, some concurrently with others"
          <| fun () ->
              let results = Schedules.sample 12 3UL 20 |> List.map (Counter.check Counter.increment)
              let returnedIncrements =
                  results
                  |> List.sumBy (fun r ->
                      r.History |> List.filter (fun c -> c.Op = Counter.Increment && c.Outcome <> Outcome.Unknown) |> List.length)
              Expect.isGreaterThan returnedIncrements 100 "increments returned"
              Expect.isTrue (results |> List.forall (fun r -> r.Verdict = Verdict.Linearizable)) "and were checked"
          testCase "broken variant is caught: increment by get then put"
          <| fun () ->
              match Program.checkSchedules Counter.incrementWithPut 300 20261206UL with
              | Some report ->
                  Expect.stringContains report "not linearizable against the model" report
                  printfn "get-then-put counter caught:\n%s" report
              | None -> failtest "the get-then-put counter survived 300 schedules"
          testCase "the README's model-checking example is samples/ModelChecking/Counter.fs"
          <| fun () ->
              let root = Path.Combine(__SOURCE_DIRECTORY__, "..", "..")
              let readme = File.ReadAllText(Path.Combine(root, "README.md"))
              let block = Regex.Match(readme, "## Model-check your use of Skiff.*?```fsharp\n(.*?)```", RegexOptions.Singleline)
              Expect.isTrue block.Success "README has an fsharp block under '## Model-check your use of Skiff'"
              let code = File.ReadAllText(Path.Combine(root, "samples", "ModelChecking", "Counter.fs"))
              Expect.equal (block.Groups[1].Value.Trim()) (code.Trim()) "README block = samples/ModelChecking/Counter.fs" ]

let private schedules =
    testList
        "Schedules"
        [ testCase "registered ScheduleArbitraries give a property schedules of up to 12 faults on 3 or 5 nodes"
          <| fun () ->
              let config =
                  Config.QuickThrowOnFailure
                      .WithArbitrary([ typeof<Schedules.ScheduleArbitraries> ])
                      .WithMaxTest(200)
                      .WithQuietOnSuccess(true)
              Check.One(config, fun (s: Schedule) -> s.Steps.Length <= 12 && (s.Nodes = 3 || s.Nodes = 5))
          testCase "shrinking keeps the seed and the cluster size, and never adds faults or time"
          <| fun () ->
              for s in Schedules.sample 12 5UL 50 do
                  for smaller in Schedules.shrink s do
                      Expect.equal (smaller.Seed, smaller.Nodes) (s.Seed, s.Nodes) "same run"
                      Expect.isLessThanOrEqual smaller.Steps.Length s.Steps.Length "no fault added"
                      Expect.isLessThan (Schedule.length smaller + smaller.Steps.Length) (Schedule.length s + s.Steps.Length) "smaller"
          testCase "shrinkWhile finds a schedule with no smaller variant that still fails"
          <| fun () ->
              // Fails while a crash is left: shrinks to one crash step with no delay.
              let hasCrash (s: Schedule) = s.Steps |> List.exists (fun step -> step.Fault.IsCrash)
              let start = Schedules.sample 12 9UL 50 |> List.find (fun s -> hasCrash s && s.Steps.Length > 3)
              let shrunk = Schedules.shrinkWhile hasCrash start
              Expect.equal shrunk.Steps.Length 1 (Schedule.format shrunk)
              Expect.equal shrunk.Steps.Head.After 0 (Schedule.format shrunk) ]

/// Every model-checking test.
let tests: Test = testList "model checking" [ checker; schedules; sample ]
