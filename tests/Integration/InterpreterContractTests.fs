/// Contract tests for the runtime's interpreter (NodeRuntime with its StorageWriter and Applier) against fake ports:
/// a log, a hard-state store, a snapshot store and a state machine in memory. They check the ordering rules of
/// docs/architecture.md that the interpreter, not the reducer, is responsible for: a message that depends on a
/// write leaves only once the write is durable, only durable committed entries are applied, and an installed
/// snapshot replaces the state machine before the log is reset and before the reply leaves.
///
/// Each write can be held back at a gate, so "the message waited for the write" is observed, not assumed: a test
/// holds the write, checks that nothing dependent happened, then releases it.
module Skiff.Integration.InterpreterContractTests

open System
open System.Collections.Concurrent
open System.Collections.Generic
open System.Threading
open Expecto
open Skiff.Core
open Skiff.Net.Runtime
open Skiff.Net.Storage.Ports

/// Every call the fakes and the transport see, in order, as short text ("hard t2", "flush 3", "send ...").
type private Journal() =
    let lines = ConcurrentQueue<string>()
    member _.Add(line: string) = lines.Enqueue line
    member _.Lines = List.ofSeq lines
    /// The position of the first line that starts with `prefix`, or -1.
    member this.IndexOf(prefix: string) = this.Lines |> List.tryFindIndex (fun l -> l.StartsWith prefix) |> Option.defaultValue -1

/// A gate a fake waits at before making a write durable. Open unless a test closes it.
type private Gate() =
    let gate = new ManualResetEventSlim(true)
    member _.Close() = gate.Reset()
    member _.Open() = gate.Set()
    member _.Pass() = gate.Wait(TimeSpan.FromSeconds 30.0) |> ignore

/// A log in memory: appends are pending until Flush, which waits at its gate; a compaction waits at its own gate
/// (on a pool thread when started with CompactUntilAsync) and, as the port asks, keeps what is not yet durable.
type private FakeLog(journal: Journal, gate: Gate, compactGate: Gate) =
    let sync = obj ()
    let entries = List<Entry>()
    let mutable baseIndex = 0L
    let mutable baseTerm = 0L
    let mutable durable = 0L
    let last () = if entries.Count = 0 then baseIndex else entries[entries.Count - 1].Index

    /// The index up to which appended entries are durable.
    member _.DurableIndex = lock sync (fun () -> durable)

    interface ILogStore with
        member _.SnapshotIndex = lock sync (fun () -> baseIndex)
        member _.SnapshotTerm = lock sync (fun () -> baseTerm)
        member _.LastIndex = lock sync last

        member _.Append(batch: IReadOnlyList<Entry>) =
            lock sync (fun () ->
                if batch.Count > 0 then
                    entries.RemoveAll(fun e -> e.Index >= batch[0].Index) |> ignore
                    durable <- min durable (batch[0].Index - 1L)
                    entries.AddRange batch)

        member _.Flush() =
            gate.Pass()
            lock sync (fun () ->
                durable <- last ()
                journal.Add(sprintf "flush %d" durable))

        member _.TermAt(index: int64) =
            lock sync (fun () ->
                if index = baseIndex then
                    Nullable baseTerm
                else
                    match entries |> Seq.tryFind (fun e -> e.Index = index) with
                    | Some e -> Nullable e.Term
                    | None -> Nullable())

        member _.Read(from: int64, upTo: int64) =
            lock sync (fun () -> entries |> Seq.filter (fun e -> e.Index >= from && e.Index <= upTo) |> Seq.toArray :> IReadOnlyList<Entry>)

        member _.CompactUntil(index: int64, term: int64) =
            compactGate.Pass()
            lock sync (fun () ->
                if index <= durable && index > baseIndex then
                    entries.RemoveAll(fun e -> e.Index <= index) |> ignore
                    baseIndex <- index
                    baseTerm <- term
                    journal.Add(sprintf "compact %d" index))

        member this.CompactUntilAsync(index: int64, term: int64) = Tasks.Task.Run(fun () -> (this :> ILogStore).CompactUntil(index, term))

        member _.Reset(index: int64, term: int64) =
            lock sync (fun () ->
                entries.Clear()
                baseIndex <- index
                baseTerm <- term
                durable <- index
                journal.Add(sprintf "reset %d" index))

        member _.Dispose() = ()

