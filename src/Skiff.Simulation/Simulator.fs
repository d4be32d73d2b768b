/// The deterministic cluster simulator: an interpreter of the reducer's effects for a whole cluster in one process,
/// with a simulated network, per-node durable storage, clients and an operator, driven by a fault schedule. The
/// same reducer, options and schedule give the same run, bit for bit: one seeded Prng decides everything, nothing
/// depends on time or on hash-table iteration order.
///
/// How effects are carried out (docs/architecture.md): each node has a FIFO "disk" queue. Persist effects
/// (PersistHardState, PersistEntries, InstallSnapshot) become durable after 0 .. SlowDisk ticks, in order; every
/// other effect waits in the queue behind them, except a Send with no persist before it in its own effect list,
/// which leaves at once. PersistEntries is answered with Event.Persisted, LoadEntries (from the durable log) with
/// Event.EntriesLoaded, TakeSnapshot with Event.SnapshotTaken; those events are fed back right after the step.
/// A crash loses the reducer state, the queue (so writes not yet durable), the state machine and staged snapshots;
/// a restart rebuilds the node with `Reducer.Init` from its durable store, the state machine from its snapshot.
///
/// The parts: World.fs (what they share), Interpreter.fs (the effects of one node), Workload.fs (the clients),
/// Operator.fs (membership changes), and here the run itself: faults at their ticks, the tick loop, healing and
/// the final checks.
module Skiff.Simulation.Simulator

open System
open Skiff.Core
open Skiff.Simulation.Linearizability

/// Sensible defaults for property tests.
let defaultSettings: Settings =
    { Clients = 3
      Keys = 2
      OpPercent = 30
      ClientTimeout = 40
      TailTicks = 30
      LeaderTicks = 200
      LivenessTicks = 400
      // Off by default: the property needs CheckQuorum, and the reducer without it runs with these settings.
      // tests/PropertyTests/PartialLivenessTests.fs turns it on (200).
      PartialLivenessTicks = 0
      TickSkipPercent = 10
      MaxNodes = 7
      Trace = false
      Sessions = false
      Dedup = true
      SessionTimeout = 1_000_000
      ResendTicks = 12 }


/// Stable node ids: slot k gets 00000000-0000-0000-0000-<k+1>.
let nodeId (slot: int) : NodeId = Slot.id slot

/// The short name used in descriptions: "n1" for slot 0.
let nodeName (slot: int) : string = Slot.name slot

