/// Crash consistency of the write-ahead log beyond SIGKILL (issue #16): a random workload of appends, suffix
/// replacements, compactions and resets runs on the recording file system, which "loses power" at a random
/// operation, keeping what was synced plus a random subset of what was not (see RecordingFileSystem). The log is
/// reopened on what survived and must hold every acknowledged write, nothing out of order, and open without repair.
/// Seeded: prints the seed; SKIFF_SEED replays the same workload and crash choices (how appends group into one sync
/// depends on thread timing, so a replay is close, not byte-identical). SKIFF_WAL_CRASH_SOAK=n runs n crashes instead
/// of the default 400 (about two seconds).
module Skiff.Integration.WalCrashTests

open System
open System.Collections.Generic
open System.Threading.Tasks
open Expecto
open Skiff.Net.Storage
open Skiff.Integration.StorageSupport
open Skiff.Integration.RecordingFileSystem

/// The log's state as its records define it: base (index, term) and the terms after it.
type private Model =
    { mutable Base: int64
      mutable BaseTerm: int64
      Terms: List<int64> }

    member m.Last = m.Base + int64 m.Terms.Count
    member m.TermAt i = if i = m.Base then m.BaseTerm else m.Terms[int (i - m.Base - 1L)]
    member m.Copy() = { Base = m.Base; BaseTerm = m.BaseTerm; Terms = List m.Terms }

type private Record =
    | Entry of index: int64 * term: int64
    | Base of index: int64 * term: int64
    | Reset of index: int64 * term: int64

/// What the workload has declared committed, as a Raft node would know it: the commit index and the term of every
/// entry up to it (since the last reset). Appends carry the commit index as their hint (and NoteCommit records it
/// alone); nothing at or below it is ever replaced, as in Raft. A recovered hint must cover only such entries.
type private Commits =
    { mutable Index: int64
      Terms: Dictionary<int64, int64> }

    /// Declares entries up to `upTo` of `m` committed.
    member c.Advance(m: Model, upTo: int64) =
        for i in max (c.Index + 1L) (m.Base + 1L) .. upTo do
            c.Terms[i] <- m.TermAt i
        c.Index <- max c.Index upTo

    /// Forgets what lies above `upTo`.
    member c.Forget(upTo: int64) =
        if c.Index > upTo then
            for i in upTo + 1L .. c.Index do
                c.Terms.Remove i |> ignore
            c.Index <- upTo

    /// After a crash: keeps only what the recovered log holds as declared. Entries lost before they were durable
    /// are forgotten, and so is anything declared over an append the power cut before it reached the log.
    member c.Reconcile(got: Model) =
        let mutable upTo = min c.Index got.Last
        for i in max (got.Base + 1L) 1L .. upTo do
            if upTo >= i then
                match c.Terms.TryGetValue i with
                | true, t when t = got.TermAt i -> ()
                | _ -> upTo <- i - 1L
        c.Forget upTo

let private applyRecord (m: Model) (r: Record) =
    match r with
    | Entry(i, t) ->
        let keep = int (i - m.Base - 1L)
        m.Terms.RemoveRange(keep, m.Terms.Count - keep)
        m.Terms.Add t
    | Base(b, t) when b < m.Last ->
        m.Terms.RemoveRange(0, int (b - m.Base))
        m.Base <- b
        m.BaseTerm <- t
    | Base(b, t)
    | Reset(b, t) ->
        m.Terms.Clear()
        m.Base <- b
        m.BaseTerm <- t

/// Small segments, so lives cross segment boundaries and compactions delete segments; preallocated (zero-filled)
/// or not, chosen per life (a log may switch: segments keep how they were made).
let private optionsFor (preallocate: bool) =
    RaftLogOptions(SegmentSizeBits = 12, KeepTail = 0L, MinFreeDiskBytes = Nullable 0L, PreallocateSegments = preallocate)
let private dir = "/wal"

