/// A linearizability checker for histories of the key-value store: did every operation appear to take effect
/// atomically at some instant between its invocation and its completion, consistently with what each client saw?
///
/// The algorithm is Wing & Gong's search with Lowe's memoisation, as in Porcupine's `checkSingle`: a depth-first
/// search for an order of the operations (a linearization), remembering every (set of linearized operations,
/// register state) pair already explored so no configuration is searched twice. Every operation touches one key,
/// so the history is first split per key and each key is checked on its own (linearizability is compositional).
///
/// Reading order: the public history and result types, then the per-key register model, then the search, then
/// `check`.
module Skiff.Simulation.Linearizability

open System
open System.Collections.Generic
open Skiff.Core

// ---------------------------------------------------------------------------------------------------------------
// History

/// What a client asked the store to do.
[<RequireQualifiedAccess>]
type Action =
    /// Read the current value of `key`.
    | Get of key: string
    /// Apply a write: a put, a delete or a compare-and-swap.
    | Write of Command

/// What an operation returned to its client.
[<RequireQualifiedAccess>]
type Output =
    /// A get's result: the value, or None if the key was absent. Compared by content.
    | Value of byte[] option
    /// A write's result: `CommandResult.Done` for a put or delete, `CommandResult.Swapped` for a compare-and-swap.
    | Result of CommandResult

/// How an operation ended, as its client saw it.
[<RequireQualifiedAccess>]
type Completion =
    /// The operation returned `output` at logical time `at` (not earlier than its invocation).
    | Returned of at: int64 * output: Output
    /// The outcome is unknown (timeout, lost connection, crashed client): the operation may have taken effect at
    /// any instant after its invocation, or never, and its output is unconstrained.
    | TimedOut

/// One operation of a history: an interval of logical time during which `Action` was outstanding. Intervals are
/// closed, as in Porcupine: an operation invoked at the very instant another completes counts as concurrent with it,
/// so when one operation must be ordered after another (a client's next request, say), invoke it strictly later.
type Operation =
    {
        /// Who issued the operation; used only to describe failures (real-time order comes from the times alone).
        Client: int
        /// Logical time of the invocation.
        Invoked: int64
        /// What was asked.
        Action: Action
        /// How it ended.
        Completion: Completion
    }

/// Helpers on operations.
module Operation =
    /// The key an operation touches.
    let key (op: Operation) : string =
        match op.Action with
        | Action.Get k -> k
        | Action.Write(Command.Insert(k, _)) -> k
        | Action.Write(Command.Remove k) -> k
        | Action.Write(Command.CompareAndSwap(k, _, _)) -> k

    /// The completion time, or None if the operation timed out.
    let completed (op: Operation) : int64 option =
        match op.Completion with
        | Completion.Returned(at, _) -> Some at
        | Completion.TimedOut -> None

    let private showValue (value: byte[] option) =
        match value with
        | None -> "absent"
        | Some bytes when bytes |> Array.forall (fun b -> b >= 32uy && b < 127uy) -> "\"" + Text.Encoding.ASCII.GetString bytes + "\""
        | Some bytes -> "0x" + Convert.ToHexString bytes

    /// A one-line human-readable rendering, e.g. `client 2 [5, 9] get "k" -> "v1"`.
    let describe (op: Operation) : string =
        let action =
            match op.Action with
            | Action.Get k -> sprintf "get %A" k
            | Action.Write(Command.Insert(k, v)) -> sprintf "put %A %s" k (showValue (Some v))
            | Action.Write(Command.Remove k) -> sprintf "delete %A" k
            | Action.Write(Command.CompareAndSwap(k, e, n)) -> sprintf "cas %A %s -> %s" k (showValue e) (showValue n)
        match op.Completion with
        | Completion.TimedOut -> sprintf "client %d [%d, ?] %s -> timed out" op.Client op.Invoked action
        | Completion.Returned(at, output) ->
            let shown =
                match output with
                | Output.Value v -> showValue v
                | Output.Result CommandResult.Done -> "ok"
                | Output.Result(CommandResult.Swapped swapped) -> if swapped then "swapped" else "not swapped"
            sprintf "client %d [%d, %d] %s -> %s" op.Client op.Invoked at action shown