/// A hard-state store in memory: Save waits at its gate, then the state is durable.
type private FakeHardState(journal: Journal, gate: Gate) =
    let mutable durable: HardState = { Term = 0L; VotedFor = None }

    /// The durable hard state.
    member _.Durable = durable

    interface IHardStateStore with
        member _.Load() = Unchecked.defaultof<HardState>

        member _.Save(state: HardState) =
            gate.Pass()
            durable <- state
            journal.Add(sprintf "hard t%d" state.Term)

        member _.Dispose() = ()

/// A state machine that only records what it is asked to apply; it checks, at the moment of each apply, that the
/// entry is durable in the log.
type private FakeStateMachine(journal: Journal, log: FakeLog, violations: ConcurrentQueue<string>) =
    let mutable applied = 0L

    member _.Restore(index: int64) = applied <- index

    member private _.Record(index: int64) =
        if index > log.DurableIndex then
            violations.Enqueue(sprintf "applied %d while only %d was durable" index log.DurableIndex)
        applied <- index
        journal.Add(sprintf "apply %d" index)

    interface IStateMachine with
        member _.AppliedIndex = applied
        member this.Skip(index: int64, _term: int64) = this.Record index

        member this.Apply(index: int64, _term: int64, _command: LogCommand, change: byref<Skiff.Change>) =
            this.Record index
            change <- null
            LogResult.Applied CommandResult.Done

        member _.Get(_key: string) = null
        member _.ListKeys(_prefix: string, _startAfter: string, _limit: int) = [||] :> IReadOnlyList<string>
        member _.GetPrefixes(_startAfter: string, _limit: int) = [||] :> IReadOnlyList<string>
        member _.Dispose() = ()

/// A snapshot store whose Install takes a while (so that a reset or reply that does not wait for it shows).
type private FakeSnapshots(journal: Journal, sm: FakeStateMachine) =
    interface ISnapshotStore with
        member _.Latest = Unchecked.defaultof<SnapshotMeta>

        member _.Take(term: int64, configuration: Configuration) =
            let index = (sm :> IStateMachine).AppliedIndex
            journal.Add(sprintf "snapshot %d" index)
            { Index = index; Term = term; Configuration = configuration }

        member _.OpenLatest() = Unchecked.defaultof<_> // no snapshot to send (a null Nullable)
        member _.BeginStaging() = failwith "not used by these tests"

        member _.Install(staged: string, meta: SnapshotMeta) =
            Thread.Sleep 200
            sm.Restore meta.Index
            journal.Add(sprintf "install %s %d" staged meta.Index)

        member _.Dispose() = ()

let private me = Guid("00000000-0000-0000-0000-0000000000a1")
let private leader = Guid("00000000-0000-0000-0000-0000000000a2")
let private third = Guid("00000000-0000-0000-0000-0000000000a3")

let private config =
    { Members =
        Map.ofList
            [ for id, port in [ me, 1; leader, 2; third, 3 ] -> id, { Id = id; Address = sprintf "127.0.0.1:%d" port; Voter = true } ] }