/// What a reopened log holds, as a model (payloads checked against the entries' (index, term) on the way).
let private observe (log: RaftLog) (ctx: string) =
    let m =
        { Base = log.FirstIndex - 1L
          BaseTerm =
            (match log.TermAt(log.FirstIndex - 1L) |> Option.ofNullable with
             | Some t -> t
             | None -> -1L)
          Terms = List() }
    for e in readAll log do
        if not (e.Payload.AsSpan().SequenceEqual(ReadOnlySpan(payloadOf e.Index e.Term))) then
            failtestf "%s: payload of entry %d (term %d) is not its own" ctx e.Index e.Term
        m.Terms.Add e.Term
    Expect.equal m.Last log.LastIndex (ctx + ": last index and entries read")
    m

let private same (a: Model) (b: Model) = a.Base = b.Base && a.BaseTerm = b.BaseTerm && List.ofSeq a.Terms = List.ofSeq b.Terms

let private show (m: Model) =
    sprintf "base %d (term %d), %d entries, terms %A" m.Base m.BaseTerm m.Terms.Count (List.ofSeq m.Terms |> List.truncate 40)

/// One life of the log: ops on `fs` from `start` until the crash; returns the file system that survived and the
/// model it must match: every record of an acknowledged op, then any prefix of the records of the others.
let private life (rng: Random) (fs: RecordingFs) (start: Model) (commits: Commits) (ctx: string) =
    // A quarter of the lives lose power while the log is being opened (recovery cuts torn tails and deletes
    // leftover segments: that must be crash-safe too); the others once it is open.
    let duringOpen = rng.Next 4 = 0
    if duringOpen then
        fs.CrashAfter(rng.Next(1, 20), rng)
    let opened =
        try
            Some(RaftLog.Open(dir, optionsFor (rng.Next 2 = 0), fs))
        with _ when fs.Crashed.IsSome ->
            None
    match opened with
    | None -> fs.Crashed.Value, start.Copy(), [], 0, 0
    | Some log ->
        let pending = start.Copy() // the state once every op so far is written
        let ops = List<Record list * Task>()
        let mutable term = max 1L (if pending.Terms.Count > 0 then pending.Terms[pending.Terms.Count - 1] else pending.BaseTerm)
        if not duringOpen then
            fs.CrashAfter(rng.Next(1, 80), rng)
        let submit (records: Record list) (t: Task) =
            ops.Add((records, t))
            for r in records do
                applyRecord pending r
        try
            try
                for _ in 1..200 do
                    match rng.Next 20 with
                    | 0 ->
                        // Compaction: its base comes from the durable view, so let everything land first.
                        Task.WhenAll(ops |> Seq.map snd).Wait()
                        if pending.Last > pending.Base then
                            let s = pending.Base + 1L + int64 (rng.Next(int (pending.Last - pending.Base)))
                            submit [ Base(s, pending.TermAt s) ] (log.CompactUntil s)
                    | 1 ->
                        // A snapshot is committed state: never below the commit index.
                        let s = max commits.Index (pending.Base + int64 (rng.Next(int (pending.Last - pending.Base) + 3)))
                        term <- term + 1L
                        let keep = s <= pending.Last && rng.Next 2 = 0
                        let t = if keep then pending.TermAt s else term
                        submit [ (if keep then Base(s, t) else Reset(s, t)) ] (log.ResetToSnapshot(s, t, keep))
                        if keep then
                            commits.Advance(pending, s)
                        else
                            // Everything up to the snapshot is committed; the entries it replaced are not known
                            // here. (Declarations below it stay: if the reset is lost, older marks still count.)
                            commits.Index <- s
                    | 3 when commits.Index < pending.Last ->
                        // A commit index learned without an append (a heartbeat), recorded on its own.
                        let c = commits.Index + 1L + int64 (rng.Next(int (pending.Last - commits.Index)))
                        commits.Advance(pending, c)
                        log.NoteCommit c
                    | 2 -> Task.WhenAll(ops |> Seq.map snd).Wait()
                    | _ ->
                        if rng.Next 5 = 0 then
                            term <- term + 1L
                        // A suffix replacement starts above the commit index (committed entries are never replaced).
                        let lowest = max pending.Base commits.Index + 1L
                        let first =
                            if rng.Next 4 = 0 && lowest <= pending.Last then
                                lowest + int64 (rng.Next(int (pending.Last - lowest) + 2))
                            else
                                pending.Last + 1L
                        let n = rng.Next(1, 9)
                        let records = [ for i in first .. first + int64 n - 1L -> Entry(i, term) ]
                        for r in records do
                            applyRecord pending r
                        // The commit index after this append, somewhere up to its last entry; now and then past it
                        // (the log clamps the mark to its last entry).
                        let commit = commits.Index + int64 (rng.Next(int (pending.Last - commits.Index) + 1))
                        commits.Advance(pending, commit)
                        let hint = if commit = pending.Last && rng.Next 4 = 0 then commit + 100L else commit
                        ops.Add(
                            (records, log.AppendAsync(entries first (first + int64 n - 1L) term, hint, Threading.CancellationToken.None))
                        )
            with _ ->
                () // the power went out under an op
            (try
                Task.WhenAll(ops |> Seq.map snd).Wait()
             with _ ->
                 ())
        finally
            (try
                log.Dispose()
             with _ ->
                 ())
        let survived =
            match fs.Crashed with
            | Some c -> c
            | None -> fs.Crash rng
        // Acknowledged ops form a prefix (the writer completes them in order); the first unacknowledged op and all
        // after it may have left any prefix of their records.
        let acked = ops |> Seq.takeWhile (fun (_, t) -> t.IsCompletedSuccessfully) |> Seq.length
        let mustHave = start.Copy()
        for (records, _) in Seq.take acked ops do
            for r in records do
                applyRecord mustHave r
        let rest =
            [ for (records, _) in Seq.skip acked ops do
                  yield! records ]
        survived, mustHave, rest, acked, ops.Count