// ---------------------------------------------------------------------------------------------------------------
// Results

/// Why one key's history is not linearizable.
type Explanation =
    {
        /// Every operation on the key, ordered by invocation time.
        Operations: Operation list
        /// The longest order found in which operations can take effect one after another, each within its interval
        /// and each returning what its client saw. Every attempt to extend it failed.
        LongestLinearization: Operation list
        /// The operation that returned earliest among those missing from `LongestLinearization`: the search could
        /// not fit it in after that prefix. Usually the stale or impossible observation, or a write that broke it.
        Stuck: Operation option
    }

/// The verdict on a whole history.
type CheckResult =
    /// Some order of the operations respects real time and the sequential key-value semantics.
    | Linearizable
    /// No such order exists for the operations on `key`; the first such key in ordinal order is reported.
    | NotLinearizable of key: string * explanation: Explanation
    /// The search on these keys exceeded its step budget before reaching a verdict; every other key was
    /// linearizable.
    | Unknown of keys: string list

/// Limits on the search.
type CheckOptions =
    {
        /// The most search steps (attempts to linearize an operation, plus backtracks) spent on any one key before
        /// giving up on it with `Unknown`. Time is roughly proportional to it (about a tenth of a microsecond a
        /// step), and so is memory: a visited configuration costs about 40 bytes plus one bit per operation on the key.
        MaxStepsPerKey: int64
    }

/// The default limits: a million steps per key, about a tenth of a second. A history of 2,000 operations over 20
/// keys and 5 clients typically needs a few thousand steps per key; one hot key shared by 10 clients, ~600,000.
let defaultOptions: CheckOptions = { MaxStepsPerKey = 1_000_000L }

// ---------------------------------------------------------------------------------------------------------------
// The per-key model: a register whose values are interned to small integers (0 = absent), so model states
// compare and hash as ints.

/// One operation on one key, reduced to what the register needs.
[<Struct>]
type private Step =
    /// A completed get that saw `Observed`.
    | Read of observed: int
    /// A put (value id) or a delete (0); always succeeds whether or not it timed out.
    | Assign of value: int
    /// A completed compare-and-swap that reported `Swapped`.
    | Swap of expected: int * next: int * swapped: bool
    /// A timed-out compare-and-swap: it swaps if it matches, and no outcome is ruled out.
    | MaybeSwap of ifEquals: int * thenSet: int

/// Applies one step to the register: Some new state if the step's recorded output is possible from `state`.
let private apply (state: int) (step: Step) : int voption =
    match step with
    | Read observed -> if observed = state then ValueSome state else ValueNone
    | Assign value -> ValueSome value
    | Swap(expected, next, true) -> if expected = state then ValueSome next else ValueNone
    | Swap(expected, _, false) -> if expected <> state then ValueSome state else ValueNone
    | MaybeSwap(expected, next) -> ValueSome(if expected = state then next else state)

/// Interns values by content within one key.
type private ValueIds() =
    let ids = Dictionary<byte[], int>(HashIdentity.Structural)
    member _.Id(value: byte[] option) : int =
        match value with
        | None -> 0
        | Some bytes ->
            match ids.TryGetValue bytes with
            | true, id -> id
            | _ ->
                let id = ids.Count + 1
                ids[bytes] <- id
                id

/// Values that no step ever compares against (no read observed them, no compare-and-swap expected them) are
/// indistinguishable to the model: every step treats a register holding one exactly like a register holding another.
/// Merging them into one id (-1) lets the cache recognise more configurations as equal, and makes timed-out writes of
/// such values interchangeable (see `searchKey`), which matters when every write carries a unique value.
let private mergeUncompared (steps: Step[]) : Step[] =
    let compared = HashSet<int>([ 0 ])
    for step in steps do
        match step with
        | Read value
        | Swap(value, _, _)
        | MaybeSwap(value, _) -> compared.Add value |> ignore
        | Assign _ -> ()
    let canonical value = if compared.Contains value then value else -1
    steps
    |> Array.map (fun step ->
        match step with
        | Assign value -> Assign(canonical value)
        | Swap(expected, next, swapped) -> Swap(expected, canonical next, swapped)
        | MaybeSwap(expected, next) -> MaybeSwap(expected, canonical next)
        | Read _ -> step)

