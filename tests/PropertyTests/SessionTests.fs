/// The session layer on its own (Sessions.fs and the log-command codec): what makes a retried write apply once.
module Skiff.PropertyTests.SessionTests

open System.Text
open Expecto
open Skiff.Core

let private b (s: string) = Encoding.ASCII.GetBytes s

/// Applies log commands in order from index `first`, counting how often the data was touched.
let private run (table: Sessions.Table) (first: int64) (commands: LogCommand list) =
    let mutable applied = 0
    let mutable table = table
    let results =
        commands
        |> List.mapi (fun i c ->
            let applied =
                Sessions.apply
                    (fun _ ->
                        applied <- applied + 1
                        CommandResult.Swapped true)
                    table
                    (first + int64 i)
                    c
            table <- applied.Table
            applied.Result)
    results, table, applied

let private stamp session sequence acknowledged time = { Session = session; Sequence = sequence; Acknowledged = acknowledged; Time = time }

let private put = Command.Insert("k", b "v")

/// The window of a session's results against a map, under the operations the session layer makes: numbers added
/// mostly above the ones kept (some below, as requests in flight together reach the log in any order), numbers
/// dropped from below.
let private resultWindowMatchesMap (ops: (byte * int16) list) =
    let mutable window = ResultWindow<int64>.Empty
    let mutable map = Map.empty
    let mutable top, floor = 0L, 0L
    let mutable agree = true
    for kind, x in ops do
        match kind % 3uy with
        | 2uy ->
            floor <- floor + int64 (abs (int x % 8))
            window <- window.DropBelow floor
            map <- map |> Map.filter (fun k _ -> k >= floor)
        | _ ->
            let n = max floor (top + int64 (int x % 24) - 6L)
            if not (map.ContainsKey n) then
                window <- window.Add(n, n * 7L)
                map <- Map.add n (n * 7L) map
                top <- max top n
        let found (k: int64) =
            match window.TryFind k with
            | ValueSome v -> Some v
            | ValueNone -> None
        agree <-
            agree
            && window.Count = map.Count
            && (window.ToArray() |> Array.map (fun (struct (k, v)) -> k, v)) = Map.toArray map
            && [ floor - 1L .. top + 1L ] |> List.forall (fun k -> found k = Map.tryFind k map)
            && (map.IsEmpty || window.MinKey = (Map.minKeyValue map |> fst))
    agree

