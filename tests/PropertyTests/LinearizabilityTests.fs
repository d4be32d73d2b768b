/// Tests for the linearizability checker: hand-made histories whose verdict is known, large generated histories that
/// are linearizable by construction (and stop being so after one impossible read), and FsCheck properties.
module Skiff.PropertyTests.LinearizabilityTests

open System
open System.Diagnostics
open Expecto
open Skiff.Core
open Skiff.Simulation
open Skiff.Simulation.Linearizability

// ---------------------------------------------------------------------------------------------------------------
// Building histories by hand: `get client invoked completed key observed` and friends; values are strings.

let private bytes (s: string) = Text.Encoding.UTF8.GetBytes s

let private op client invoked completed action output =
    { Client = client; Invoked = invoked; Action = action; Completion = Completion.Returned(completed, output) }

let private get c i r key (observed: string option) = op c i r (Action.Get key) (Output.Value(Option.map bytes observed))

let private put c i r key value = op c i r (Action.Write(Command.Insert(key, bytes value))) (Output.Result CommandResult.Done)

let private delete c i r key = op c i r (Action.Write(Command.Remove key)) (Output.Result CommandResult.Done)

let private cas c i r key (expected: string option) (next: string option) swapped =
    op
        c
        i
        r
        (Action.Write(Command.CompareAndSwap(key, Option.map bytes expected, Option.map bytes next)))
        (Output.Result(CommandResult.Swapped swapped))

let private timedOut (o: Operation) = { o with Completion = Completion.TimedOut }

let private linearizable name (history: Operation list) =
    test name {
        let result = check history
        Expect.equal result Linearizable (describe result)
    }

let private notLinearizable name (key: string) (history: Operation list) =
    test name {
        match check history with
        | NotLinearizable(k, _) -> Expect.equal k key "the offending key"
        | other -> failtestf "expected not linearizable on %A, got: %s" key (describe other)
    }

// ---------------------------------------------------------------------------------------------------------------
// Generating linearizable histories: clients issue operations one after another over random overlapping intervals;
// each operation takes effect at a random instant inside its interval, and outputs come from applying them to a
// sequential store in the order of those instants. Some writes time out: the client never learns the outcome, and
// the write takes effect at its instant or, half the time, never.

let private simulate (seed: int) (clients: int) (keys: int) (count: int) (timeoutRate: float) : Operation list =
    let random = Random seed
    let key () = sprintf "k%d" (random.Next keys)
    let value () = bytes (sprintf "v%d" (random.Next 6))
    // Per client: a sequence of intervals; instants are scaled by `clients` plus the client id to make them distinct.
    let planned =
        [ for c in 0 .. clients - 1 do
              let mutable clock = int64 (random.Next 5)
              for _ in 1 .. count / clients do
                  let invoked = clock
                  let completed = invoked + int64 (1 + random.Next 20)
                  let instant = (invoked + int64 (random.Next(int (completed - invoked) + 1))) * int64 clients + int64 c
                  let action =
                      match random.Next 10 with
                      | 0
                      | 1
                      | 2
                      | 3 -> Action.Get(key ())
                      | 4
                      | 5
                      | 6 -> Action.Write(Command.Insert(key (), value ()))
                      | 7 -> Action.Write(Command.Remove(key ()))
                      | _ ->
                          let next = if random.Next 4 = 0 then None else Some(value ())
                          Action.Write(Command.CompareAndSwap(key (), (if random.Next 3 = 0 then None else Some(value ())), next))
                  let lost = random.NextDouble() < timeoutRate
                  yield c, invoked, completed, instant, action, lost
                  clock <- completed + int64 (random.Next 3) ]
    let store = Collections.Generic.Dictionary<string, byte[]>()
    let current k =
        match store.TryGetValue k with
        | true, v -> Some v
        | _ -> None
    [ for c, invoked, completed, _, action, lost in planned |> List.sortBy (fun (_, _, _, instant, _, _) -> instant) do
          let takesEffect = not lost || random.Next 2 = 0
          let output =
              match action with
              | Action.Get k -> Output.Value(current k)
              | Action.Write(Command.Insert(k, v)) ->
                  if takesEffect then
                      store[k] <- v
                  Output.Result CommandResult.Done
              | Action.Write(Command.Remove k) ->
                  if takesEffect then
                      store.Remove k |> ignore
                  Output.Result CommandResult.Done
              | Action.Write(Command.CompareAndSwap(k, expected, next)) ->
                  let matches =
                      match current k, expected with
                      | None, None -> true
                      | Some a, Some b -> a.AsSpan().SequenceEqual(ReadOnlySpan b)
                      | _ -> false
                  if matches && takesEffect then
                      match next with
                      | Some v -> store[k] <- v
                      | None -> store.Remove k |> ignore
                  Output.Result(CommandResult.Swapped matches)
          yield
              { Client = c
                Invoked = invoked
                Action = action
                Completion = if lost then Completion.TimedOut else Completion.Returned(completed, output) } ]
    |> List.sortBy (fun o -> o.Invoked, o.Client)