let private invalidOutput (op: Operation) = invalidArg "history" (sprintf "output does not match the action: %s" (Operation.describe op))

/// Reduces an operation to its register step; None for a timed-out get, which constrains nothing.
let private toStep (ids: ValueIds) (op: Operation) : Step option =
    match op.Action, op.Completion with
    | Action.Get _, Completion.TimedOut -> None
    | Action.Get _, Completion.Returned(_, Output.Value v) -> Some(Read(ids.Id v))
    | Action.Write(Command.Insert(_, v)), Completion.TimedOut
    | Action.Write(Command.Insert(_, v)), Completion.Returned(_, Output.Result CommandResult.Done) -> Some(Assign(ids.Id(Some v)))
    | Action.Write(Command.Remove _), Completion.TimedOut
    | Action.Write(Command.Remove _), Completion.Returned(_, Output.Result CommandResult.Done) -> Some(Assign 0)
    | Action.Write(Command.CompareAndSwap(_, e, n)), Completion.TimedOut -> Some(MaybeSwap(ids.Id e, ids.Id n))
    | Action.Write(Command.CompareAndSwap(_, e, n)), Completion.Returned(_, Output.Result(CommandResult.Swapped s)) ->
        Some(Swap(ids.Id e, ids.Id n, s))
    | _ -> invalidOutput op

// ---------------------------------------------------------------------------------------------------------------
// The search, on one key

/// A visited configuration: which operations are linearized (a bitset) and the register state after them.
/// `Hash` is maintained incrementally by the search (Zobrist hashing), so lookups cost O(1) until a bucket matches.
[<Struct; CustomEquality; NoComparison>]
type private Configuration =
    { Bits: uint64[]
      State: int
      Hash: int }

    override this.GetHashCode() = this.Hash
    override this.Equals(other: obj) =
        match other with
        | :? Configuration as c -> this.State = c.State && this.Bits.AsSpan().SequenceEqual(ReadOnlySpan c.Bits)
        | _ -> false
    interface IEquatable<Configuration> with
        member this.Equals(c: Configuration) = this.State = c.State && this.Bits.AsSpan().SequenceEqual(ReadOnlySpan c.Bits)

type private Verdict =
    | Fine
    | Violated of longest: int list * stuck: int option
    | OutOfSteps

