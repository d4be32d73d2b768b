/// The commit index recorded with the log (the write-ahead log's commit marks): a restarted member applies the
/// entries it knew committed at once, so it does not answer stale reads from an older state than it did before
/// the restart, and needs no leader for it (etcd keeps Commit in its hard state for the same reason).
module Skiff.Integration.CommitHintTests

open System.IO
open Expecto
open Skiff.Net.Storage
open Skiff.Integration.StorageSupport
open Skiff.Integration.RuntimeTests

let private reopenHint (dir: string) =
    use log = RaftLog.Open dir
    log.RecoveredCommitHint

let private appendWith (log: RaftLog) (es: System.Collections.Generic.IReadOnlyList<LogEntry>) (commit: int64) =
    log.AppendAsync(es, commit, System.Threading.CancellationToken.None).GetAwaiter().GetResult()

let tests =
    testList
        "commit hint"
        [ testCase "commit marks are recovered, clamped to the log, forgotten at a reset and lowered below a replaced entry"
          <| fun () ->
              use tmp = new TempDir "commit-marks"
              Expect.equal (reopenHint tmp.Path) 0L "a new log records none"
              using (RaftLog.Open tmp.Path) (fun log -> appendWith log (entries 1L 5L 1L) 3L)
              Expect.equal (reopenHint tmp.Path) 3L "the mark written with the entries"
              using (RaftLog.Open tmp.Path) (fun log ->
                  log.NoteCommit 5L
                  // A mark alone is written without a sync; an append after it makes it durable.
                  appendWith log (entries 6L 7L 1L) 0L)
              Expect.equal (reopenHint tmp.Path) 5L "a mark written on its own"
              using (RaftLog.Open tmp.Path) (fun log -> appendWith log (entries 8L 9L 1L) 100L)
              Expect.equal (reopenHint tmp.Path) 9L "clamped to the last entry"
              // A suffix replacement at or below a mark cannot happen in Raft (committed entries stay); if it
              // did, the entries after the mark would not be the ones it vouched for.
              using (RaftLog.Open tmp.Path) (fun log -> appendWith log (entries 7L 7L 2L) 0L)
              Expect.equal (reopenHint tmp.Path) 6L "lowered below the replaced entry"
              using (RaftLog.Open tmp.Path) (fun log -> log.ResetToSnapshot(20L, 3L, false).GetAwaiter().GetResult())
              Expect.equal (reopenHint tmp.Path) 0L "marks before a reset are forgotten"
              using (RaftLog.Open tmp.Path) (fun log -> appendWith log (entries 21L 22L 3L) 21L)
              Expect.equal (reopenHint tmp.Path) 21L "and new ones recorded after it"

          test "a member that stops records the last commit index it learned, however recently it recorded one" {
              use c = cluster 1
              let node = c.WaitLeader 5.0
              // Back-to-back writes: a commit index learned without an append (here, each write's own commit) is
              // recorded on its own at most every 100 ms, so when the last write returns its mark is usually due.
              for i in 1..40 do
                  put node (sprintf "s/%02d" i) (string i)
              let committed = node.CommitIndex
              c.Stop 1
              Expect.isGreaterThanOrEqual (reopenHint (Path.Combine(c.Dir 1, "log"))) committed "the commit index at the stop is recorded"
          }

          test "a restarted member applies what it knew committed at once, with no leader to hear from" {
              use c = cluster 3
              let leader = c.WaitLeader 5.0
              for i in 1..30 do
                  put leader (sprintf "h/%02d" i) (string i)
              let n, follower = c.Nodes |> Seq.find (fun kv -> kv.Value.Id <> leader.Id) |> fun kv -> kv.Key, kv.Value
              waitUntil 10.0 "the follower applied every write" (fun () -> staleGet follower "h/30" = "30")
              // The last commit index reached the follower after the last append (a heartbeat or the leader's
              // commit notice): it is recorded on its own within about 100 ms.
              let applied = follower.AppliedIndex
              waitUntil 5.0 "the follower recorded its commit index" (fun () -> follower.MarkedCommitIndex >= applied)
              for k in List.ofSeq c.Nodes.Keys do
                  c.Stop k
              // Alone, the member can hear from no leader (two of three are down).
              let back = c.Start(n, [])
              waitUntil 5.0 "the restarted member serves every write it had applied" (fun () -> staleGet back "h/30" = "30")
              Expect.isFalse back.LeaderId.HasValue "no leader told it anything"
              for i in 1..30 do
                  Expect.equal (staleGet back (sprintf "h/%02d" i)) (string i) "every write"
          } ]
