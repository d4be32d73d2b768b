module Skiff.Integration.Main

open Expecto

/// Every test list of this program. Each area keeps its lines between its own markers so parallel work merges.
let private all: Test list =
    [
      // storage:begin
      StorageTests.tests
      KeyIndexFileTests.tests
      CrashTests.tests
      WalCrashTests.tests
      NodePowerLossTests.tests
      DiskBoundTests.tests
      SnapshotWarmUpTests.tests
      IoThreadTests.tests
      KvMemoryTests.tests
      ChangeRingTests.tests
      MigrationPowerLossTests.tests
      PortConformanceTests.tests
      SideFileTests.tests
      // storage:end

      // runtime:begin
      Skiff.Integration.RuntimeTests.tests
      InterpreterContractTests.tests
      CommitHintTests.tests
      RestartReconnectTests.tests
      // runtime:end

      // facade:begin
      FacadeTests.tests
      FSharpApiTests.tests
      SamplesTests.tests
      // facade:end

      // cli:begin
      CliTests.tests
      // cli:end

      // sessions:begin
      ExactlyOnceTests.tests
      RouterOutcomeTests.tests
      WritePathTests.tests
      // sessions:end

      // hardening:begin
      HardeningTests.tests
      ClusterIdentityTests.tests
      TlsTests.tests
      AuthTests.tests
      SnapshotStreamTests.tests
      // hardening:end

      // bounds:begin
      BoundsTests.tests
      // bounds:end

      // membership-liveness:begin
      MembershipLivenessTests.tests
      // membership-liveness:end

      // names:begin
      NamesTests.tests
      NamesCliTests.tests
      // names:end
      ]

[<EntryPoint>]
let main argv =
    match argv with
    // The crash tests start this same program as their child process.
    | [| "--crash-writer"; dir; run; seed |] -> CrashWriter.run dir (int64 run) (int seed)
    // The signal test starts it as an application that embeds a node.
    | [| "--embedded-node"; dir; port; mode |] -> HardeningTests.runEmbeddedChild dir (int port) mode
    // The snapshot warm-up test measures a first snapshot in a fresh process.
    | [| "--snapshot-jit-probe"; dir; mode |] -> SnapshotWarmUpTests.runProbe dir mode
    // The I/O threads test reads a store with the thread pool as an application has it.
    | [| "--pool-starvation-probe"; dir |] -> IoThreadTests.runProbe dir
    | _ ->
        // A node no longer raises the pool's minimum itself (SkiffServerOptions.MinThreadPoolThreads is opt-in): the
        // tests, many nodes in one process on 2 cores, ask for it as an application would, as before.
        let _, io = System.Threading.ThreadPool.GetMinThreads()
        System.Threading.ThreadPool.SetMinThreads(64, io) |> ignore
        Skiff.Tests.TestMain.run argv (testList "Integration" all)