/// Searches for a linearization of `steps` (indexed like `ops`). The history is laid out as Porcupine does: a
/// doubly linked list of call and return events in time order (calls before returns at equal times, so touching
/// intervals count as concurrent; timed-out operations return at +infinity, after everything). The search walks
/// the list from its head: at a call it tries to linearize that operation next, and if the model accepts it and the
/// resulting configuration is new, removes the operation's two events ("lifts" it) and starts again from the head;
/// at a return it is stuck (that operation must have taken effect already) and backtracks. Timed-out operations
/// may stay unlinearized, so the search succeeds as soon as every operation that returned has been linearized.
let private searchKey (maxSteps: int64) (ops: Operation[]) (steps: Step[]) : Verdict =
    let n = ops.Length
    let timedOut = ops |> Array.map (fun op -> op.Completion.IsTimedOut)
    // Event nodes: 0 is the head sentinel, 1 .. 2n the events, 2n+1 the tail sentinel.
    let head = 0
    let tail = 2 * n + 1
    let eventOp = Array.zeroCreate<int>(2 * n + 2)
    let isCall = Array.zeroCreate<bool>(2 * n + 2)
    let returnOf = Array.zeroCreate<int>(2 * n + 2)
    let events =
        [| for i in 0 .. n - 1 do
               let op = ops[i]
               let returnTime = Operation.completed op |> Option.defaultValue Int64.MaxValue
               let infinite = op.Completion.IsTimedOut
               // (time, timed out last, calls first, op) orders the events.
               yield struct (op.Invoked, false, 0, i)
               yield struct (returnTime, infinite, 1, i) |]
        |> Array.sortBy (fun struct (time, infinite, kind, i) -> struct (infinite, time, kind, i))
    let next = Array.zeroCreate<int>(2 * n + 2)
    let prev = Array.zeroCreate<int>(2 * n + 2)
    let callNode = Array.zeroCreate<int> n
    events
    |> Array.iteri (fun position struct (_, _, kind, i) ->
        let node = position + 1
        eventOp[node] <- i
        isCall[node] <- (kind = 0)
        if kind = 0 then
            callNode[i] <- node)
    for node in 1 .. 2 * n do
        if not isCall[node] then
            returnOf[callNode[eventOp[node]]] <- node
    for node in 0..tail do
        next[node] <- if node = tail then tail else node + 1
        prev[node] <- if node = head then head else node - 1

    let lift call =
        let ret = returnOf[call]
        next[prev[call]] <- next[call]
        prev[next[call]] <- prev[call]
        next[prev[ret]] <- next[ret]
        prev[next[ret]] <- prev[ret]

    let unlift call =
        let ret = returnOf[call]
        next[prev[ret]] <- ret
        prev[next[ret]] <- ret
        next[prev[call]] <- call
        prev[next[call]] <- call

    // Timed-out operations with equal steps are interchangeable once invoked: they never return, so whichever of them
    // is linearized, the others stay available for ever. Each such class is therefore only linearized in invocation
    // order: `used[c]` of its members are linearized, and only the member ranked `used[c]` may go next. Without this,
    // k pending identical timeouts multiply the configurations to explore by up to 2^k.
    let classOf = Array.zeroCreate<int> n
    let rank = Array.zeroCreate<int> n
    let classSizes = ResizeArray<int>()
    let classes = Dictionary<Step, int>()
    for node in 1 .. 2 * n do
        let i = eventOp[node]
        if isCall[node] && timedOut[i] then
            let c =
                match classes.TryGetValue steps[i] with
                | true, c -> c
                | _ ->
                    classes[steps[i]] <- classes.Count
                    classSizes.Add 0
                    classes.Count - 1
            classOf[i] <- c
            rank[i] <- classSizes[c]
            classSizes[c] <- classSizes[c] + 1
    let used = Array.zeroCreate<int> classes.Count

    let mustLinearize = timedOut |> Array.sumBy (fun t -> if t then 0 else 1)
    let zobrist =
        let random = Random(n) // any fixed keys do; collisions only cost an array comparison
        Array.init n (fun _ -> random.Next())
    let bits = Array.zeroCreate<uint64>((n + 63) / 64)
    let flip i = bits[i >>> 6] <- bits[i >>> 6] ^^^ (1UL <<< (i &&& 63))
    let visited = HashSet<Configuration>()
    let stack = Stack<struct (int * int)>() // (call node, state before it)

    let mutable state = 0
    let mutable hash = 0
    let mutable linearized = 0
    let mutable entry = next[head]
    let mutable spent = 0L
    let mutable longest: int list = []
    let mutable longestLength = 0
    let mutable verdict = ValueNone

    let stateHash s = s * -1640531535 // spreads small state ids across the hash

    while verdict.IsNone do
        spent <- spent + 1L
        if linearized = mustLinearize then
            verdict <- ValueSome Fine
        elif spent > maxSteps then
            verdict <- ValueSome OutOfSteps
        elif entry <> tail && isCall[entry] then
            let i = eventOp[entry]
            let mutable moved = false
            let eligible = not timedOut[i] || rank[i] = used[classOf[i]]
            match if eligible then apply state steps[i] else ValueNone with
            | ValueSome after ->
                flip i
                let h = hash ^^^ zobrist[i]
                let probe = { Bits = bits; State = after; Hash = h ^^^ stateHash after }
                if not (visited.Contains probe) then
                    visited.Add { probe with Bits = Array.copy bits } |> ignore
                    stack.Push(struct (entry, state))
                    state <- after
                    hash <- h
                    if timedOut[i] then used[classOf[i]] <- used[classOf[i]] + 1 else linearized <- linearized + 1
                    lift entry
                    entry <- next[head]
                    moved <- true
                else
                    flip i
            | ValueNone -> ()
            if not moved then
                entry <- next[entry]
        elif stack.Count = 0 then
            let inLongest = HashSet longest
            let stuck =
                [ 0 .. n - 1 ]
                |> List.filter (fun i -> not (inLongest.Contains i || timedOut[i]))
                |> List.sortBy (fun i -> Operation.completed ops[i], i)
                |> List.tryHead
            verdict <- ValueSome(Violated(longest, stuck))
        else
            // About to backtrack from a dead end: remember it if it is the deepest yet (only dead ends can be the
            // longest partial linearization of a failed search, and snapshotting here rather than at every lift
            // keeps a long successful search linear).
            if stack.Count > longestLength then
                longestLength <- stack.Count
                longest <- [ for struct (call, _) in stack -> eventOp[call] ] |> List.rev
            let struct (call, before) = stack.Pop()
            let i = eventOp[call]
            unlift call
            flip i
            hash <- hash ^^^ zobrist[i]
            state <- before
            if timedOut[i] then used[classOf[i]] <- used[classOf[i]] - 1 else linearized <- linearized - 1
            entry <- next[call]
    verdict.Value

