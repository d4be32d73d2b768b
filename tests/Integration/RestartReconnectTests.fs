/// A member that comes back after a while must hear from its leader as soon as it listens. Until then it answers
/// stale reads from its own state and campaigns; the bench's recovery time was mostly this wait.
module Skiff.Integration.RestartReconnectTests

open System
open System.Diagnostics
open Expecto
open Skiff
open Skiff.Integration.RuntimeTests

/// How long a member is down in each round: long enough for the leader's link to it to back off as far as it
/// will (with the old 1 s cap it took about 2 s of failed heartbeats to get there).
let private downFor = TimeSpan.FromSeconds 2.5

/// From listening to knowing its leader: the leader's link retries at most 100 ms apart and heartbeats every 50 ms,
/// so about 150 ms plus a busy machine's delays. The old cap (1 s) missed this in most rounds.
let private within = TimeSpan.FromMilliseconds 450.0

let tests =
    testList
        "restart reconnect"
        [ test "a restarted member hears its leader within a few heartbeats of listening, however long it was down" {
              use c = cluster 3
              let leader = c.WaitLeader 5.0
              put leader "r/0" "0"
              let n = c.Nodes |> Seq.find (fun kv -> kv.Value.Id <> leader.Id) |> fun kv -> kv.Key
              let waits =
                  [ for round in 1..3 do
                        c.Stop n
                        // A scenario, not a synchronisation: the member stays down while the leader's heartbeats
                        // to it fail and its link backs off.
                        Threading.Thread.Sleep downFor
                        let back = c.Start(n, [])
                        let sw = Stopwatch.StartNew()
                        waitUntil 5.0 "the restarted member to hear its leader" (fun () -> back.LeaderId = Nullable leader.Id)
                        let took = sw.Elapsed
                        eprintfn "restart reconnect: round %d knew its leader %.0f ms after listening" round took.TotalMilliseconds
                        yield took ]
              for took in waits do
                  Expect.isLessThan took within "the leader reconnected within a few heartbeats"
              Expect.equal leader.Role Skiff.Core.Role.Leader "the leader kept its term"
          }

          test "a client reaches a restarted member promptly, however long it kept failing meanwhile" {
              use c = cluster 3
              let leader = c.WaitLeader 5.0
              put leader "r/1" "1"
              let n = c.Nodes |> Seq.find (fun kv -> kv.Value.Id <> leader.Id) |> fun kv -> kv.Key
              // One endpoint only: the client cannot move on to another member.
              let client =
                  (new Client([ Net.IPAddress.Parse(sprintf "127.0.0.%d" n) ])).WithPort(c.Port).WithTimeout(TimeSpan.FromSeconds 1.0)
              use _closing =
                  { new IDisposable with
                      member _.Dispose() = client.DisposeAsync().AsTask().Wait() }
              let staleRead () =
                  try
                      client.GetBytesAsync("r/1", ReadConsistency.Stale).Result <> null
                  with _ ->
                      false
              waitUntil 5.0 "the client to read through the member" staleRead
              let waits =
                  [ for round in 1..3 do
                        c.Stop n
                        // The application keeps calling while the member is down, as applications do; gRPC's
                        // reconnect backoff grows with every failed connect (from 1 s to 120 s by default).
                        let down = Stopwatch.StartNew()
                        while down.Elapsed < downFor do
                            Expect.isFalse (staleRead ()) "the member is down"
                            Threading.Thread.Sleep 20
                        c.Start(n, []) |> ignore
                        let sw = Stopwatch.StartNew()
                        waitUntil 10.0 "the client to read through the restarted member" staleRead
                        eprintfn
                            "restart reconnect: round %d, the client read through the restarted member %.0f ms after it listened"
                            round
                            sw.Elapsed.TotalMilliseconds
                        yield sw.Elapsed ]
              for took in waits do
                  Expect.isLessThan took within "the client reconnected within its backoff cap (250 ms)"
          } ]
