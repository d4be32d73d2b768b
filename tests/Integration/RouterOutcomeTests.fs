/// What the LeaderRouter says about a write whose attempts ended differently: once one attempt may have reached a
/// leader, no later error may say `not-applied` (that attempt's entry may still commit). Found by the overload test
/// in BoundsTests: a write whose first attempt went to a leader that then changed was resent, refused as Overloaded
/// by the next leader (its uncommitted cap full of the old leader's entries, the first attempt among them), answered
/// `not-applied`, and applied when those entries committed.
/// The router is driven with scripted attempts (no network, no timing): each case fixes the interleaving.
module Skiff.Integration.RouterOutcomeTests

open System
open System.Threading
open System.Threading.Tasks
open Expecto
open Skiff
open Skiff.Core
open Skiff.Net.Runtime

let private self = Guid.NewGuid()
let private leader = Guid.NewGuid()

/// A router on a member that is not the leader and knows `leader` (at an address never dialled: the forwarded calls
/// below are scripted, so they never use the connection the router makes for them).
let private router (timeout: TimeSpan) =
    new LeaderRouter(
        self,
        (fun () -> Nullable leader),
        (fun () -> Role.Follower),
        (fun _ -> "127.0.0.250:1"),
        (fun () -> Nullable()),
        Tls.ChannelSecurity.Plaintext,
        timeout,
        CancellationToken.None
    )

/// An attempt's scripted answer: a value, or an error.
type private Answer =
    | Value of int
    | Error of SkiffException

let private unknown kind = Error(SkiffException(kind, "scripted: this attempt may have taken effect", null, WriteOutcome.Unknown))
let private notApplied kind = Error(SkiffException(kind, "scripted: this attempt did not take effect", null, WriteOutcome.NotApplied))

/// Plays `answers` in order, one per call (the last one again once they run out), counting the calls.
type private Script(answers: Answer list) =
    let mutable calls = 0
    member _.Calls = calls
    member _.Next() : Task<int> =
        let answer = answers[min calls (answers.Length - 1)]
        calls <- calls + 1
        match answer with
        | Value v -> Task.FromResult v
        | Error e -> Task.FromException<int> e

/// Routes an idempotent write (a session write) whose local attempts play `local` (a NotLeaderException once the
/// script runs out: this member does not lead) and whose forwarded attempts play `remote`.
let private route (timeout: float) (local: Answer list) (remote: Answer list) =
    use r = router (TimeSpan.FromSeconds timeout)
    let localScript = Script(local)
    let remoteScript = Script(remote)
    let localAttempt =
        Func<CancellationToken, Task<int>>(fun _ ->
            if localScript.Calls < local.Length then
                localScript.Next()
            else
                Task.FromException<int>(NotLeaderException(Nullable leader)))
    let remoteAttempt = Func<SkiffGrpcClient, CancellationToken, Task<int>>(fun _ _ -> remoteScript.Next())
    let outcome =
        try
            Ok(r.RouteAsync(localAttempt, remoteAttempt, CallOrigin.Local, CancellationToken.None).Result)
        with :? AggregateException as a ->
            match a.InnerException with
            | :? SkiffException as e -> Result.Error e
            | _ -> reraise ()
    outcome, remoteScript.Calls

let private expectError what (outcome: Result<int, SkiffException>) =
    match outcome with
    | Ok v -> failtestf "%s: succeeded with %d, expected an error" what v
    | Result.Error e -> e

let tests =
    testList
        "router outcomes"
        [ test "a fresh write refused as Overloaded is answered not-applied at once (nothing was sent before)" {
              let outcome, calls = route 5.0 [] [ notApplied ErrorKind.Overloaded ]
              let e = expectError "a refused fresh write" outcome
              Expect.equal e.Kind ErrorKind.Overloaded "the refusal is passed on"
              Expect.equal e.Outcome WriteOutcome.NotApplied "no attempt reached a leader's log"
              Expect.equal calls 1 "not sent again"
          }
          test "a forwarded attempt that may have applied, then an Overloaded resend: sent again until its outcome is known" {
              let outcome, calls =
                  route
                      5.0
                      []
                      [ unknown ErrorKind.RpcCallFailed // the leader changed while it handled the first attempt
                        notApplied ErrorKind.Overloaded // the next leader's cap is full (of the first attempt's peers)
                        notApplied ErrorKind.Overloaded
                        Value 7 ] // the resend is applied once, or answered with the first attempt's result
              match outcome with
              | Ok v -> Expect.equal v 7 "the write's result, once known"
              | Result.Error e -> failtestf "ended with %s (outcome %O) after %d forwarded attempts" e.Message e.Outcome calls
              Expect.equal calls 4 "resent after each refusal"
          }
          test "a resend refused as Overloaded until the deadline ends unknown, not not-applied" {
              let outcome, _ = route 0.5 [] [ unknown ErrorKind.ClientConnectFailed; notApplied ErrorKind.Overloaded ]
              let e = expectError "a resend refused to the end" outcome
              Expect.equal e.Outcome WriteOutcome.Unknown (sprintf "the first attempt may still commit: %s" e.Message)
          }
          test "a local proposal cut off by lost leadership, then forwarded and refused: unknown" {
              // As in the overload test: sent to the leader, proposed there, leadership moved, resent to the new leader.
              let lost = SkiffException(ErrorKind.NotLeader, "scripted: leadership was lost", null, WriteOutcome.Unknown)
              let outcome, _ = route 0.5 [ Error lost ] [ notApplied ErrorKind.Overloaded ]
              let e = expectError "a resend refused to the end" outcome
              Expect.equal e.Outcome WriteOutcome.Unknown (sprintf "the local proposal may still commit: %s" e.Message)
          }
          test "after a forwarded attempt that may have applied, a final refusal of the resend says unknown" {
              // SessionExpired not-applied would make the caller write again in a new session: a second application.
              let outcome, _ = route 5.0 [] [ unknown ErrorKind.Timeout; notApplied ErrorKind.SessionExpired ]
              let e = expectError "a resend refused for good" outcome
              Expect.equal e.Kind ErrorKind.SessionExpired "the refusal is passed on"
              Expect.equal e.Outcome WriteOutcome.Unknown (sprintf "the first attempt may have taken effect: %s" e.Message)
          } ]
