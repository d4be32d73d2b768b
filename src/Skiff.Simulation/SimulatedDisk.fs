/// The simulator's storage: a node's log as a contiguous run of entries after a base, and the items of the disk
/// queue through which writes become durable in order, after a simulated delay.
namespace Skiff.Simulation

open Skiff.Core

/// A log as the simulator keeps it for one node: a contiguous run of entries after a base (the snapshot point).
/// The simulator keeps two per node: the durable log (what storage holds) and the written log (what the reducer
/// has asked to store so far, durable or not), which mirrors the reducer's in-memory log.
type LogStore() =
    let entries = ResizeArray<Entry>()
    let mutable baseIndex = 0L
    let mutable baseTerm = 0L
    let mutable commitHint = 0L

    /// The index just before the first entry (the snapshot index; 0 for a log that was never compacted).
    member _.BaseIndex = baseIndex
    /// The term of the entry at BaseIndex.
    member _.BaseTerm = baseTerm
    /// The index of the last entry (BaseIndex if there are none).
    member _.LastIndex = baseIndex + int64 entries.Count

    /// The commit index recorded with the entries, as the runtime's write-ahead log records it (0 if none).
    member _.CommitHint = commitHint

    /// Records that the node knew entries up to `commit` committed when it wrote what this log holds (clamped to
    /// the last entry, as the write-ahead log clamps it).
    member this.NoteCommit(commit: LogIndex) = commitHint <- max commitHint (min commit this.LastIndex)

    /// The term of the entry at `index`, if this log knows it (BaseIndex counts).
    member this.TermAt(index: LogIndex) : Term voption =
        if index = baseIndex then
            ValueSome baseTerm
        elif index > baseIndex && index <= this.LastIndex then
            ValueSome entries[int (index - baseIndex - 1L)].Term
        else
            ValueNone

    /// The entry at `index`, if held.
    member this.EntryAt(index: LogIndex) : Entry voption =
        if index > baseIndex && index <= this.LastIndex then
            ValueSome entries[int (index - baseIndex - 1L)]
        else
            ValueNone

    /// Entries [from, to] if all are held.
    member this.Range(from: LogIndex, ``to``: LogIndex) : Entry list option =
        if from <= baseIndex || ``to`` > this.LastIndex then
            None
        else
            Some [ for i in from..``to`` -> entries[int (i - baseIndex - 1L)] ]

    /// Every entry held, in order.
    member _.Entries: Entry list = List.ofSeq entries

    /// Writes entries: discards held entries at or after the first one's index, then appends. Entries at or before
    /// BaseIndex are skipped (they are in the snapshot). Error if the entries are not contiguous or would leave a
    /// gap after the last held entry.
    member this.Write(batch: Entry list) : Result<unit, string> =
        let batch = batch |> List.filter (fun e -> e.Index > baseIndex)
        match batch with
        | [] -> Ok()
        | first :: _ ->
            let contiguous = batch |> List.pairwise |> List.forall (fun (a, b) -> b.Index = a.Index + 1L)
            if not contiguous then
                Error "entries to persist are not contiguous"
            elif first.Index > this.LastIndex + 1L then
                Error(sprintf "entries to persist start at %d, after a gap (last held entry %d)" first.Index this.LastIndex)
            elif batch |> List.exists (fun e -> e.Index <= commitHint && this.TermAt e.Index <> ValueSome e.Term) then
                // An entry the recorded commit index covers is committed: replacing it would mean the hint lied.
                Error(sprintf "entries to persist replace a committed entry (recorded commit index %d)" commitHint)
            else
                let keep = int (first.Index - baseIndex - 1L)
                entries.RemoveRange(keep, entries.Count - keep)
                entries.AddRange batch
                Ok()

    /// Drops entries up to and including `upTo`, which becomes the base; its term is taken from the log if held,
    /// else `termIfUnknown`.
    member this.Compact(upTo: LogIndex, termIfUnknown: Term) =
        if upTo > baseIndex then
            let term =
                match this.TermAt upTo with
                | ValueSome t -> t
                | ValueNone -> termIfUnknown
            let drop = int (min (upTo - baseIndex) (int64 entries.Count))
            entries.RemoveRange(0, drop)
            baseIndex <- upTo
            baseTerm <- term

    /// Empties the log and sets its base (after installing a snapshot).
    member _.Reset(index: LogIndex, term: Term) =
        entries.Clear()
        baseIndex <- index
        baseTerm <- term
        commitHint <- index

    /// Makes this log a copy of another.
    member _.CopyFrom(other: LogStore) =
        entries.Clear()
        entries.AddRange other.Entries
        baseIndex <- other.BaseIndex
        baseTerm <- other.BaseTerm
        commitHint <- other.CommitHint


/// An effect waiting in a node's disk queue until the tick it becomes durable (or, for an effect that is not a
/// write, until the writes before it are durable).
/// `CommitHint` is the node's commit index when the effect was emitted: written with PersistEntries, as the
/// runtime's storage writer records it in the write-ahead log.
type internal DiskItem = { ReadyAt: int64; Effect: Effect; CommitHint: LogIndex }