/// One run: the faults at their ticks, the tick loop, healing and the final checks. The interpreter, the clients
/// and the operator each own their part of the run's state; the world holds what they share.
type private Run<'S>(reducer: Reducer<'S>, options: Settings, schedule: Schedule, driver: ClientDriver option) =
    let world = World<'S>(reducer, options, schedule.Seed)
    let prng = world.Prng
    let net = world.Net
    let inv = world.Invariants
    let nodes = world.Nodes
    let slotOf = world.SlotOf
    let log f = world.Log f
    let failed () = world.Failed
    let slot k = world.Wrap k
    // The interpreter reports client-facing effects to the workload and the operator, which step nodes through the
    // interpreter: the cycle is closed through this cell once all three exist.
    let stepper = ref (fun (_: Node<'S>) (_: Event) -> ())
    let workload = Workload<'S>(world, (fun n e -> stepper.Value n e), driver)
    let operator = Operator<'S>(world, fun n e -> stepper.Value n e)
    let interpreter =
        Interpreter<'S>(
            world,
            { new ClientPort<'S> with
                member _.Accepted(node, rid, index, term) = workload.Accepted(node, rid, index, term)
                // Request ids are unique: a rejection that is no client's may be the operator's.
                member _.Rejected(node, rid, why) =
                    if not (workload.Rejected(node, rid, why)) then
                        operator.Rejected(node, rid, why)
                member _.ReadReady(node, rids, index) = workload.ReadReady(node, rids, index)
                member _.Completed(node, rid) = operator.Completed(node, rid)
                member _.Applied(node, entry, result) = workload.Applied(node, entry, result)
                member _.StateAdvanced node = workload.StateAdvanced node }
        )
    do stepper.Value <- fun n e -> interpreter.Step(n, e)
    let mutable leaderAfterHeal = 0
    let mutable convergedAfterHeal = 0
    let mutable unchecked = false

    let applyFault (fault: Fault) =
        log (fun () -> sprintf "fault: %A" fault)
        match fault with
        | Fault.Partition side ->
            let left = side |> List.map slot |> Set.ofList
            for a in nodes do
                for b in nodes do
                    if left.Contains a.Slot <> left.Contains b.Slot then
                        net.Block(a.Id, b.Id)
        | Fault.Isolate k ->
            let x = nodes[slot k]
            for n in nodes do
                if n.Slot <> x.Slot then
                    net.Block(x.Id, n.Id)
                    net.Block(n.Id, x.Id)
        | Fault.OneWay(a, b) -> net.Block(nodes[slot a].Id, nodes[slot b].Id)
        | Fault.Heal -> net.HealAll()
        | Fault.Crash k -> interpreter.Crash nodes[slot k]
        | Fault.Restart k ->
            let n = nodes[slot k]
            if not n.Alive then
                interpreter.Boot n
        | Fault.Loss p -> net.LossPercent <- max 0 (min 60 p)
        | Fault.Duplicate p -> net.DuplicatePercent <- max 0 (min 60 p)
        | Fault.Delay d -> net.MaxDelay <- max 1 (min 20 d)
        | Fault.SlowDisk d -> world.DiskMax <- max 0 (min 10 d)
        | Fault.AddNode ->
            if nodes.Count < options.MaxNodes && not operator.Busy then
                let node = world.AddNode Configuration.Empty
                interpreter.Boot node
                operator.Begin(ConfigChange.AddServer(node.Id, node.Name))
        | Fault.RemoveNode k ->
            if not operator.Busy then
                operator.Begin(ConfigChange.RemoveServer nodes[slot k].Id)
        | Fault.UpdateNode k ->
            if not operator.Busy then
                let node = nodes[slot k]
                operator.Begin(ConfigChange.UpdateServer(node.Id, sprintf "%s@%d" node.Name world.Now))
        | Fault.Transfer k ->
            match world.Leader() with
            | Some leader -> interpreter.Step(leader, Event.TransferLeadership(world.NewRid(), nodes[slot k].Id))
            | None -> ()

    let partial = PartialLiveness(max 1 options.PartialLivenessTicks)

    let checkPartialLiveness () =
        let view =
            [| for n in nodes ->
                   match n.State with
                   | ValueSome s when n.Alive ->
                       { Id = n.Id
                         Alive = true
                         Config = reducer.Configuration s
                         CommittingLeader =
                           reducer.Role s = Role.Leader && n.Written.TermAt(reducer.CommitIndex s) = ValueSome(reducer.Term s) }
                   | _ -> { Id = n.Id; Alive = false; Config = Configuration.Empty; CommittingLeader = false } |]
        // A network as good as after healing (Execute): lossless, short delays, fast disks.
        let good = net.LossPercent = 0 && net.MaxDelay <= 3 && world.DiskMax <= 2
        match partial.Observe(world.Now, good, view, fun a b -> net.Connected(nodes[a].Id, nodes[b].Id)) with
        | Some d ->
            let roles =
                [ for n in nodes ->
                      match n.State with
                      | ValueSome s when n.Alive ->
                          sprintf "%s %A term %d commit %d" n.Name (reducer.Role s) (reducer.Term s) (reducer.CommitIndex s)
                      | _ -> sprintf "%s down" n.Name ]
            inv.Liveness(
                LivenessProperty.PartialFailure,
                options.PartialLivenessTicks,
                sprintf "under partial failure: %s: %s" d (String.concat "; " roles)
            )
        | None -> ()

    let tick () =
        world.Now <- world.Now + 1L
        inv.Tick <- world.Now
        // 1. messages due
        let mutable go = true
        while go && not (failed ()) do
            match net.TryReceive world.Now with
            | Some m ->
                match slotOf.TryGetValue m.Envelope.To with
                | true, s ->
                    let node = nodes[s]
                    if node.Alive then
                        match m.Envelope.Message, m.Attachment with
                        | Message.Snapshot request, Some kv -> node.Staged[request.Staged] <- (request.Meta, kv)
                        | _ -> ()
                        interpreter.Step(node, Event.Receive m.Envelope)
                | _ -> ()
            | None -> go <- false
        // 2. disks
        for node in nodes do
            if not (failed ()) then
                interpreter.RunDisk node
        // 3. clients and operator
        workload.Run()
        operator.Run()
        // 4. clocks
        for node in nodes do
            if not (failed ()) && node.Alive && not (prng.Chance options.TickSkipPercent) then
                interpreter.Step(node, Event.Tick)
        // 5. liveness under partial failure
        if options.PartialLivenessTicks > 0 && not (failed ()) then
            checkPartialLiveness ()

    let describeNodes () =
        [ for n in nodes ->
              match n.State with
              | ValueSome s when n.Alive ->
                  sprintf
                      "%s %A term %d commit %d last %d applied %d"
                      n.Name
                      (reducer.Role s)
                      (reducer.Term s)
                      (reducer.CommitIndex s)
                      n.Written.LastIndex
                      n.Applied
              | _ -> sprintf "%s down" n.Name ]
        |> String.concat "; "

    let converged () =
        match world.Leader() with
        | None -> false
        | Some leader ->
            let state = leader.State.Value
            let last = leader.Written.LastIndex
            let members = (reducer.Configuration state).Members
            reducer.CommitIndex state = last
            && leader.Applied = last
            && nodes
               |> Seq.forall (fun n ->
                   not (members.ContainsKey n.Id)
                   || (n.Alive && n.Applied = last && KvModel.same n.Kv.Data leader.Kv.Data && n.Kv.Sessions = leader.Kv.Sessions))

    member _.Execute() : RunResult =
        let initial =
            { Members =
                Map.ofList [ for s in 0 .. schedule.Nodes - 1 -> Slot.id s, { Id = Slot.id s; Address = Slot.name s; Voter = true } ] }
        for _ in 1 .. schedule.Nodes do
            world.AddNode initial |> ignore
        for node in nodes do
            if not (failed ()) then
                interpreter.Boot node
        // Faults, at their ticks.
        let mutable pending = schedule.Steps
        let mutable wait =
            match pending with
            | s :: _ -> max 0 s.After
            | [] -> 0
        let mutable tail = options.TailTicks
        while not (failed ()) && (not pending.IsEmpty || tail > 0) do
            while not (failed ()) && not pending.IsEmpty && wait = 0 do
                applyFault pending.Head.Fault
                pending <- pending.Tail
                wait <-
                    match pending with
                    | s :: _ -> max 0 s.After
                    | [] -> 0
            if pending.IsEmpty then tail <- tail - 1 else wait <- wait - 1
            if not (failed ()) then
                tick ()
        // Heal everything; a leader must emerge and every member converge.
        if not (failed ()) then
            log (fun () -> "healing")
            net.HealAll()
            net.LossPercent <- 0
            net.DuplicatePercent <- 0
            net.MaxDelay <- min net.MaxDelay 3
            world.DiskMax <- min world.DiskMax 2
            workload.Stop()
            for node in nodes do
                if not node.Alive && not (failed ()) then
                    interpreter.Boot node
            let healedAt = world.Now
            let mutable leaderSeen = false
            let mutable done' = false
            while not (failed ()) && not done' do
                if not leaderSeen && (world.Leader()).IsSome then
                    leaderSeen <- true
                    leaderAfterHeal <- int (world.Now - healedAt)
                if converged () then
                    done' <- true
                    convergedAfterHeal <- int (world.Now - healedAt)
                elif not leaderSeen && world.Now - healedAt >= int64 options.LeaderTicks then
                    inv.Liveness(
                        LivenessProperty.LeaderAfterHealing,
                        options.LeaderTicks,
                        sprintf "no leader %d ticks after healing: %s" options.LeaderTicks (describeNodes ())
                    )
                elif world.Now - healedAt >= int64 options.LivenessTicks then
                    inv.Liveness(
                        LivenessProperty.ConvergenceAfterHealing,
                        options.LivenessTicks,
                        sprintf "%d ticks after healing, no leader with every member caught up: %s" options.LivenessTicks (describeNodes ())
                    )
                else
                    tick ()
            // An acknowledged write is never lost: the converged state includes every one.
            if not (failed ()) then
                match world.Leader() with
                | Some leader when inv.MaxAcknowledged > leader.Applied ->
                    inv.Safety(
                        SafetyProperty.AcknowledgedWriteLost,
                        sprintf
                            "writes were acknowledged up to index %d but the converged cluster has applied only %d"
                            inv.MaxAcknowledged
                            leader.Applied
                    )
                | _ -> ()
        // Outstanding operations have an unknown outcome.
        let history = workload.Finish()
        if not (failed ()) then
            match Linearizability.check history with
            | NotLinearizable(key, explanation) -> inv.Fail(ViolationKind.NotLinearizable(key, explanation))
            | Unknown _ -> unchecked <- true
            | Linearizable -> ()
        { Schedule = schedule
          Violation = inv.Violation
          History = history
          Stats =
            { Ticks = world.Now
              Steps = inv.Step
              Messages = net.Sent
              Dropped = net.Dropped
              Completed = workload.Completed
              TimedOut = workload.TimedOut
              Leaders = interpreter.LeaderTerms
              Crashes = interpreter.Crashes
              SnapshotsInstalled = interpreter.Installs
              ConfigChanges = operator.Changes
              AddressUpdates = operator.Updates
              LeaderAfterHeal = leaderAfterHeal
              ConvergedAfterHeal = convergedAfterHeal
              Unchecked = unchecked
              Committed = inv.MaxCommitted
              PartialLivenessWorst = partial.Worst
              PartialLivenessChecked = partial.AppliedTicks }
          Trace = world.Tracer.Lines }

/// Runs one schedule to completion (or to the first violation) and checks the client history for
/// linearizability. Deterministic: the same reducer, settings and schedule give the same result.
let run (reducer: Reducer<'S>) (settings: Settings) (schedule: Schedule) : RunResult = Run<'S>(reducer, settings, schedule, None).Execute()

/// `run` with the clients driven by `driver` (a user's workload, see ModelCheck.fs) instead of random operations.
let internal runDriven (reducer: Reducer<'S>) (settings: Settings) (driver: ClientDriver) (schedule: Schedule) : RunResult =
    Run<'S>(reducer, settings, schedule, Some driver).Execute()

/// Reducer options that make a short simulated run exercise everything: fast elections and heartbeats, a small
/// in-memory window (LoadEntries), frequent snapshots and compaction, small appends, quick learner promotion.
let simulationOptions: Options =
    { Options.defaults with
        HeartbeatTicks = 2
        ElectionTicksMin = 10
        ElectionTicksMax = 20
        MaxInflight = 4
        MaxEntriesPerAppend = 8
        WindowSize = 16
        SnapshotThreshold = 20L
        CompactionTail = 5L
        PromotionLag = 4L }

/// Skiff's Raft reducer (Raft.init / Raft.step) as the simulator drives it, with the given reducer options.
let raft (options: Options) : Reducer<State> =
    { Init =
        fun boot ->
            let baseIndex, baseTerm = boot.LogBase
            let stored: Stored =
                { HardState = boot.HardState
                  Snapshot = boot.Snapshot
                  Entries = boot.Entries
                  BaseIndex = baseIndex
                  BaseTerm = baseTerm
                  Applied = boot.Applied
                  CommitHint = boot.CommitHint
                  Bootstrap = boot.Bootstrap }
            Raft.init (Start.ofStore boot.Id options boot.Seed stored)
      Step = Raft.step
      Role = Raft.role
      Term = Raft.term
      Leader = Raft.leader
      CommitIndex = Raft.commitIndex
      Configuration = Raft.configuration }

/// A multi-line report of a run: the schedule (replayable with Schedule.parse), the violation, the counters.
let describe (result: RunResult) : string =
    [ yield "schedule: " + Schedule.format result.Schedule
      match result.Violation with
      | Some v -> yield "VIOLATION " + string v
      | None -> yield "no violation"
      yield sprintf "stats: %A" result.Stats ]
    |> String.concat Environment.NewLine
