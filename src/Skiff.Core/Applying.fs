namespace Skiff.Core

/// Handing committed entries to the state machine (Effect.Apply), in order, once they are also durable here;
/// entries that have left the in-memory window are loaded from storage first.
[<RequireQualifiedAccess>]
module Applying =
    /// Hands committed, locally persisted entries to the state machine, loading them if they left the window.
    let rec apply (s: State) : State =
        let upTo = min s.Commit s.Log.Persisted
        if upTo <= s.Applied || s.ApplyLoading then
            s
        else
            let from = s.Applied + 1L
            if from < s.Log.WindowStart then
                let until = min upTo (s.Log.WindowStart - 1L)
                { s with Standing = { s.Standing with ApplyLoading = true } }
                |> State.emit (Effect.LoadEntries(LoadPurpose.Apply, from, until))
            else
                match LogView.slice from upTo System.Int32.MaxValue System.Int32.MaxValue s.Log with
                | Some(_ :: _ as entries) ->
                    let last = (List.last entries).Index
                    { s with Applied = last; AppliedBytes = s.AppliedBytes + LogView.sizeOf entries; Out = Effect.Apply entries :: s.Out }
                | _ -> s

    /// Entries loaded for applying: apply the valid contiguous prefix, then continue.
    let entriesLoadedForApply (entries: Entry list) (s: State) : State =
        if not s.ApplyLoading then
            s
        else
            let s = { s with Standing = { s.Standing with ApplyLoading = false } }
            let upTo = min s.Commit s.Log.Persisted
            let rec take expected (es: Entry list) acc =
                match es with
                | e :: rest when e.Index = expected && e.Index <= upTo -> take (expected + 1L) rest (e :: acc)
                | _ -> List.rev acc
            match take (s.Applied + 1L) entries [] with
            | [] -> s
            | good ->
                let last = (List.last good).Index
                { s with Applied = last; AppliedBytes = s.AppliedBytes + LogView.sizeOf good; Out = Effect.Apply good :: s.Out }
                |> apply

    /// Lets the window go of the entries no one still needs from memory: those handed to the state machine, durable
    /// here and, on a leader, matched by every peer. A later need (a peer falling back, a new leader probing) loads
    /// them from storage, as it does for anything older than the window.
    let releaseWindow (s: State) : State =
        let local = min (s.Applied + 1L) (s.Log.Persisted + 1L)
        let from =
            match s.Leading with
            | Some lead -> lead.Progress |> PeerMap.fold (fun m _ (pr: Progress) -> min m (pr.Match + 1L)) local
            | None -> local
        let log = LogView.release from s.Log
        if obj.ReferenceEquals(log, s.Log) then s else { s with Log = log }
