/// Shared entry point for the Expecto test programs. Expecto's own summary carries colour codes and is not the
/// plain line CI reads, so we count results through a summary handler and print one machine-readable line
/// (`SKIFF-TESTS passed=N failed=M`) that build.fsx sums across projects into the final `N passed, M failed`.
module Skiff.Tests.TestMain

open Expecto
open Expecto.Impl

/// Runs the given tests with Expecto's command-line arguments, prints the counting line, returns the exit code.
let run (argv: string[]) (tests: Test) : int =
    let mutable passed = 0
    let mutable failed = 0
    let record (summary: TestRunSummary) =
        passed <- summary.passed.Length
        failed <- summary.failed.Length + summary.errored.Length
    let defaults =
        [ CLIArguments.No_Spinner; CLIArguments.Colours 0; CLIArguments.Append_Summary_Handler(SummaryHandler record) ]
    let code = runTestsWithCLIArgs defaults argv tests
    printfn "SKIFF-TESTS passed=%d failed=%d" passed failed
    code
