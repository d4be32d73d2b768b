namespace Skiff.Core

/// The reducer's view of its own log. It deliberately does not hold the whole log: only the term boundaries (first
/// index of every term, enough to answer "what term is entry i?" for any stored index) and a bounded window of recent
/// entries. Older entries live only in storage and are fetched with Effect.LoadEntries.
type LogView =
    { /// First index still held in storage; everything before it has been compacted into a snapshot.
      FirstIndex: LogIndex
      /// Index of the newest entry (FirstIndex - 1 when no entries are stored).
      LastIndex: LogIndex
      /// (first index, term) of every term in [FirstIndex - 1, LastIndex], newest first. The oldest pair marks
      /// index FirstIndex - 1 (the snapshot's last entry, or 0 with term 0 for an empty log).
      Boundaries: (LogIndex * Term) list
      /// First index held in Window; the window is the contiguous range [WindowStart, LastIndex].
      WindowStart: LogIndex
      /// Recent entries kept in memory, by index.
      Window: Map<LogIndex, Entry>
      /// Highest index known to be durable on this node (from Event.Persisted).
      Persisted: LogIndex }

/// Queries and updates of a LogView. All functions are total: out-of-range questions answer None or nothing.
[<RequireQualifiedAccess>]
module LogView =
    /// An empty log whose last compacted entry is `baseIndex` with `baseTerm` (0, 0 for a brand-new node).
    let empty (baseIndex: LogIndex) (baseTerm: Term) : LogView =
        { FirstIndex = baseIndex + 1L
          LastIndex = baseIndex
          Boundaries = [ baseIndex, baseTerm ]
          WindowStart = baseIndex + 1L
          Window = Map.empty
          Persisted = baseIndex }

    /// The term of entry `i`, if this node still knows it (i in [FirstIndex - 1, LastIndex]).
    let termAt (i: LogIndex) (log: LogView) : Term option =
        if i < log.FirstIndex - 1L || i > log.LastIndex then None
        else log.Boundaries |> List.tryFind (fun (start, _) -> start <= i) |> Option.map snd

    /// The term of the newest entry.
    let lastTerm (log: LogView) : Term =
        match log.Boundaries with
        | (_, t) :: _ -> t
        | [] -> 0L

    /// The first index of term `t` in this log (never below FirstIndex), if the log holds entries of that term.
    let firstIndexOfTerm (t: Term) (log: LogView) : LogIndex option =
        log.Boundaries
        |> List.tryFind (fun (_, term) -> term = t)
        |> Option.map (fun (start, _) -> max start log.FirstIndex)

    /// The last index of term `t` in this log, if the log holds entries of that term (used by a leader to skip a
    /// whole conflicting term at once).
    let lastIndexOfTerm (t: Term) (log: LogView) : LogIndex option =
        let rec go newerStart bounds =
            match bounds with
            | (start, term) :: rest ->
                if term = t then Some(min log.LastIndex (newerStart - 1L))
                elif term < t then None
                else go start rest
            | [] -> None
        go (log.LastIndex + 1L) log.Boundaries

    /// The in-memory entry at `i`, if it is in the window.
    let tryEntry (i: LogIndex) (log: LogView) : Entry option = Map.tryFind i log.Window

    /// A rough size of an entry on the wire, for batching.
    let entrySize (e: Entry) : int =
        24
        + (match e.Payload with
           | Payload.Noop -> 0
           | Payload.Command bytes -> (match box bytes with | null -> 0 | _ -> bytes.Length)
           | Payload.Config c -> 64 * c.Members.Count)

    /// Entries [from, upTo] from the window, cut at maxCount entries and roughly maxBytes (at least one entry).
    /// None if any of them has left the window (the caller must load them from storage).
    let slice (from: LogIndex) (upTo: LogIndex) (maxCount: int) (maxBytes: int) (log: LogView) : Entry list option =
        if from > upTo then Some []
        elif from < log.WindowStart || upTo > log.LastIndex then None
        else
            let rec take i count bytes acc =
                if i > upTo || count >= maxCount then List.rev acc
                else
                    match Map.tryFind i log.Window with
                    | None -> List.rev acc
                    | Some e ->
                        let size = entrySize e
                        if count > 0 && bytes + size > maxBytes then List.rev acc
                        else take (i + 1L) (count + 1) (bytes + size) (e :: acc)
            Some(take from 0 0 [])

    /// Removes entries from the front of the window until it holds at most `windowSize` entries.
    let private trimWindow (windowSize: int) (log: LogView) : LogView =
        let mutable w = log.Window
        let mutable start = log.WindowStart
        while log.LastIndex - start + 1L > int64 windowSize do
            w <- Map.remove start w
            start <- start + 1L
        { log with Window = w; WindowStart = start }

    /// Appends entries that directly follow LastIndex (entries that do not are ignored, to stay total).
    let append (windowSize: int) (entries: Entry list) (log: LogView) : LogView =
        let step (l: LogView) (e: Entry) =
            if e.Index <> l.LastIndex + 1L then l
            else
                let bounds =
                    match l.Boundaries with
                    | (_, t) :: _ when t = e.Term -> l.Boundaries
                    | bs -> (e.Index, e.Term) :: bs
                { l with
                    LastIndex = e.Index
                    Boundaries = bounds
                    Window = Map.add e.Index e l.Window }
        entries |> List.fold step log |> trimWindow windowSize

    /// Discards entries at and after `i` (a conflict with the leader). Never discards compacted history.
    let truncateFrom (i: LogIndex) (log: LogView) : LogView =
        if i > log.LastIndex || i < log.FirstIndex then log
        else
            let mutable w = log.Window
            for k in max i log.WindowStart .. log.LastIndex do
                w <- Map.remove k w
            { log with
                LastIndex = i - 1L
                Boundaries = log.Boundaries |> List.filter (fun (start, _) -> start < i)
                Window = w
                WindowStart = min log.WindowStart i
                Persisted = min log.Persisted (i - 1L) }

    /// Forgets stored entries up to and including `upTo` (they are in a snapshot and compacted in storage).
    let compact (upTo: LogIndex) (log: LogView) : LogView =
        if upTo < log.FirstIndex || upTo > log.LastIndex then log
        else
            match termAt upTo log with
            | None -> log
            | Some t ->
                let newer = log.Boundaries |> List.filter (fun (start, _) -> start > upTo)
                let mutable w = log.Window
                for k in log.WindowStart .. upTo do
                    w <- Map.remove k w
                { log with
                    FirstIndex = upTo + 1L
                    Boundaries = newer @ [ upTo, t ]
                    Window = w
                    WindowStart = max log.WindowStart (upTo + 1L) }

    /// Marks entries up to `index` durable, provided entry `index` still has `term` (a late acknowledgement for
    /// entries that were since truncated must not count).
    let persisted (index: LogIndex) (term: Term) (log: LogView) : LogView =
        match termAt index log with
        | Some t when t = term && index > log.Persisted -> { log with Persisted = index }
        | _ -> log

    /// Builds a view from what storage holds: the first stored index, the term of the entry before it, the last
    /// index, the first index of each term after FirstIndex - 1 (ascending or not), and some recent entries.
    let create
        (windowSize: int)
        (firstIndex: LogIndex)
        (baseTerm: Term)
        (lastIndex: LogIndex)
        (boundaries: (LogIndex * Term) list)
        (recent: Entry list)
        : LogView =
        let firstIndex = max 1L firstIndex
        let lastIndex = max (firstIndex - 1L) lastIndex
        let bounds =
            boundaries
            |> List.filter (fun (start, _) -> start >= firstIndex && start <= lastIndex)
            |> List.sortByDescending fst
            |> List.distinctBy fst
        let allBounds = bounds @ [ firstIndex - 1L, baseTerm ]
        let recent =
            recent
            |> List.filter (fun e -> e.Index >= firstIndex && e.Index <= lastIndex)
            |> List.sortBy (fun e -> e.Index)
            |> List.distinctBy (fun e -> e.Index)
        // Only a contiguous run ending at lastIndex can form the window.
        let rec contiguousSuffix (acc: Entry list) (expected: LogIndex) (rev: Entry list) =
            match rev with
            | e :: rest when e.Index = expected -> contiguousSuffix (e :: acc) (expected - 1L) rest
            | _ -> acc
        let window = contiguousSuffix [] lastIndex (List.rev recent)
        let start =
            match window with
            | e :: _ -> e.Index
            | [] -> lastIndex + 1L
        let log =
            { FirstIndex = firstIndex
              LastIndex = lastIndex
              Boundaries = allBounds
              WindowStart = start
              Window = window |> List.map (fun e -> e.Index, e) |> Map.ofList
              Persisted = lastIndex }
        trimWindow windowSize log