let tests =
    testList
        "sessions"
        [ testPropertyWithConfig
              { FsCheckConfig.defaultConfig with maxTest = 300; endSize = 400 }
              "a session's result window keeps exactly what a map would"
              resultWindowMatchesMap
          testCase "a request seen again is answered from the table, not applied"
          <| fun () ->
              let results, _, applied =
                  run
                      Sessions.empty
                      1L
                      [ LogCommand.OpenSession(1000L, 60_000L, "")
                        LogCommand.InSession(stamp 1L 1L 1L 1001L, put)
                        LogCommand.InSession(stamp 1L 1L 1L 1002L, put) ]
              Expect.equal applied 1 "applied once"
              Expect.equal results[0] (LogResult.SessionOpened 1L) "the session is named by its index"
              Expect.equal results[1] (LogResult.Applied(CommandResult.Swapped true)) "first attempt applies"
              Expect.equal results[2] (LogResult.Repeated(CommandResult.Swapped true, 2L)) "the retry gets the first answer and its index"

          testCase "requests in flight apply in any order, each once"
          <| fun () ->
              let results, _, applied =
                  run
                      Sessions.empty
                      1L
                      [ LogCommand.OpenSession(0L, 60_000L, "")
                        LogCommand.InSession(stamp 1L 3L 1L 0L, put)
                        LogCommand.InSession(stamp 1L 1L 1L 0L, put)
                        LogCommand.InSession(stamp 1L 3L 1L 0L, put)
                        LogCommand.InSession(stamp 1L 2L 1L 0L, put) ]
              Expect.equal applied 3 "3 distinct requests"
              Expect.equal results[3] (LogResult.Repeated(CommandResult.Swapped true, 2L)) "3 repeated"

          testCase "acknowledged results are forgotten, and their requests never apply again"
          <| fun () ->
              let results, table, applied =
                  run
                      Sessions.empty
                      1L
                      [ LogCommand.OpenSession(0L, 60_000L, "")
                        LogCommand.InSession(stamp 1L 1L 1L 0L, put)
                        LogCommand.InSession(stamp 1L 2L 2L 0L, put)
                        LogCommand.InSession(stamp 1L 1L 1L 0L, put) ]
              Expect.equal applied 2 "the stale retry did not apply"
              Expect.equal results[3] LogResult.ResultDiscarded "a request below the floor"
              Expect.equal table.Sessions[1L].Results.Count 1 "only request 2 is remembered"

          testCase "the results kept per session are capped, raising the floor"
          <| fun () ->
              let n = Sessions.MaxResultsPerSession + 10
              let commands =
                  LogCommand.OpenSession(0L, 60_000L, "") :: [ for i in 1..n -> LogCommand.InSession(stamp 1L (int64 i) 1L 0L, put) ]
              let _, table, applied = run Sessions.empty 1L commands
              let session = table.Sessions[1L]
              Expect.equal applied n "all applied"
              Expect.equal session.Results.Count Sessions.MaxResultsPerSession "capped"
              Expect.equal session.Floor 11L "the oldest 10 forgotten"
              let again, _, appliedAgain = run table 10_000L [ LogCommand.InSession(stamp 1L 5L 1L 0L, put) ]
              Expect.equal (again, appliedAgain) ([ LogResult.ResultDiscarded ], 0) "a forgotten request is not applied again"

          testCase "a session expires by log time, the same on every member"
          <| fun () ->
              let results, table, applied =
                  run
                      Sessions.empty
                      1L
                      [ LogCommand.OpenSession(1_000L, 5_000L, "")
                        LogCommand.OpenSession(7_000L, 5_000L, "") // another client's request moves the log's clock
                        LogCommand.InSession(stamp 1L 1L 1L 3_000L, put) ] // a late stamp does not move it back
              Expect.equal applied 0 "nothing applied in an expired session"
              Expect.equal results[2] LogResult.SessionUnknown "expired"
              Expect.equal table.Clock 7_000L "the clock never goes back"
              Expect.isFalse (table.Sessions.ContainsKey 1L) "the expired session is gone"

          testCase "a request keeps its session alive"
          <| fun () ->
              let results, _, applied =
                  run
                      Sessions.empty
                      1L
                      [ LogCommand.OpenSession(0L, 5_000L, "")
                        LogCommand.InSession(stamp 1L 1L 1L 4_000L, put)
                        LogCommand.InSession(stamp 1L 2L 2L 8_000L, put) ]
              Expect.equal applied 2 "both applied"
              Expect.equal results[2] (LogResult.Applied(CommandResult.Swapped true)) "still open at 8 s"

          testCase "opening past the cap evicts the least recently active session"
          <| fun () ->
              let sessions =
                  Map.ofList
                      [ for i in 1L .. int64 Sessions.MaxSessions ->
                            i,
                            { Sessions.Id = i
                              Sessions.TimeoutMs = 1_000_000L
                              Sessions.LastActive = i
                              Sessions.Floor = 1L
                              Sessions.Results = ResultWindow.Empty
                              Sessions.Owner = "" } ]
              let table = { Sessions.Clock = int64 Sessions.MaxSessions; Sessions.Sessions = sessions }
              let _, table, _ = run table 100_000L [ LogCommand.OpenSession(int64 Sessions.MaxSessions, 1_000_000L, "") ]
              Expect.equal table.Sessions.Count Sessions.MaxSessions "still at the cap"
              Expect.isFalse (table.Sessions.ContainsKey 1L) "the oldest went"
              Expect.isTrue (table.Sessions.ContainsKey 100_000L) "the new one is in"

          testCase "closing a session forgets it"
          <| fun () ->
              let results, table, _ =
                  run
                      Sessions.empty
                      1L
                      [ LogCommand.OpenSession(0L, 60_000L, "")
                        LogCommand.CloseSession(1L, 0L)
                        LogCommand.InSession(stamp 1L 1L 1L 0L, put) ]
              Expect.equal results[2] LogResult.SessionUnknown "closed"
              Expect.isEmpty table.Sessions "empty"

          testCase "sessions and log commands encode and decode"
          <| fun () ->
              let session =
                  { Sessions.Id = 7L
                    Sessions.TimeoutMs = 1000L
                    Sessions.LastActive = 99L
                    Sessions.Floor = 3L
                    Sessions.Results =
                      ResultWindow.OfSeq
                          [ 3L, { Result = CommandResult.Done; Index = 10L }
                            5L, { Result = CommandResult.Swapped false; Index = 12L }
                            6L, { Result = CommandResult.Swapped true; Index = 13L } ]
                    Sessions.Owner = "" }
              Expect.equal (Sessions.decode (System.ReadOnlySpan(Sessions.encode session))) (Ok session) "session round trip"
              let owned = { session with Owner = "alice é" }
              Expect.equal (Sessions.decode (System.ReadOnlySpan(Sessions.encode owned))) (Ok owned) "an owned session round trip"
              // A record written before sessions had owners is the owner-less encoding: it still decodes, ownerless.
              Expect.equal (Sessions.encode session).Length (36 + 17 * 3) "no owner adds no bytes"
              Expect.isError (Sessions.decode (System.ReadOnlySpan(Array.zeroCreate<byte>(36 + 2000)))) "an oversized owner"
              for c in
                  [ LogCommand.Plain put
                    LogCommand.InSession(stamp 4L 5L 6L 7L, Command.CompareAndSwap("a/b", None, Some(b "x")))
                    LogCommand.OpenSession(123L, 456L, "")
                    LogCommand.OpenSession(123L, 456L, "alice")
                    LogCommand.CloseSession(9L, 10L) ] do
                  Expect.equal (LogCommandCodec.decodeArray (LogCommandCodec.encode c)) (Ok c) (sprintf "%A" c)
              // An open-session entry written before sessions had owners (18 bytes) opens an ownerless session.
              Expect.equal (LogCommandCodec.encode (LogCommand.OpenSession(1L, 2L, ""))).Length 18 "the owner-less entry is the old layout"
              Expect.isError (LogCommandCodec.decodeArray (Array.append [| 2uy; 2uy |] (Array.zeroCreate 2000))) "an oversized owner"
              // Entries written before sessions existed are version-1 commands: they still decode.
              Expect.equal (LogCommandCodec.decodeArray (CommandCodec.encode put)) (Ok(LogCommand.Plain put)) "old entries"
              Expect.isError (LogCommandCodec.decodeArray [| 2uy; 1uy; 0uy |]) "truncated stamp" ]