/// The recovered commit hint covers only entries the workload declared committed, with the terms they had then.
let private checkHint (hint: int64) (got: Model) (commits: Commits) (ctx: string) =
    if hint < 0L || hint > got.Last then
        failtestf "%s: recovered commit hint %d outside the log (last %d)" ctx hint got.Last
    for i in got.Base + 1L .. hint do
        match commits.Terms.TryGetValue i with
        | true, t when t = got.TermAt i -> ()
        | true, t -> failtestf "%s: the hint %d covers entry %d of term %d, committed with term %d" ctx hint i (got.TermAt i) t
        | _ -> failtestf "%s: the hint %d covers entry %d (term %d), never declared committed" ctx hint i (got.TermAt i)

let private run (seed: int) (crashes: int) =
    let rng = Random seed
    let commits = { Index = 0L; Terms = Dictionary() }
    let mutable hinted = 0
    let mutable fs = RecordingFs()
    let mutable state = { Base = 0L; BaseTerm = 0L; Terms = List() }
    let mutable ackedOps = 0
    let mutable writtenOps = 0
    let mutable lostRecords = 0
    for crash in 1..crashes do
        let ctx = sprintf "seed %d crash %d" seed crash
        let survived, mustHave, rest, acked, total = life rng fs state commits ctx
        ackedOps <- ackedOps + acked
        writtenOps <- writtenOps + total
        let reopened =
            try
                RaftLog.Open(dir, optionsFor false, survived)
            with e ->
                failtestf "%s: the log does not open after the crash: %s\nfiles: %s" ctx e.Message (survived.Describe())
        let got, hint =
            try
                observe reopened ctx, reopened.RecoveredCommitHint
            finally
                reopened.Dispose()
        // Find the prefix of the unacknowledged records that the log holds.
        let candidate = mustHave.Copy()
        let mutable found = same candidate got
        let mutable k = 0
        while not found && k < rest.Length do
            applyRecord candidate rest[k]
            k <- k + 1
            found <- same candidate got
        if not found then
            failtestf
                "%s: after the crash the log holds %s\nbut every acknowledged write gives %s\nand no prefix of the %d unacknowledged records explains it\nfiles: %s"
                ctx
                (show got)
                (show mustHave)
                rest.Length
                (survived.Describe())
        lostRecords <- lostRecords + rest.Length - k
        checkHint hint got commits ctx
        if hint > got.Base then
            hinted <- hinted + 1
        // Entries declared committed but lost with the crash (never durable) are forgotten, as the node would.
        commits.Reconcile got
        // The next life starts from what survived, on a file system that forgot the crash's history.
        fs <- survived
        state <- got
    printfn
        "wal crash test: seed=%d crashes=%d ops=%d acknowledged=%d unacknowledged records lost=%d recovered commit hints=%d (replay with SKIFF_SEED=%d)"
        seed
        crashes
        writtenOps
        ackedOps
        lostRecords
        hinted
        seed
    Expect.isGreaterThan ackedOps 0 "some ops were acknowledged"
    Expect.isGreaterThan hinted 0 "some lives recovered a commit hint"