/// One follower interpreted by a real NodeRuntime over the fakes. `onSend` sees every message as it leaves.
type private Node(onSend: Journal -> FakeLog -> FakeHardState -> Envelope -> unit) =
    let journal = Journal()
    let hardGate = Gate()
    let flushGate = Gate()
    let violations = ConcurrentQueue<string>()
    let log = new FakeLog(journal, flushGate, Gate())
    let hard = new FakeHardState(journal, hardGate)
    let sm = new FakeStateMachine(journal, log, violations)
    let snapshots = new FakeSnapshots(journal, sm)
    let send (e: Envelope) = onSend journal log hard e
    let runtime =
        // An hour-long tick: no election timer fires during a test, so only the events posted here happen.
        new NodeRuntime(
            me,
            log,
            hard,
            snapshots,
            sm,
            TimeSpan.FromHours 1.0,
            16,
            16,
            Action<Envelope> send,
            Action<Guid, int64, SnapshotMeta>(fun _ _ _ -> ())
        )
    do runtime.Start(Start.fresh me Options.defaults 1UL config)

    member _.Journal = journal
    member _.HardGate = hardGate
    member _.FlushGate = flushGate
    member _.Violations = List.ofSeq violations
    member _.Receive(m: Message) = runtime.Post(Event.Receive { From = leader; To = me; Message = m })

    interface IDisposable with
        member _.Dispose() =
            hardGate.Open()
            flushGate.Open()
            runtime.DisposeAsync().AsTask().Wait()

/// Waits up to 10 s for `condition`.
let private eventually (what: string) (condition: unit -> bool) =
    let deadline = DateTime.UtcNow.AddSeconds 10.0
    while not (condition ()) && DateTime.UtcNow < deadline do
        Thread.Sleep 10
    Expect.isTrue (condition ()) what

/// Long enough for a runtime that does not wait to have sent already.
let private settle () = Thread.Sleep 300

let private describe (e: Envelope) =
    match e.Message with
    | Message.VoteReply r -> sprintf "send VoteReply t%d %b" r.Term r.Granted
    | Message.AppendReply r -> sprintf "send AppendReply t%d %b match %d" r.Term r.Success r.MatchIndex
    | Message.SnapshotReply r -> sprintf "send SnapshotReply t%d %d" r.Term r.MatchIndex
    | m -> sprintf "send %A" m

