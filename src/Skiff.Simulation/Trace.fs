/// The simulator's trace: one compact line per event, effect and notable moment, recorded only when
/// Settings.Trace is set (a failing schedule is replayed with it to see what happened).
namespace Skiff.Simulation

open System.Collections.Generic
open Skiff.Core

/// Compact renderings of the reducer's messages, events and effects; `name` turns a node id into "n1".
module internal Show =
    let showMessage (m: Message) =
        match m with
        | Message.Vote v ->
            sprintf
                "%s t%d last %d/%d%s"
                (if v.PreVote then "PreVote" else "Vote")
                v.Term
                v.LastLogIndex
                v.LastLogTerm
                (if v.Transfer then " transfer" else "")
        | Message.VoteReply v -> sprintf "%sReply t%d %b" (if v.PreVote then "PreVote" else "Vote") v.Term v.Granted
        | Message.Append a ->
            let range =
                match a.Entries with
                | [] -> ""
                | es -> sprintf " [%d..%d]" es.Head.Index (List.last es).Index
            sprintf "Append t%d prev %d/%d%s commit %d r%d" a.Term a.PrevLogIndex a.PrevLogTerm range a.LeaderCommit a.Round
        | Message.AppendReply r ->
            if r.Success then
                sprintf "AppendOk t%d match %d r%d" r.Term r.MatchIndex r.Round
            else
                sprintf "AppendNo t%d conflict %d/%A r%d" r.Term r.ConflictIndex r.ConflictTerm r.Round
        | Message.Snapshot s -> sprintf "Snapshot t%d %d/%d" s.Term s.Meta.Index s.Meta.Term
        | Message.SnapshotReply r -> sprintf "SnapshotReply t%d %d" r.Term r.MatchIndex
        | Message.TimeoutNow t -> sprintf "TimeoutNow t%d" t

    let range (es: Entry list) =
        match es with
        | [] -> "[]"
        | es -> sprintf "[%d..%d]" es.Head.Index (List.last es).Index

    let showEvent (name: NodeId -> string) (e: Event) =
        match e with
        | Event.Tick -> "Tick"
        | Event.Receive env -> sprintf "Receive %s from %s" (showMessage env.Message) (name env.From)
        | Event.Propose(id, _) -> sprintf "Propose #%d" id
        | Event.Read id -> sprintf "Read #%d" id
        | Event.ChangeConfig(id, c) -> sprintf "ChangeConfig #%d %A" id c
        | Event.TransferLeadership(id, t) -> sprintf "Transfer #%d to %s" id (name t)
        | Event.Persisted(i, t) -> sprintf "Persisted %d/%d" i t
        | Event.EntriesLoaded(p, es) -> sprintf "EntriesLoaded %A %s" p (range es)
        | Event.SnapshotTaken m -> sprintf "SnapshotTaken %d/%d" m.Index m.Term
        | Event.SnapshotWanted -> "SnapshotWanted"

    let showEffect (name: NodeId -> string) (e: Effect) =
        match e with
        | Effect.PersistHardState h ->
            sprintf
                "PersistHardState t%d %s"
                h.Term
                (match h.VotedFor with
                 | Some v -> name v
                 | None -> "-")
        | Effect.PersistEntries es -> "PersistEntries " + range es
        | Effect.Send env -> sprintf "Send %s to %s" (showMessage env.Message) (name env.To)
        | Effect.Apply es -> "Apply " + range es
        | Effect.LoadEntries(p, a, b) -> sprintf "LoadEntries %A %d..%d" p a b
        | Effect.Accepted(id, i, t) -> sprintf "Accepted #%d %d/%d" id i t
        | Effect.Reject(id, r) -> sprintf "Reject #%d %A" id r
        | Effect.ReadReady(ids, i) -> sprintf "ReadReady %A %d" ids i
        | Effect.Completed id -> sprintf "Completed #%d" id
        | Effect.TakeSnapshot m -> sprintf "TakeSnapshot %d" m.Index
        | Effect.CompactLog i -> sprintf "CompactLog %d" i
        | Effect.SendSnapshot(t, term, m) -> sprintf "SendSnapshot to %s t%d %d/%d" (name t) term m.Index m.Term
        | Effect.InstallSnapshot(st, m) -> sprintf "InstallSnapshot %s %d/%d" st m.Index m.Term
        | Effect.RoleChanged(r, t, l) ->
            sprintf
                "RoleChanged %A t%d %s"
                r
                t
                (match l with
                 | Some x -> name x
                 | None -> "-")
        | Effect.ConfigurationChanged c -> sprintf "ConfigurationChanged %d members" c.Members.Count

/// Collects trace lines, each stamped with the tick and the reducer step it happened at. When tracing is off,
/// `Log` does not even build the line: traces are expensive and property tests run thousands of schedules.
type internal Tracer(enabled: bool) =
    let lines = ResizeArray<string>()

    /// Whether lines are recorded.
    member _.Enabled = enabled

    /// Records the line `f` builds, stamped with the tick and step, if tracing is on.
    member _.Log(tick: int64, step: int64, f: unit -> string) =
        if enabled then
            lines.Add(sprintf "[t%d s%d] %s" tick step (f ()))

    /// The lines so far, oldest first.
    member _.Lines: string list = List.ofSeq lines
