namespace Skiff.Simulation

open Skiff.Core
open Skiff.Simulation.Linearizability

/// How a client carries out one operation of a user's workload: a sequence of the store's operations (get, put,
/// delete, compare-and-swap), each chosen from the outputs of the ones before. A program is data, so the simulator
/// can run one step at a time, interleaved with faults and other clients. Write one with the `program { }`
/// computation expression and the functions of the Program module.
[<RequireQualifiedAccess>]
type Program<'Out> =
    /// Done: the operation's output.
    | Return of output: 'Out
    /// Perform `action` on the store, then continue with what it returned.
    | Call of action: Action * next: (Output -> Program<'Out>)

/// The store's operations as programs, and how to chain them.
[<RequireQualifiedAccess>]
module Program =
    /// A program that performs nothing and returns `output`.
    let ret (output: 'Out) : Program<'Out> = Program.Return output

    /// Runs `program`, then the program `f` makes of its output.
    let rec bind (f: 'A -> Program<'B>) (program: Program<'A>) : Program<'B> =
        match program with
        | Program.Return a -> f a
        | Program.Call(action, next) -> Program.Call(action, next >> bind f)

    /// Performs `action` and returns what `read` takes from its output; any other output breaks the store's contract.
    let private call (action: Action) (read: Output -> 'A option) : Program<'A> =
        Program.Call(
            action,
            fun output ->
                match read output with
                | Some a -> Program.Return a
                | None -> invalidOp (sprintf "the store answered %A to %A" output action)
        )

    /// Reads a key: its value, or None if absent (a linearizable read, through ReadIndex).
    let get (key: string) : Program<byte[] option> =
        call (Action.Get key) (function
            | Output.Value v -> Some v
            | _ -> None)

    let private write (command: Command) : Program<CommandResult> =
        call (Action.Write command) (function
            | Output.Result r -> Some r
            | _ -> None)

    /// Sets a key.
    let put (key: string) (value: byte[]) : Program<unit> = write (Command.Insert(key, value)) |> bind (fun _ -> ret ())

    /// Removes a key (absent is fine).
    let delete (key: string) : Program<unit> = write (Command.Remove key) |> bind (fun _ -> ret ())

    /// Sets `key` to `next` (None: removes it) only if it holds `expected` (None: absent); whether it did.
    let compareAndSwap (key: string) (expected: byte[] option) (next: byte[] option) : Program<bool> =
        write (Command.CompareAndSwap(key, expected, next))
        |> bind (function
            | CommandResult.Swapped swapped -> ret swapped
            | CommandResult.Done -> ret true)

/// The `program { }` computation expression: `let!` performs a store operation, `return` ends, `return!` continues
/// with another program (a retry loop is a recursive function returning a program).
type ProgramBuilder() =
    /// `let! x = p in rest`.
    member _.Bind(program: Program<'A>, f: 'A -> Program<'B>) : Program<'B> = Program.bind f program
    /// `return x`.
    member _.Return(output: 'Out) : Program<'Out> = Program.ret output
    /// `return! p`.
    member _.ReturnFrom(program: Program<'Out>) : Program<'Out> = program
    /// Builds the program when it is written, not later: programs are values.
    member _.Delay(f: unit -> Program<'Out>) : Program<'Out> = f ()

/// A user's workload: which operations clients invoke, and how each is carried out on the store.
type ClientWorkload<'Op, 'Out> =
    {
        /// The next operation of client `client` (0-based), drawn from `random` (seeded from the schedule, so a
        /// run stays deterministic).
        NextOp: System.Random -> int -> 'Op
        /// The program that carries out an operation; its output is what the model must predict.
        Run: 'Op -> Program<'Out>
    }

/// The `program { }` builder.
[<AutoOpen>]
module ProgramSyntax =
    /// Builds a Program: `program { let! v = Program.get "k" in return v }`.
    let program = ProgramBuilder()
