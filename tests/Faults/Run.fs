/// One fault run: start five members, run the clients and the nemesis for a while, heal, check the verdict.
module Skiff.Faults.Run

open System
open System.Collections.Generic
open System.IO
open System.Threading
open System.Threading.Tasks
open Skiff
open Skiff.Core
open Skiff.Simulation
open Skiff.Simulation.Linearizability
open Skiff.Net.Runtime
open Skiff.Faults.Cluster
open Skiff.Faults.Workload

/// Every member's port: 9400 inside the private namespace; a free one when running on the host's loopback.
let mutable Port = 9400
let MemberCount = 5

/// Where a run keeps its data and where failing runs leave their evidence.
let workRoot = Path.Combine(Path.GetTempPath(), sprintf "skiff-faults-%d" Environment.ProcessId)
let resultsRoot =
    Path.Combine(Path.GetTempPath(), (if Netns.isRoot () then "skiff-faults-results" else "skiff-faults-results-" + Environment.UserName))

let private ensureWorkRoot () =
    Directory.CreateDirectory workRoot |> ignore
    // Members run under their own uids: they must reach their directories.
    Netns.run "chmod" [ "755"; workRoot ] 10_000 |> ignore

/// A started cluster of five members (and the timeline its events go to).
type Started =
    { Members: Member[]
      Timeline: Timeline
      Dir: string }

    member this.Dispose() =
        for m in this.Members do
            (m :> IDisposable).Dispose()

/// Firewall table (re)created for the member uids: inside the namespace only.
let resetFirewall () =
    if Netns.canCut () then
        Netns.nft "table inet skiff_faults {}\ndelete table inet skiff_faults\n"
        Netns.initFirewall [ for s in 1 .. MemberCount + 1 -> 47000 + s ]

let private separateUids () = Netns.canCut ()

/// Waits until the leader counts `n` voters among the members and every member knows the same leader.
let waitVoters (members: Member[]) (n: int) (ms: int) : bool =
    (waitFor ms (fun () ->
        match Cluster.leader (List.ofArray members) with
        | Some(_, s) when (s.Members |> Seq.filter (fun m -> m.Voter) |> Seq.length) = n -> Some()
        | _ -> None))
        .IsSome

/// Starts five members: 1 founds the cluster, 2–5 join one after another.
let startCluster (name: string) (clockFiles: string[] option) (serveFlags: string list) : Started =
    ensureWorkRoot ()
    let dir = Path.Combine(workRoot, name)
    if Directory.Exists dir then
        Directory.Delete(dir, true)
    Directory.CreateDirectory dir |> ignore
    Netns.run "chmod" [ "755"; dir ] 10_000 |> ignore
    let timeline = Timeline()
    resetFirewall ()
    let members =
        [| for s in 1..MemberCount -> new Member(s, Port, dir, timeline, separateUids (), Environment.ProcessId, serveFlags) |]
    let started = { Members = members; Timeline = timeline; Dir = dir }
    let clock slot =
        match clockFiles, Netns.libfaketime () with
        | Some files, Some lib -> Some(lib, files[slot - 1])
        | _ -> None
    try
        members[0].Start([], clock 1)
        if not (waitVoters members[0..0] 1 30_000) then
            failwith "member 1 did not become leader within 30 s"
        for s in 2..MemberCount do
            members[s - 1].Start([ "127.0.0.1" ], clock s)
            if not (waitVoters members[0 .. s - 1] s 30_000) then
                failwithf "member %d did not join as a voter within 30 s" s
        timeline.Add "cluster of five voters up"
        started
    with _ ->
        started.Dispose()
        reraise ()