let tests =
    testList
        "Runtime.InterpreterContract"
        [ testCase "a vote leaves only once the hard state that records it is durable"
          <| fun () ->
              let sentEarly = ConcurrentQueue<string>()
              let onSend (journal: Journal) _ (hard: FakeHardState) (e: Envelope) =
                  match e.Message with
                  | Message.VoteReply r when r.Granted && hard.Durable.VotedFor <> Some leader ->
                      sentEarly.Enqueue(sprintf "granted in t%d while the durable vote was %A" r.Term hard.Durable)
                  | _ -> ()
                  journal.Add(describe e)
              use node = new Node(onSend)
              node.HardGate.Close()
              node.Receive(
                  Message.Vote { Term = 5L; Candidate = leader; LastLogIndex = 0L; LastLogTerm = 0L; PreVote = false; Transfer = false }
              )
              settle ()
              Expect.equal (node.Journal.IndexOf "send VoteReply") -1 "no answer while the vote is not durable"
              node.HardGate.Open()
              eventually "the vote is answered once durable" (fun () -> node.Journal.IndexOf "send VoteReply t5 true" >= 0)
              Expect.isLessThan (node.Journal.IndexOf "hard t5") (node.Journal.IndexOf "send VoteReply") "hard state, then the answer"
              Expect.isEmpty (List.ofSeq sentEarly) "the vote sent was durable"

          testCase "an append is acknowledged and applied only once its entries are durable, and only up to the commit"
          <| fun () ->
              let claimedEarly = ConcurrentQueue<string>()
              let onSend (journal: Journal) (log: FakeLog) _ (e: Envelope) =
                  match e.Message with
                  | Message.AppendReply r when r.Success && r.MatchIndex > log.DurableIndex ->
                      claimedEarly.Enqueue(sprintf "claimed %d while %d was durable" r.MatchIndex log.DurableIndex)
                  | _ -> ()
                  journal.Add(describe e)
              use node = new Node(onSend)
              node.FlushGate.Close()
              let entries = [ for i in 1L .. 3L -> { Index = i; Term = 1L; Payload = Payload.Noop } ]
              node.Receive(
                  Message.Append
                      { Term = 1L; Leader = leader; PrevLogIndex = 0L; PrevLogTerm = 0L; Entries = entries; LeaderCommit = 2L; Round = 1L }
              )
              settle ()
              let lines = node.Journal.Lines
              Expect.isFalse (lines |> List.exists (fun l -> l.StartsWith "apply")) "nothing applied before the entries are durable"
              Expect.isFalse
                  (lines |> List.exists (fun l -> l.StartsWith "send AppendReply" && not (l.EndsWith "match 0")))
                  "nothing claimed before the entries are durable"
              node.FlushGate.Open()
              eventually "the entries are acknowledged once durable" (fun () ->
                  node.Journal.IndexOf "send AppendReply t1 true match 3" >= 0)
              eventually "the committed entries are applied" (fun () -> node.Journal.IndexOf "apply 2" >= 0)
              settle ()
              Expect.isLessThan
                  (node.Journal.IndexOf "flush 3")
                  (node.Journal.IndexOf "send AppendReply t1 true match 3")
                  "flush, then the claim"
              Expect.isLessThan (node.Journal.IndexOf "flush 3") (node.Journal.IndexOf "apply 1") "flush, then apply"
              Expect.equal (node.Journal.IndexOf "apply 3") -1 "the entry past the leader's commit is not applied"
              Expect.isEmpty (List.ofSeq claimedEarly) "every claim was durable"
              Expect.isEmpty node.Violations "every applied entry was durable"

          testCase "a log compaction under way holds up neither the storage writer nor the appends queued after it"
          <| fun () ->
              let journal = Journal()
              let compactGate = Gate()
              let log = new FakeLog(journal, Gate(), compactGate)
              let hard = new FakeHardState(journal, Gate())
              let fatal = ConcurrentQueue<exn>()
              let writer = new StorageWriter(log, hard, Action<Event>(ignore), Action<exn>(fatal.Enqueue))
              let entry i = { Index = i; Term = 1L; Payload = Payload.Noop }
              let within (t: Tasks.Task) = t.Wait(TimeSpan.FromSeconds 10.0)
              try
                  Expect.isTrue (within (writer.Append([ entry 1L; entry 2L ], 0L))) "the first entries are durable"
                  compactGate.Close()
                  let compaction = writer.Compact 2L
                  // The old writer waited for the compaction, and so did every append behind it.
                  Expect.isTrue
                      (within (writer.Append([ entry 3L ], 0L)))
                      "an append queued after the compaction is durable while it is held"
                  Expect.isFalse compaction.IsCompleted "the compaction is still held at its gate"
                  compactGate.Open()
                  Expect.isTrue (within compaction) "the compaction completes once let go"
                  Expect.isGreaterThanOrEqual (journal.IndexOf "compact 2") 0 "and it compacted"
                  Expect.isTrue (within (writer.Append([ entry 4L ], 0L))) "appends go on after it"
                  Expect.isEmpty (List.ofSeq fatal) "no storage failure"
              finally
                  compactGate.Open()
                  (writer :> IAsyncDisposable).DisposeAsync().AsTask().Wait()

          testCase "an installed snapshot replaces the state machine, then the log, then the reply leaves"
          <| fun () ->
              let onSend (journal: Journal) _ _ (e: Envelope) = journal.Add(describe e)
              use node = new Node(onSend)
              let meta = { Index = 10L; Term = 1L; Configuration = config }
              node.Receive(Message.Snapshot { Term = 1L; Leader = leader; Meta = meta; Staged = "staged-1" })
              eventually "the snapshot is acknowledged" (fun () -> node.Journal.IndexOf "send SnapshotReply t1 10" >= 0)
              let install = node.Journal.IndexOf "install staged-1 10"
              let reset = node.Journal.IndexOf "reset 10"
              let reply = node.Journal.IndexOf "send SnapshotReply t1 10"
              Expect.isGreaterThanOrEqual install 0 (sprintf "installed: %A" node.Journal.Lines)
              Expect.isLessThan install reset "the state machine is replaced before the log is reset"
              Expect.isLessThan reset reply "the log is reset before the reply leaves" ]
