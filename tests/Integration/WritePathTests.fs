/// Where a request's caller resumes once answered (Pending): a call of this node's gRPC service resumes on the
/// applier that answers it (no thread-pool hop per write), but never on the event loop, the storage writer or the
/// loader, which must not run call code; a request of the embedding application always resumes on the pool.
module Skiff.Integration.WritePathTests

open System
open System.Threading
open System.Threading.Tasks
open Expecto
open Skiff.Net.Runtime

/// Makes a request (inside a gRPC call's flow when `inCall`), answers it with `answer` on a runtime thread named
/// `thread`, and returns the id of that thread, the id of the thread the caller resumed on, and the caller's task.
let private answerOn (thread: string) (inCall: bool) (answer: Pending -> unit) =
    task {
        let! p =
            Task.Run(fun () ->
                if inCall then
                    Pending.AnswerInlineHere()

                Pending(1L))

        let resumed =
            p.Task.ContinueWith((fun (_: Task<_>) -> Environment.CurrentManagedThreadId), TaskContinuationOptions.ExecuteSynchronously)

        let answeredOn = ref 0

        do!
            DedicatedThread.Start(
                thread,
                fun () ->
                    answeredOn.Value <- Environment.CurrentManagedThreadId
                    answer p
            )

        let! ranOn = resumed.WaitAsync(TimeSpan.FromSeconds 10.)
        return answeredOn.Value, ranOn, p.Task
    }

let private succeed (p: Pending) = p.Succeed(null) |> ignore

let private fail (p: Pending) = p.Fail(Skiff.SkiffException(Skiff.ErrorKind.NotLeader, "scripted")) |> ignore

let tests =
    testList
        "write path hand-offs"
        [ testTask "a gRPC call's write answered by the applier resumes on the applier, not the pool" {
              let! answeredOn, ranOn, _ = answerOn "skiff-applier" true succeed
              Expect.equal ranOn answeredOn "the caller resumed on the applier's thread"
          }
          testTask "a gRPC call's request refused on the event loop resumes on the pool, failed" {
              let! answeredOn, ranOn, (t: Task<_>) = answerOn "skiff-loop" true fail
              Expect.notEqual ranOn answeredOn "the event loop must not run the caller's continuation"
              Expect.isTrue t.IsFaulted "the request failed"
          }
          testTask "a gRPC call's request answered on the storage writer resumes on the pool" {
              let! answeredOn, ranOn, _ = answerOn "skiff-writer" true succeed
              Expect.notEqual ranOn answeredOn "the writer must not run the caller's continuation"
          }
          testTask "an application's write answered by the applier resumes on the pool" {
              let! answeredOn, ranOn, _ = answerOn "skiff-applier" false succeed
              Expect.notEqual ranOn answeredOn "the applier must not run the application's code"
          }
          test "a request is answered once: a later success or failure is refused" {
              let p = Pending(1L)
              Expect.isTrue (p.Fail(Skiff.SkiffException(Skiff.ErrorKind.Timeout, "first"))) "the first answer counts"
              Expect.isTrue p.IsAnswered "answered"
              Expect.isFalse (p.Succeed(null)) "a second answer is refused"
              Expect.isFalse (p.Fail(Skiff.SkiffException(Skiff.ErrorKind.Timeout, "third"))) "a third answer is refused"
          } ]
