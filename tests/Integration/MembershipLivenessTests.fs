/// Joining under the conditions the 30-minute fault run found (issue 15): a joiner must be able to answer the leader
/// whatever configuration its installed snapshot carries.
module Skiff.Integration.MembershipLivenessTests

open System
open System.Threading
open Expecto
open Skiff.Core
open Skiff.Net.Runtime
open Skiff.Integration.RuntimeTests

/// Snapshots every 20 entries and keeps no log tail behind them, so a joiner is always sent a snapshot.
let private snapshotting (o: SkiffServerOptions) =
    o.Raft <- { Reducer.DefaultOptions with SnapshotThreshold = 20L; CompactionTail = 0L }
    o

let private startWith (c: Cluster) (n: int) (join: int list) (joinTimeout: float) =
    let o = options c.Port n (c.Dir n) join |> snapshotting
    o.JoinTimeout <- TimeSpan.FromSeconds joinTimeout
    let s = new SkiffServer(o)
    c.Nodes[n] <- s
    s.StartAsync().Wait()
    s

let tests =
    testList "membership liveness" [
        // Seen in the 30-minute run (seed 899178): a wiped member rejoined while the leader was a member added after
        // the leader's latest snapshot. The joiner installed that snapshot, whose configuration does not name the
        // leader; the transport then dropped its link to the leader (learned only from the first message of the
        // leader's stream), so every answer was lost: the joiner stayed a learner and `skiff serve` exited 7.
        testCase "a joiner whose installed snapshot does not name the leader still answers it and becomes a voter" <| fun () ->
            use c = new Cluster(nextPort ())
            let a = startWith c 1 [] 15.0
            c.WaitLeader 10.0 |> ignore
            // 25 writes: node 1 snapshots (configuration: node 1 alone).
            for i in 1..25 do a.PutAsync(sprintf "k%d" i, bytes "v").Wait()
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
            (try startWith c 3 [ 2 ] 10.0 |> ignore
             with e -> failtestf "node 3 did not become a voter (%.1f s): %s" started.Elapsed.TotalSeconds (e.GetBaseException().Message))
            eprintfn "node 3 joined in %.1f s; its snapshot %d" started.Elapsed.TotalSeconds (c.Node(3).LatestSnapshotIndex)
            c.WaitMembers(3, 20.0)
            b.PutAsync("after", bytes "3").Wait()
            waitUntil 10.0 "node 3 applied the write after its join" (fun () ->
                text (c.Node(3).GetAsync("after", ReadConsistency.Stale).Result) = "3")
    ]