/// The hard-state file on the same recording file system: creation (a temporary file renamed over), then saves
/// written in place in alternating slots; power is lost at a random operation, creation included. What reopens must
/// be the node id of any open that completed, and the last acknowledged save or the one under way.
let private hardStateRun (seed: int) (crashes: int) =
    let rng = Random seed
    let mutable fs = RecordingFs()
    let path = "/data/hardstate"
    let mutable nodeId: Guid option = None
    let mutable acked: Skiff.Core.HardState = { Term = 0L; VotedFor = None }
    let mutable lost = 0
    let mutable opened = 0
    for crash in 1..crashes do
        let ctx = sprintf "seed %d crash %d" seed crash
        // A quarter of the lives start a new node, so that power is lost while the file is being created too.
        if rng.Next 4 = 0 then
            fs <- RecordingFs()
            nodeId <- None
            acked <- { Term = 0L; VotedFor = None }
        fs.CrashAfter(rng.Next(1, 12), rng)
        let mutable inFlight = None
        (try
            use hs = HardStateStore.Open(path, fs)
            match nodeId with
            | Some id when id <> hs.NodeId -> failtestf "%s: node id changed from %O to %O" ctx id hs.NodeId
            | _ -> nodeId <- Some hs.NodeId
            opened <- opened + 1
            if hs.State <> acked && Some hs.State <> inFlight then
                failtestf "%s: opened with %A, acknowledged %A" ctx hs.State acked
            acked <- hs.State
            while true do
                let next: Skiff.Core.HardState =
                    { Term = acked.Term + int64 (rng.Next 2); VotedFor = (if rng.Next 2 = 0 then None else Some(Guid.NewGuid())) }
                inFlight <- Some next
                hs.Save next
                acked <- next
         with
         | :? Expecto.AssertException -> reraise ()
         | _ when fs.Crashed.IsSome -> ())
        let survived = fs.Crashed.Value
        let reopened =
            try
                HardStateStore.Open(path, survived)
            with e ->
                failtestf "%s: the hard state does not open after the crash: %s\nfiles: %s" ctx e.Message (survived.Describe())
        use _ = reopened
        match nodeId with
        | Some id when id <> reopened.NodeId -> failtestf "%s: node id changed from %O to %O after the crash" ctx id reopened.NodeId
        | _ -> ()
        if reopened.State <> acked then
            if Some reopened.State = inFlight then
                acked <- reopened.State
            else
                failtestf "%s: after the crash the hard state is %A, acknowledged %A (in flight %A)" ctx reopened.State acked inFlight
        else if inFlight.IsSome && inFlight <> Some acked then
            lost <- lost + 1
        fs <- survived
    printfn
        "hard state crash test: seed=%d crashes=%d opens=%d in-flight saves lost=%d (replay with SKIFF_SEED=%d)"
        seed
        crashes
        opened
        lost
        seed
    Expect.isGreaterThan opened 0 "the file was opened (so created) before some crashes"

let tests =
    testList
        "wal crash consistency"
        [ testCase "hard state: power loss at random moments keeps the acknowledged state and the node id"
          <| fun () ->
              let seed = seedFromEnv ()
              printfn "hard state crash test: seed=%d (replay with SKIFF_SEED=%d)" seed seed
              hardStateRun seed 2000
          testCase "power loss at random moments keeps every acknowledged write and opens without repair"
          <| fun () ->
              let seed = seedFromEnv ()
              let crashes = intFromEnv "SKIFF_WAL_CRASH_SOAK" (fun () -> 400)
              printfn "wal crash test: seed=%d (replay with SKIFF_SEED=%d; SKIFF_WAL_CRASH_SOAK=n for n crashes)" seed seed
              run seed crashes ]