/// The statuses of all members once they agree: same leader and term, every member applied up to the leader's
/// commit index, five voters at our five addresses. None if that does not happen within `ms`.
let converge (members: Member[]) (ms: int) : string option =
    let addresses = members |> Array.map (fun m -> m.Address) |> Set.ofArray
    let last = ref ""
    let result =
        waitFor ms (fun () ->
            let statuses = members |> Array.map (fun m -> m, m.Status 1000)
            last.Value <-
                statuses
                |> Array.map (fun (m, s) ->
                    match s with
                    | Some s ->
                        sprintf
                            "member %d: %s term %d commit %d applied %d leader %s voters %d"
                            m.Slot
                            s.Role
                            s.Term
                            s.CommitIndex
                            s.AppliedIndex
                            s.LeaderAddress
                            (s.Members |> Seq.filter (fun x -> x.Voter) |> Seq.length)
                    | None -> sprintf "member %d: no answer" m.Slot)
                |> String.concat "\n"
            if statuses |> Array.exists (fun (_, s) -> s.IsNone) then
                None
            else
                let ss = statuses |> Array.map (snd >> Option.get)
                let leaders = ss |> Array.filter (fun s -> s.Role = "Leader")
                match leaders with
                | [| l |] ->
                    let voters = l.Members |> Seq.filter (fun m -> m.Voter) |> Seq.map (fun m -> m.Address) |> Set.ofSeq
                    if
                        voters = addresses
                        && ss |> Array.forall (fun s -> s.LeaderId = l.Id && s.Term = l.Term && s.AppliedIndex = l.CommitIndex)
                    then
                        Some last.Value
                    else
                        None
                | _ -> None)
    match result with
    | Some _ -> None
    | None -> Some last.Value

/// Everything a run found.
type Verdict = { Passed: bool; Report: string; Folder: string option }

type Settings =
    {
        Name: string
        Seed: int
        Duration: TimeSpan
        Profile: Nemesis.Profile
        Workload: Workload.Options
        /// Extra `skiff serve` flags for every member (the hidden test hooks of the bug-catching runs).
        ServeFlags: string list
    }

let private ms (us: int64) = float us / 1000.0

/// Reads every change a member holds, from index 1 up to the entry of `markerKey`: (index, key, value).
let replay (m: Member) (markerKey: string) (timeoutMs: int) : Result<(int64 * string * string option) list, string> =
    use client = new SkiffGrpcClient([ m.Address ])
    use cts = new CancellationTokenSource(timeoutMs)
    let events = ResizeArray()
    try
        let e = client.WatchAsync("", 1L, cts.Token).GetAsyncEnumerator(cts.Token)
        let mutable fin = false
        while not fin && e.MoveNextAsync().AsTask().GetAwaiter().GetResult() do
            let ev = e.Current
            if ev.Key = markerKey then
                fin <- true
            else
                events.Add(ev.Index, ev.Key, (if ev.Value.HasValue then Some(Text.Encoding.UTF8.GetString ev.Value.Value.Span) else None))
        e.DisposeAsync().AsTask().GetAwaiter().GetResult()
        if fin then Ok(List.ofSeq events) else Error "the watch ended before the marker"
    with e ->
        Error(sprintf "replay failed after %d changes: %s" events.Count e.Message)