// ---------------------------------------------------------------------------------------------------------------
// Checking a history

let private validate (op: Operation) =
    match op.Completion with
    | Completion.Returned(at, _) when at < op.Invoked ->
        invalidArg "history" (sprintf "operation completes before its invocation: %s" (Operation.describe op))
    | _ -> ()

/// The verdict on one key's operations (in any order).
let private checkKey (options: CheckOptions) (key: string) (keyOps: Operation[]) : CheckResult =
    let ids = ValueIds()
    let kept = keyOps |> Array.choose (fun op -> toStep ids op |> Option.map (fun step -> op, step))
    match searchKey options.MaxStepsPerKey (Array.map fst kept) (mergeUncompared (Array.map snd kept)) with
    | Fine -> Linearizable
    | OutOfSteps -> Unknown [ key ]
    | Violated(longest, stuck) ->
        let explanation =
            { Operations = keyOps |> List.ofArray |> List.sortBy (fun op -> op.Invoked)
              LongestLinearization = longest |> List.map (fun i -> fst kept[i])
              Stuck = stuck |> Option.map (fun i -> fst kept[i]) }
        NotLinearizable(key, explanation)

/// Checks a history with explicit limits. Keys are checked one at a time in ordinal order; the first key that is
/// not linearizable decides the result, otherwise any key that ran out of steps makes it `Unknown`.
/// Raises ArgumentException for a malformed history: an output of the wrong kind for its action (a get must
/// return `Output.Value`, a put or delete `Output.Result Done`, a compare-and-swap `Output.Result(Swapped _)`) or a
/// completion before the invocation.
let checkWith (options: CheckOptions) (history: Operation seq) : CheckResult =
    let history = Array.ofSeq history
    history |> Array.iter validate
    let byKey = history |> Array.groupBy Operation.key |> Array.sortWith (fun (a, _) (b, _) -> String.CompareOrdinal(a, b))
    let mutable result = Linearizable
    let mutable unknown = []
    let mutable index = 0
    while index < byKey.Length && result = Linearizable do
        let key, keyOps = byKey[index]
        match checkKey options key keyOps with
        | Unknown keys -> unknown <- unknown @ keys
        | verdict -> result <- verdict
        index <- index + 1
    match result with
    | Linearizable when not unknown.IsEmpty -> Unknown unknown
    | _ -> result

/// Checks a history with `defaultOptions`. See `checkWith`.
let check (history: Operation seq) : CheckResult = checkWith defaultOptions history

/// A multi-line human-readable account of a result, for test failures and logs.
let describe (result: CheckResult) : string =
    match result with
    | Linearizable -> "linearizable"
    | Unknown keys -> sprintf "unknown: the search exceeded its step budget on key(s) %s" (String.Join(", ", keys))
    | NotLinearizable(key, explanation) ->
        let lines (ops: Operation list) = ops |> List.map (fun op -> "    " + Operation.describe op)
        [ yield sprintf "not linearizable: key %A" key
          yield "  longest linearizable order found:"
          yield! lines explanation.LongestLinearization
          match explanation.Stuck with
          | Some op -> yield "  which cannot be extended with: " + Operation.describe op
          | None -> ()
          yield sprintf "  all %d operations on the key, by invocation:" explanation.Operations.Length
          yield! lines explanation.Operations ]
        |> String.concat Environment.NewLine
