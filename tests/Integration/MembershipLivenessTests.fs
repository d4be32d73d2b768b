/// Joining under the conditions the 30-minute fault run found (issue 15): a joiner must be able to answer the leader
/// whatever configuration its installed snapshot carries.
module Skiff.Integration.MembershipLivenessTests

open System
open System.Threading
open Expecto
open Skiff
open Skiff.Core
open Skiff.Net.Runtime
open Skiff.Integration.RuntimeTests

/// Snapshots every 20 entries and keeps no log tail behind them, so a joiner is always sent a snapshot.
let private snapshotting (o: SkiffServerOptions) =
    o.Raft <- { RaftCell.DefaultOptions with SnapshotThreshold = 20L; CompactionTail = 0L }
    o

let private startWith (c: Cluster) (n: int) (join: int list) (joinTimeout: float) =
    let o = options c.Port n (c.Dir n) join |> snapshotting
    o.JoinTimeout <- TimeSpan.FromSeconds joinTimeout
    let s = new SkiffServer(o)
    c.Nodes[n] <- s
    s.StartAsync().Wait()
    s

let tests =
    testList
        "membership liveness"
        [
          // Seen in the 30-minute run (seed 899178): a wiped member rejoined while the leader was a member added after
          // the leader's latest snapshot. The joiner installed that snapshot, whose configuration does not name the
          // leader; the transport then dropped its link to the leader (learned only from the first message of the
          // leader's stream), so every answer was lost: the joiner stayed a learner and `skiff serve` exited 7.
          testCase "a joiner whose installed snapshot does not name the leader still answers it and becomes a voter"
          <| fun () ->
              use c = new Cluster(nextPort ())
              let a = startWith c 1 [] 15.0
              c.WaitLeader 10.0 |> ignore
              // 25 writes: node 1 snapshots (configuration: node 1 alone).
              for i in 1..25 do
                  a.InsertAsync(sprintf "k%d" i, bytes "v").Wait()
              waitUntil 10.0 "node 1 took a snapshot" (fun () -> a.LatestSnapshotIndex > 0L)
              // Node 2 joins: it is sent node 1's snapshot and keeps it as its latest (fewer than 20 entries follow).
              let b = startWith c 2 [ 1 ] 15.0
              c.WaitMembers(2, 20.0)
              let target = b.Id
              a.TransferLeadershipAsync(Nullable target).Wait()
              waitUntil 10.0 "node 2 leads" (fun () -> b.Role = Role.Leader)
              // Node 3 joins through the new leader, which sends it the snapshot naming node 1 only.
              eprintfn "snapshots: node 1 at %d, node 2 at %d; commit %d" a.LatestSnapshotIndex b.LatestSnapshotIndex b.CommitIndex
              let started = Diagnostics.Stopwatch.StartNew()
              (try
                  startWith c 3 [ 2 ] 10.0 |> ignore
               with e ->
                   failtestf "node 3 did not become a voter (%.1f s): %s" started.Elapsed.TotalSeconds (e.GetBaseException().Message))
              eprintfn "node 3 joined in %.1f s; its snapshot %d" started.Elapsed.TotalSeconds (c.Node(3).LatestSnapshotIndex)
              c.WaitMembers(3, 20.0)
              b.InsertAsync("after", bytes "3").Wait()
              waitUntil 10.0 "node 3 applied the write after its join" (fun () ->
                  text (c.Node(3).GetAsync("after", ReadConsistency.Stale).Result) = "3")

          // Seen in the same run: `skiff serve --join` exited 7 (ClusterJoinFailed) 8 times when a join took longer than
          // 15 s, leaving learners in the configuration that nobody ran. A member keeps trying, says so, and joins once
          // the cluster can take it.
          testCase "skiff serve --join keeps trying past the join deadline and joins once the cluster is there"
          <| fun () ->
              let port = nextPort ()
              let root = IO.Path.Combine(IO.Path.GetTempPath(), "skiff-join-" + Guid.NewGuid().ToString("N"))
              try
                  // Nothing runs at 127.0.0.1 yet.
                  use joiner = new CliTests.ServeProcess(CliTests.serveArgs 2 port (IO.Path.Combine(root, "n2")) (Some "127.0.0.1"))
                  let tries () = joiner.Output.Split('\n') |> Array.filter (fun l -> l.Contains "still trying to join") |> Array.length
                  // Four progress lines are 20 s or more: past the old 15 s deadline.
                  CliTests.waitUntil 60.0 "four 'still trying' lines from the joiner" (fun () ->
                      if joiner.Process.HasExited then
                          failtestf "serve --join exited with %d:\n%s" joiner.Process.ExitCode joiner.Output
                      tries () >= 4)
                  use founder = new CliTests.ServeProcess(CliTests.serveArgs 1 port (IO.Path.Combine(root, "n1")) None)
                  CliTests.waitUntil 60.0 "the joiner serves as a voter" (fun () ->
                      if joiner.Process.HasExited then
                          failtestf "serve --join exited with %d:\n%s" joiner.Process.ExitCode joiner.Output
                      joiner.Output.Contains "serving at")
                  CliTests.waitUntil 20.0 "two voters on the founder" (fun () -> founder.Output.Contains "members (2)")
                  joiner.Terminate()
                  Expect.isTrue (joiner.Process.WaitForExit(TimeSpan.FromSeconds 15.0)) "the joiner ends on SIGTERM"
                  joiner.Process.WaitForExit()
                  Expect.equal joiner.Process.ExitCode 0 "exit code after SIGTERM"
              finally
                  try
                      IO.Directory.Delete(root, true)
                  with _ ->
                      ()

          // Issue 13 point 5: a member restarted with an empty data directory at its address joins with a new id. It
          // replaces its old self (which would otherwise stay a voter that never answers), in one change.
          testCase "a member restarted with a wiped data directory replaces its old id at its address"
          <| fun () ->
              use c = cluster 3
              let oldId = c.Node(3).Id
              c.Stop 3
              IO.Directory.Delete(c.Dir 3, true)
              IO.Directory.CreateDirectory(c.Dir 3) |> ignore
              let fresh = c.Start(3, [ 1; 2 ])
              Expect.notEqual fresh.Id oldId "a new id"
              c.WaitMembers(3, 20.0)
              let leader = c.WaitLeader 10.0
              let members = leader.Members
              Expect.equal members.Count 3 "three members"
              Expect.isFalse (members.ContainsKey oldId) "the old id is gone"
              Expect.equal
                  (members.Values |> Seq.map (fun struct (a, _) -> a) |> Seq.distinct |> Seq.length)
                  3
                  "never two members at one address"
              leader.InsertAsync("after", bytes "wipe").Wait()
              waitUntil 10.0 "the new member applied the write" (fun () ->
                  text (fresh.GetAsync("after", ReadConsistency.Stale).Result) = "wipe") ]