/// Seeds for the generated-history tests: a few fixed ones plus a fresh one per run (SKIFF_LIN_SEED replays one).
let private seeds =
    match Environment.GetEnvironmentVariable "SKIFF_LIN_SEED" with
    | null
    | "" -> [ 1; 2; 3; Random.Shared.Next() ]
    | s -> [ int s ]

/// Replaces the observation of one completed get (chosen by `seed`) with a value nobody ever wrote.
let private corruptOneRead (seed: int) (history: Operation list) : Operation list * string =
    let reads =
        history
        |> List.indexed
        |> List.filter (fun (_, o) ->
            match o.Action, o.Completion with
            | Action.Get _, Completion.Returned _ -> true
            | _ -> false)
    let index, target = reads[Random(seed).Next reads.Length]
    let corrupted =
        match target.Completion with
        | Completion.Returned(at, _) -> { target with Completion = Completion.Returned(at, Output.Value(Some(bytes "never written"))) }
        | Completion.TimedOut -> target
    (history |> List.mapi (fun i o -> if i = index then corrupted else o)), Operation.key target

let private timed (f: unit -> 'a) : 'a * float =
    let watch = Stopwatch.StartNew()
    let result = f ()
    result, watch.Elapsed.TotalMilliseconds

// ---------------------------------------------------------------------------------------------------------------

let tests =
    testList
        "Linearizability"
        [ testList
              "registers"
              [ linearizable "an empty history" []
                linearizable "a read after a completed write sees it" [ put 0 0 1 "k" "a"; get 1 2 3 "k" (Some "a") ]
                notLinearizable
                    "a stale read after a completed write"
                    "k"
                    [ put 0 0 1 "k" "a"; put 0 2 3 "k" "b"; get 1 4 5 "k" (Some "a") ]
                linearizable
                    "a read concurrent with a write may see the old value"
                    [ put 0 0 1 "k" "a"; put 0 2 10 "k" "b"; get 1 3 4 "k" (Some "a"); get 1 5 6 "k" (Some "b") ]
                notLinearizable
                    "once a concurrent read saw the new value, a later read cannot see the old"
                    "k"
                    [ put 0 0 1 "k" "a"; put 0 2 10 "k" "b"; get 1 3 4 "k" (Some "b"); get 1 5 6 "k" (Some "a") ]
                linearizable "intervals that touch count as concurrent" [ put 0 0 5 "k" "a"; get 1 0 5 "k" None ]
                notLinearizable "a read that sees a value never written" "k" [ put 0 0 1 "k" "a"; get 1 0 5 "k" (Some "z") ]
                test "values compare by content, not by reference" {
                    let history =
                        [ op 0 0 1 (Action.Write(Command.Insert("k", [| 1uy; 2uy |]))) (Output.Result CommandResult.Done)
                          op 1 2 3 (Action.Get "k") (Output.Value(Some [| 1uy; 2uy |])) ]
                    Expect.equal (check history) Linearizable "a fresh array with the same bytes"
                } ]
          testList
              "concurrent writes"
              [ for winner, loser in [ "a", "b"; "b", "a" ] do
                    linearizable
                        (sprintf "later reads may observe %s last" winner)
                        [ put 0 0 10 "k" "a"; put 1 0 10 "k" "b"; get 2 11 12 "k" (Some winner); get 2 13 14 "k" (Some winner) ]
                    linearizable
                        (sprintf "reads during the writes may see %s then %s" loser winner)
                        [ put 0 0 10 "k" "a"
                          put 1 0 10 "k" "b"
                          get 2 1 2 "k" (Some loser)
                          get 2 3 4 "k" (Some winner)
                          get 2 11 12 "k" (Some winner) ]
                notLinearizable
                    "after both writes complete, the readers cannot disagree over time"
                    "k"
                    [ put 0 0 10 "k" "a"; put 1 0 10 "k" "b"; get 2 11 12 "k" (Some "b"); get 2 13 14 "k" (Some "a") ] ]
          testList
              "compare-and-swap"
              [ linearizable
                    "a chain of swaps"
                    [ put 0 0 1 "k" "0"
                      cas 0 2 3 "k" (Some "0") (Some "1") true
                      cas 1 4 5 "k" (Some "1") (Some "2") true
                      get 2 6 7 "k" (Some "2") ]
                notLinearizable
                    "a lost update: a later read misses a completed swap"
                    "k"
                    [ put 0 0 1 "k" "0"
                      cas 0 2 3 "k" (Some "0") (Some "1") true
                      cas 1 4 5 "k" (Some "1") (Some "2") true
                      get 2 6 7 "k" (Some "1") ]
                notLinearizable
                    "two swaps both succeeding on the same expected value"
                    "k"
                    [ put 0 0 1 "k" "0"; cas 0 2 6 "k" (Some "0") (Some "1") true; cas 1 3 7 "k" (Some "0") (Some "2") true ]
                linearizable
                    "two concurrent swaps on the same expected value, one failing"
                    [ put 0 0 1 "k" "0"
                      cas 0 2 6 "k" (Some "0") (Some "1") true
                      cas 1 3 7 "k" (Some "0") (Some "2") false
                      get 2 8 9 "k" (Some "1") ]
                notLinearizable
                    "a failed swap whose expected value was certainly current"
                    "k"
                    [ put 0 0 1 "k" "0"; cas 1 2 3 "k" (Some "0") (Some "1") false ]
                linearizable "a swap expecting absence creates the key" [ cas 0 0 1 "k" None (Some "a") true; get 0 2 3 "k" (Some "a") ]
                notLinearizable
                    "a swap expecting absence cannot succeed on a present key"
                    "k"
                    [ put 0 0 1 "k" "a"; cas 0 2 3 "k" None (Some "b") true ]
                linearizable "a swap to None deletes" [ put 0 0 1 "k" "a"; cas 0 2 3 "k" (Some "a") None true; get 0 4 5 "k" None ] ]
          testList
              "timed-out operations"
              [ linearizable
                    "a timed-out put that later appears"
                    [ put 0 0 1 "k" "a"; timedOut (put 0 2 3 "k" "b"); get 1 10 11 "k" (Some "b"); get 1 12 13 "k" (Some "b") ]
                linearizable
                    "a timed-out put that never appears"
                    [ put 0 0 1 "k" "a"; timedOut (put 0 2 3 "k" "b"); get 1 10 11 "k" (Some "a") ]
                linearizable
                    "a timed-out put that appears long after the client gave up"
                    [ put 0 0 1 "k" "a"; timedOut (put 0 2 3 "k" "b"); get 1 10 11 "k" (Some "a"); get 1 100 101 "k" (Some "b") ]
                notLinearizable
                    "a timed-out put that appears and then disappears"
                    "k"
                    [ put 0 0 1 "k" "a"; timedOut (put 0 2 3 "k" "b"); get 1 10 11 "k" (Some "b"); get 1 12 13 "k" (Some "a") ]
                notLinearizable
                    "a timed-out put cannot appear before its invocation"
                    "k"
                    [ put 0 0 1 "k" "a"; get 1 2 3 "k" (Some "b"); timedOut (put 0 4 5 "k" "b") ]
                linearizable
                    "a timed-out swap may have taken effect"
                    [ put 0 0 1 "k" "a"; timedOut (cas 0 2 3 "k" (Some "a") (Some "b") false); get 1 4 5 "k" (Some "b") ]
                notLinearizable
                    "a timed-out swap only takes effect if it matches"
                    "k"
                    [ put 0 0 1 "k" "a"; timedOut (cas 0 2 3 "k" (Some "x") (Some "b") true); get 1 4 5 "k" (Some "b") ]
                linearizable "a timed-out get constrains nothing" [ put 0 0 1 "k" "a"; timedOut (get 1 2 3 "k" (Some "zzz")) ]
                test "many pending timed-out writes of values nobody read do not blow up a failing search" {
                    // 40 writes of unique values that time out and are never observed, then a stale read. The search
                    // must rule out every placement of every subset of them: exponential, unless they are recognised
                    // as interchangeable.
                    let lost = [ for c in 1..40 -> timedOut (put c 0 1 "k" (sprintf "lost%d" c)) ]
                    let history = lost @ [ put 0 0 1 "k" "a"; put 0 2 3 "k" "b"; get 0 4 5 "k" (Some "a") ]
                    let result = checkWith { MaxStepsPerKey = 100_000L } history
                    match result with
                    | NotLinearizable("k", _) -> ()
                    | other -> failtestf "expected not linearizable, got %s" (describe other)
                }
                linearizable
                    "timed-out writes of unobserved values still hide a value from a failed swap"
                    [ put 0 0 1 "k" "a"; timedOut (put 1 2 3 "k" "never read"); cas 0 4 5 "k" (Some "a") (Some "b") false ] ]
          testList
              "absent keys and deletes"
              [ linearizable "a key never written reads as absent" [ get 0 0 1 "k" None ]
                notLinearizable "a key never written cannot read as present" "k" [ get 0 0 1 "k" (Some "a") ]
                linearizable "delete then read sees absence" [ put 0 0 1 "k" "a"; delete 0 2 3 "k"; get 1 4 5 "k" None ]
                notLinearizable
                    "a read after a completed delete cannot see the old value"
                    "k"
                    [ put 0 0 1 "k" "a"; delete 0 2 3 "k"; get 1 4 5 "k" (Some "a") ]
                linearizable
                    "deleting an absent key is fine, and a put after it is visible"
                    [ delete 0 0 1 "k"; put 0 2 3 "k" "a"; get 1 4 5 "k" (Some "a") ]
                linearizable
                    "a read concurrent with a delete may see either"
                    [ put 0 0 1 "k" "a"; delete 0 2 10 "k"; get 1 3 4 "k" (Some "a"); get 1 5 6 "k" None ] ]
          testList
              "per-key independence"
              [ linearizable
                    "operations on different keys do not constrain each other"
                    [ put 0 0 1 "a" "1"; get 1 2 3 "b" None; put 0 4 5 "b" "2"; get 1 6 7 "a" (Some "1") ]
                notLinearizable
                    "the offending key is the one reported"
                    "b"
                    [ put 0 0 1 "a" "1"; get 1 2 3 "a" (Some "1"); put 0 4 5 "b" "2"; get 1 6 7 "b" (Some "3") ]
                test "the explanation holds the key's operations and where the search got stuck" {
                    let stale = get 1 4 5 "k" (Some "a")
                    let history = [ put 0 0 1 "k" "a"; put 0 2 3 "k" "b"; stale; put 2 0 9 "other" "x" ]
                    match check history with
                    | NotLinearizable(key, explanation) ->
                        Expect.equal key "k" "key"
                        Expect.equal explanation.Operations (List.take 3 history) "only the key's operations, by invocation"
                        Expect.equal explanation.Stuck (Some stale) "the stale read is where it stops"
                        Expect.equal explanation.LongestLinearization (List.take 2 history) "the writes linearize"
                        Expect.stringContains (describe (NotLinearizable(key, explanation))) "cannot be extended" "described"
                    | other -> failtestf "expected not linearizable, got %s" (describe other)
                } ]
          testList
              "malformed histories and limits"
              [ test "an output of the wrong kind is rejected" {
                    let bad = op 0 0 1 (Action.Get "k") (Output.Result CommandResult.Done)
                    Expect.throwsT<ArgumentException> (fun () -> check [ bad ] |> ignore) "get returning Done"
                }
                test "a completion before the invocation is rejected" {
                    Expect.throwsT<ArgumentException> (fun () -> check [ put 0 5 4 "k" "a" ] |> ignore) "backwards"
                }
                test "a search over its budget gives Unknown instead of running on" {
                    let history = simulate 7 5 1 200 0.0
                    let result = checkWith { MaxStepsPerKey = 10L } history
                    Expect.equal result (Unknown [ "k0" ]) (describe result)
                }
                test "a violation found on one key wins over Unknown on another" {
                    // Key "a" is ordinal-first and needs more than 2 steps; key "b" is violated in 2.
                    let history = [ put 0 0 1 "a" "1"; put 0 2 3 "a" "2"; get 0 4 5 "a" (Some "2"); get 1 0 1 "b" (Some "x") ]
                    match checkWith { MaxStepsPerKey = 2L } history with
                    | NotLinearizable("b", _) -> ()
                    | other -> failtestf "expected b to be reported, got %s" (describe other)
                } ]
          testList
              "generated histories"
              [ for seed in seeds do
                    test (sprintf "a simulated history of 2000 operations is linearizable (seed %d)" seed) {
                        let history = simulate seed 5 20 2000 0.02
                        let result, ms = timed (fun () -> check history)
                        Expect.equal result Linearizable (sprintf "seed %d: %s" seed (describe result))
                        // The target is well under 100 ms; the bound here is loose because the test machines are shared.
                        Expect.isLessThan ms 2000.0 (sprintf "seed %d: took %.1f ms" seed ms)
                    }
                    test (sprintf "one impossible read makes it not linearizable (seed %d)" seed) {
                        let history, key = corruptOneRead seed (simulate seed 5 20 2000 0.02)
                        match check history with
                        | NotLinearizable(k, _) -> Expect.equal k key (sprintf "seed %d: the corrupted key" seed)
                        | other -> failtestf "seed %d: expected not linearizable on %s, got %s" seed key (describe other)
                    }
                test "a single hot key with heavy overlap and timeouts is still quick" {
                    let history = simulate 11 5 1 1000 0.05
                    let result, ms = timed (fun () -> check history)
                    Expect.equal result Linearizable (describe result)
                    Expect.isLessThan ms 5000.0 (sprintf "took %.1f ms" ms)
                } ]
          testList
              "properties"
              [ testProperty "random sequential histories are linearizable"
                <| fun (steps: (byte * byte * byte * bool) list) ->
                    // (key, kind, value, timed out) -> one operation at a time over three keys and four values.
                    let store = Collections.Generic.Dictionary<string, string>()
                    let history =
                        steps
                        |> List.mapi (fun i (k, kind, v, lost) ->
                            let key = sprintf "k%d" (int k % 3)
                            let value = sprintf "v%d" (int v % 4)
                            let t = int64 (2 * i)
                            let current =
                                match store.TryGetValue key with
                                | true, x -> Some x
                                | _ -> None
                            let o =
                                match int kind % 4 with
                                | 0 -> get i t (t + 1L) key current
                                | 1 ->
                                    store[key] <- value
                                    put i t (t + 1L) key value
                                | 2 ->
                                    store.Remove key |> ignore
                                    delete i t (t + 1L) key
                                | _ ->
                                    let expected = if v % 2uy = 0uy then current else Some value
                                    let next = Some(sprintf "v%d" (int k % 4))
                                    let swapped = (expected = current)
                                    if swapped then
                                        store[key] <- next.Value
                                    cas i t (t + 1L) key expected next swapped
                            if lost then timedOut o else o)
                    check history = Linearizable
                testProperty "simulated concurrent histories are linearizable"
                <| fun (seed: int) (timeouts: bool) -> check (simulate seed 4 3 120 (if timeouts then 0.1 else 0.0)) = Linearizable ] ]