/// One complete run. Never throws for a finding; throws only if the harness itself cannot work.
let execute (s: Settings) : Verdict =
    let random = Random s.Seed
    let useClock =
        s.Profile.Kinds |> List.contains Nemesis.ClockJump
        && (Netns.libfaketime ()).IsSome
        && Environment.GetEnvironmentVariable "SKIFF_FAULTS_NO_FAKETIME" <> "1"
    let name = sprintf "%s-seed%d" s.Name s.Seed
    ensureWorkRoot ()
    let clockFiles =
        if useClock then
            let files = [| for i in 1..MemberCount -> Path.Combine(workRoot, sprintf "%s-clock%d" name i) |]
            for f in files do
                File.WriteAllText(f, "+0")
            Some files
        else
            None
    let findings = ResizeArray<string>()
    let notes = ResizeArray<string>()
    printfn
        "fault run %s: seed %d (replay with SKIFF_FAULTS_SEED=%d), %.0f s, faults: %s%s"
        s.Name
        s.Seed
        s.Seed
        s.Duration.TotalSeconds
        s.Profile.Name
        (match Netns.mode.Value with
         | Netns.Private ns -> sprintf ", network namespace %s" ns
         | Netns.HostLoopback why -> sprintf ", ON HOST LOOPBACK WITHOUT PARTITIONS (%s)" why)
    let cluster =
        try
            startCluster name clockFiles s.ServeFlags
        with e ->
            // Keep the members' logs of a cluster that would not start.
            let folder = Path.Combine(resultsRoot, sprintf "%s-%s-start" (DateTime.UtcNow.ToString "yyyyMMdd-HHmmss") name)
            Directory.CreateDirectory folder |> ignore
            let dir = Path.Combine(workRoot, name)
            if Directory.Exists dir then
                for log in Directory.GetFiles(dir, "member*.log") do
                    File.Copy(log, Path.Combine(folder, Path.GetFileName log), true)
            failwithf "the cluster did not start (%s); member logs in %s" e.Message folder
    let members = cluster.Members
    let timeline = cluster.Timeline
    let spare =
        if s.Profile.Kinds |> List.contains Nemesis.AddSixth then
            Some(new Member(MemberCount + 1, Port, cluster.Dir, timeline, separateUids (), Environment.ProcessId, s.ServeFlags))
        else
            None
    let nemesis = Nemesis.Nemesis(members, spare, timeline, random, clockFiles)
    let mutable history: Record list = []
    let mutable finalOps: Operation list = []
    let mutable workloadWindow = (0L, 0L)
    let mutable checkerText = ""
    try
        // The clients and the nemesis.
        use stop = new CancellationTokenSource()
        let start = now ()
        let until = start + int64 s.Duration.TotalMilliseconds * 1000L
        let targets () = members |> Array.filter (fun m -> m.Running) |> Array.map (fun m -> m.Slot)
        let clients = Workload.run s.Workload s.Seed members targets stop.Token
        let nemesisThread = Thread((fun () -> nemesis.Run(s.Profile, until, stop.Token)), IsBackground = true)
        nemesisThread.Start()
        while now () < until do
            Thread.Sleep 200
        stop.Cancel()
        nemesisThread.Join(30_000) |> ignore
        if not (clients.Wait(TimeSpan.FromSeconds 30.0)) then
            findings.Add "the clients did not stop within 30 s"
        history <- if clients.IsCompletedSuccessfully then clients.Result else []
        workloadWindow <- (start, now ())
        timeline.Add(sprintf "workload stopped: %d operations" history.Length)

        // Heal and converge.
        nemesis.HealAll()
        match converge members 45_000 with
        | Some last -> findings.Add(sprintf "the members did not converge within 45 s of healing:\n%s" last)
        | None -> timeline.Add "converged"

        // Final reads: linearizable through the leader (part of the history), stale from every member.
        match Cluster.leader (List.ofArray members) with
        | None -> findings.Add "no leader after healing"
        | Some(leader, _) ->
            use client = new SkiffGrpcClient([ leader.Address ])
            let finalValues = Dictionary<string, string option>()
            for key in keys do
                let invoked = now ()
                use cts = new CancellationTokenSource(5000)
                try
                    let v = client.GetAsync(key, ReadConsistency.Linearizable, cts.Token).GetAwaiter().GetResult()
                    let v = if isNull v then None else Some v
                    finalValues[key] <- Option.map text v
                    finalOps <-
                        finalOps
                        @ [ { Client = 0
                              Invoked = invoked
                              Action = Action.Get key
                              Completion = Completion.Returned(now (), Output.Value v) } ]
                with e ->
                    findings.Add(sprintf "final read of %s through leader %d failed: %s" key leader.Slot e.Message)
            for m in members do
                use mc = new SkiffGrpcClient([ m.Address ])
                for key in keys do
                    use cts = new CancellationTokenSource(5000)
                    try
                        let v = mc.GetAsync(key, ReadConsistency.Stale, cts.Token).GetAwaiter().GetResult()
                        let v = if isNull v then None else Some(text v)
                        match finalValues.TryGetValue key with
                        | true, expected when expected <> v ->
                            findings.Add(sprintf "member %d holds %s = %A after convergence, the leader %A" m.Slot key v expected)
                        | _ -> ()
                    with e ->
                        findings.Add(sprintf "stale read of %s on member %d failed: %s" key m.Slot e.Message)

            // Every change each member applied: the same on all, no value applied twice, every acknowledged write there.
            let marker = "zz-faults-marker"
            use cts = new CancellationTokenSource(5000)
            try
                client.InsertAsync(marker, bytes "end", cts.Token).GetAwaiter().GetResult() |> ignore
                Thread.Sleep 500
                let replays = members |> Array.map (fun m -> m, replay m marker 60_000)
                for m, r in replays do
                    match r with
                    // A long run outgrows the log (a snapshot every 100,000 entries compacts it): the replay checks
                    // then cannot run; that is a limit of the check, not a finding.
                    | Error e when e.Contains "compacted" ->
                        notes.Add(sprintf "member %d: no replay, its log is compacted: duplicate/lost-write checks skipped" m.Slot)
                    | Error e -> findings.Add(sprintf "member %d: %s" m.Slot e)
                    | Ok _ -> ()
                let ok =
                    replays
                    |> Array.choose (fun (m, r) ->
                        match r with
                        | Ok l -> Some(m, l)
                        | Error _ -> None)
                if ok.Length > 0 then
                    let m0, reference = ok[0]
                    for m, l in ok do
                        if l <> reference then
                            let firstDiff =
                                Seq.zip
                                    (Seq.append (Seq.map Some l) (Seq.initInfinite (fun _ -> None)))
                                    (Seq.append (Seq.map Some reference) (Seq.initInfinite (fun _ -> None)))
                                |> Seq.take (max l.Length reference.Length)
                                |> Seq.tryFind (fun (a, b) -> a <> b)
                            findings.Add(
                                sprintf
                                    "member %d applied a different sequence of changes than member %d (first difference: %A)"
                                    m.Slot
                                    m0.Slot
                                    firstDiff
                            )
                    let applied = reference |> List.choose (fun (i, k, v) -> v |> Option.map (fun v -> v, (i, k)))
                    let counts = applied |> List.countBy fst |> Map.ofList
                    for value, n in Map.toList counts do
                        if n > 1 then
                            let where = applied |> List.filter (fun (v, _) -> v = value) |> List.map snd
                            findings.Add(sprintf "DUPLICATE WRITE: value %s applied %d times (index, key): %A" value n where)
                    for r in history do
                        match r.Op.Action, r.Op.Completion with
                        | Action.Write(Command.Insert(_, v)), Completion.Returned _
                        | Action.Write(Command.CompareAndSwap(_, _, Some v)),
                          Completion.Returned(_, Output.Result(CommandResult.Swapped true)) ->
                            if not (counts.ContainsKey(text v)) then
                                findings.Add(sprintf "LOST WRITE: acknowledged %s never applied" (Workload.describe r))
                        | _ -> ()
                    notes.Add(sprintf "%d changes replayed from each member" reference.Length)
            with e ->
                findings.Add(sprintf "marker write failed: %s" e.Message)

        // Linearizability of everything the clients saw, plus the final reads.
        let ops = (history |> List.map (fun r -> r.Op)) @ finalOps
        let checkWatch = Diagnostics.Stopwatch.StartNew()
        let result = checkWith { MaxStepsPerKey = 20_000_000L } ops
        notes.Add(sprintf "linearizability check took %.1f s" checkWatch.Elapsed.TotalSeconds)
        match result with
        | Linearizable -> ()
        | Unknown keys -> findings.Add(sprintf "linearizability UNKNOWN: search budget exceeded on %s" (String.Join(", ", keys)))
        | NotLinearizable(key, explanation) ->
            checkerText <- Linearizability.describe result
            let tail = explanation.LongestLinearization |> List.rev |> List.truncate 8 |> List.rev
            findings.Add(
                [ yield
                      sprintf
                          "NOT LINEARIZABLE on key %A (%d operations on it; the full account is in checker.txt)"
                          key
                          explanation.Operations.Length
                  yield "the longest linearizable order found ends with:"
                  for op in tail do
                      yield "  " + Operation.describe op
                  match explanation.Stuck with
                  | Some op -> yield "and cannot be extended with: " + Operation.describe op
                  | None -> () ]
                |> String.concat "\n"
            )
    finally
        // Stop every member (SIGTERM, a clean exit expected), then look at exits and logs.
        for m in Array.append members (Option.toArray spare) do
            (try
                m.Stop()
             with e ->
                 findings.Add(sprintf "stopping member %d: %s" m.Slot e.Message))
        resetFirewall ()
        cluster.Dispose()
        spare |> Option.iter (fun m -> (m :> IDisposable).Dispose())
    for m in Array.append members (Option.toArray spare) do
        for u in m.Unexpected do
            findings.Add u
        for r in m.Remarks do
            notes.Add r
        for l in m.Suspicious |> List.truncate 5 do
            findings.Add("log: " + l)
    for p in nemesis.Problems do
        findings.Add("nemesis: " + p)
    if nemesis.Injected.IsEmpty then
        findings.Add "the nemesis injected no fault at all: this run proves nothing"

    // The report.
    let isWrite (r: Record) =
        match r.Op.Action with
        | Action.Write _ -> true
        | _ -> false
    let returned = history |> List.filter (fun r -> r.Op.Completion.IsReturned)
    let indeterminate = history |> List.filter (fun r -> r.Op.Completion.IsTimedOut)
    let writesDone = returned |> List.filter isWrite |> List.map (fun r -> r.Ended) |> List.sort
    let (t0, t1) = workloadWindow
    let longestGap, gapAt =
        let points = [ t0 ] @ writesDone @ [ t1 ]
        points
        |> List.pairwise
        |> List.map (fun (a, b) -> b - a, a)
        |> List.fold (fun (g, at) (g', at') -> if g' > g then (g', at') else (g, at)) (0L, t0)
    let kinds =
        history
        |> List.countBy (fun r ->
            match r.Op.Action with
            | Action.Get _ -> "get"
            | Action.Write(Command.Insert _) -> "put"
            | Action.Write(Command.Remove _) -> "delete"
            | Action.Write(Command.CompareAndSwap _) -> "cas")
    let report =
        [ sprintf "run %s, seed %d, %.0f s, faults: %s" s.Name s.Seed s.Duration.TotalSeconds s.Profile.Name
          sprintf
              "  operations: %d (%s); completed %d, indeterminate %d (writes %d, reads %d)"
              history.Length
              (kinds |> List.map (fun (k, n) -> sprintf "%s %d" k n) |> String.concat ", ")
              returned.Length
              indeterminate.Length
              (indeterminate |> List.filter isWrite |> List.length)
              (indeterminate |> List.filter (isWrite >> not) |> List.length)
          sprintf "  faults injected: %s" (nemesis.Injected |> List.map (fun (k, n) -> sprintf "%A %d" k n) |> String.concat ", ")
          sprintf "  longest time without a completed write: %.2f s (from %.3f s)" (float longestGap / 1e6) (float (gapAt - t0) / 1e6)
          for n in notes do
              "  " + n
          if findings.Count = 0 then
              "  verdict: PASS (linearizable, converged, no write lost or applied twice, no member exited by itself)"
          else
              sprintf "  verdict: FAIL, %d finding(s):" findings.Count
          for f in findings do
              "  - " + f.Replace("\n", "\n    ") ]
        |> String.concat "\n"
    let keep = Environment.GetEnvironmentVariable "SKIFF_FAULTS_KEEP" = "1"
    let folder =
        if findings.Count = 0 && not keep then
            (try
                Directory.Delete(cluster.Dir, true)
             with _ ->
                 ())
            None
        else
            let folder = Path.Combine(resultsRoot, sprintf "%s-%s" (DateTime.UtcNow.ToString "yyyyMMdd-HHmmss") name)
            Directory.CreateDirectory folder |> ignore
            File.WriteAllText(Path.Combine(folder, "report.txt"), report + "\n")
            File.WriteAllLines(
                Path.Combine(folder, "history.txt"),
                [ "# every operation by invocation; [invoked, completed] in µs since the harness started (the timeline shows seconds);"
                  "# 'timed out' = indeterminate: the write may or may not have taken effect" ]
                @ (history |> List.map Workload.describe)
                @ (finalOps |> List.map (fun o -> "final " + Operation.describe o))
            )
            File.WriteAllLines(
                Path.Combine(folder, "timeline.txt"),
                timeline.Lines
                @ [ for r in indeterminate -> sprintf "%s  indeterminate: %s" (showTime r.Op.Invoked) (Workload.describe r) ]
                |> List.sort
            )
            if checkerText <> "" then
                File.WriteAllText(Path.Combine(folder, "checker.txt"), checkerText + "\n")
            for m in Array.append members (Option.toArray spare) do
                if File.Exists m.LogPath then
                    File.Copy(m.LogPath, Path.Combine(folder, Path.GetFileName m.LogPath), true)
            (try
                Directory.Delete(cluster.Dir, true)
             with _ ->
                 ())
            Some folder
    let report =
        match folder with
        | Some f -> report + sprintf "\n  evidence (history, timeline, member logs): %s" f
        | None -> report
    printfn "%s" report
    { Passed = findings.Count = 0; Report = report; Folder = folder }
