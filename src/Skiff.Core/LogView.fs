namespace Skiff.Core

/// The reducer's view of its own log. It deliberately does not hold the whole log: only the term boundaries (first
/// index of every term, enough to answer "what term is entry i?" for any stored index) and a bounded window of recent
/// entries. Older entries live only in storage and are fetched with Effect.LoadEntries.
type LogView =
    {
        /// First index still held in storage; everything before it has been compacted into a snapshot.
        FirstIndex: LogIndex
        /// Index of the newest entry (FirstIndex - 1 when no entries are stored).
        LastIndex: LogIndex
        /// (first index, term) of every term in [FirstIndex - 1, LastIndex], newest first. The oldest pair marks
        /// index FirstIndex - 1 (the snapshot's last entry, or 0 with term 0 for an empty log).
        Boundaries: (LogIndex * Term) list
        /// First index held in Window; the window is the contiguous range [WindowStart, LastIndex].
        WindowStart: LogIndex
        /// Recent entries kept in memory: exactly [WindowStart, LastIndex].
        Window: EntryWindow
        /// Rough size of the entries in Window (as entrySize counts), to bound it in bytes as well as entries.
        WindowBytes: int64
        /// Highest index known to be durable on this node (from Event.Persisted).
        Persisted: LogIndex
    }

/// Queries and updates of a LogView. All functions are total: out-of-range questions answer None or nothing.
[<RequireQualifiedAccess>]
module LogView =
    /// An empty log whose last compacted entry is `baseIndex` with `baseTerm` (0, 0 for a brand-new node).
    let empty (baseIndex: LogIndex) (baseTerm: Term) : LogView =
        { FirstIndex = baseIndex + 1L
          LastIndex = baseIndex
          Boundaries = [ baseIndex, baseTerm ]
          WindowStart = baseIndex + 1L
          Window = EntryWindow.Empty(baseIndex + 1L)
          WindowBytes = 0L
          Persisted = baseIndex }

    /// The term of entry `i`, if this node still knows it (i in [FirstIndex - 1, LastIndex]). A value option:
    /// the hot paths ask this several times per step and must not allocate an answer each time.
    let tryTerm (i: LogIndex) (log: LogView) : Term voption =
        if i < log.FirstIndex - 1L || i > log.LastIndex then
            ValueNone
        else
            let rec go (bounds: (LogIndex * Term) list) =
                match bounds with
                | (start, t) :: rest -> if start <= i then ValueSome t else go rest
                | [] -> ValueNone
            go log.Boundaries

    /// The term of entry `i`, if this node still knows it (i in [FirstIndex - 1, LastIndex]).
    let termAt (i: LogIndex) (log: LogView) : Term option = tryTerm i log |> ValueOption.toOption

    /// Whether entry `i` is known and has term `t` (termAt i = Some t, without allocating).
    let hasTerm (i: LogIndex) (t: Term) (log: LogView) : bool =
        match tryTerm i log with
        | ValueSome x -> x = t
        | ValueNone -> false

    /// The term of the newest entry.
    let lastTerm (log: LogView) : Term =
        match log.Boundaries with
        | (_, t) :: _ -> t
        | [] -> 0L

    /// Whether a log ending at (`lastTerm`, `lastIndex`) is at least as up-to-date as this one (Raft §5.4.1).
    let isAtLeastAsUpToDate (otherLastTerm: Term) (otherLastIndex: LogIndex) (log: LogView) : bool =
        let mine = lastTerm log
        otherLastTerm > mine || (otherLastTerm = mine && otherLastIndex >= log.LastIndex)

    /// Whether a log ending at (`lastTerm`, `lastIndex`) is strictly more up-to-date than this one.
    let isAhead (otherLastTerm: Term) (otherLastIndex: LogIndex) (log: LogView) : bool =
        let mine = lastTerm log
        otherLastTerm > mine || (otherLastTerm = mine && otherLastIndex > log.LastIndex)

    /// The first index of term `t` in this log (never below FirstIndex), if the log holds entries of that term.
    let firstIndexOfTerm (t: Term) (log: LogView) : LogIndex option =
        log.Boundaries |> List.tryFind (fun (_, term) -> term = t) |> Option.map (fun (start, _) -> max start log.FirstIndex)

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
    let tryEntry (i: LogIndex) (log: LogView) : Entry option = if log.Window.Contains i then Some(log.Window.Get i) else None

    /// A rough size of an entry on the wire, for batching.
    let entrySize (e: Entry) : int =
        24
        + (match e.Payload with
           | Payload.Noop -> 0
           | Payload.Command bytes ->
               (match box bytes with
                | null -> 0
                | _ -> bytes.Length)
           | Payload.Config c -> 64 * c.Members.Count)

    /// Rough size of entries (as entrySize counts).
    let sizeOf (entries: Entry list) : int64 = entries |> List.sumBy (fun e -> int64 (entrySize e))

    /// The longest prefix of `entries` within maxCount entries and roughly maxBytes (at least one entry), as
    /// `slice` cuts the window: for entries read back from storage.
    let batch (maxCount: int) (maxBytes: int) (entries: Entry list) : Entry list =
        let rec go (acc: Entry list) count bytes (es: Entry list) =
            match es with
            | e :: rest when count < maxCount ->
                let size = entrySize e
                if count > 0 && bytes + size > maxBytes then
                    List.rev acc
                else
                    go (e :: acc) (count + 1) (bytes + size) rest
            | _ -> List.rev acc
        go [] 0 0 entries

    /// Entries [from, upTo] from the window, cut at maxCount entries and roughly maxBytes (at least one entry).
    /// None if any of them has left the window (the caller must load them from storage).
    let slice (from: LogIndex) (upTo: LogIndex) (maxCount: int) (maxBytes: int) (log: LogView) : Entry list option =
        if from > upTo then
            Some []
        elif from < log.WindowStart || upTo > log.LastIndex then
            None
        else
            // First find where the cut falls, then build the list back to front: one list, no List.rev copy.
            let mutable last = from - 1L
            let mutable count = 0
            let mutable bytes = 0
            let mutable go = true
            while go do
                let i = last + 1L
                if i > upTo || count >= maxCount || not (log.Window.Contains i) then
                    go <- false
                else
                    let size = entrySize (log.Window.Get i)
                    if count > 0 && bytes + size > maxBytes then
                        go <- false
                    else
                        last <- i
                        count <- count + 1
                        bytes <- bytes + size
            let mutable acc = []
            let mutable i = last
            while i >= from do
                acc <- log.Window.Get i :: acc
                i <- i - 1L
            Some acc

    /// Rough size of the window's entries in [from, upTo].
    let private windowBytesIn (from: LogIndex) (upTo: LogIndex) (log: LogView) : int64 =
        let mutable sum = 0L
        let mutable i = max from log.WindowStart
        let last = min upTo log.LastIndex
        while i <= last do
            if log.Window.Contains i then
                sum <- sum + int64 (entrySize (log.Window.Get i))
            i <- i + 1L
        sum

    /// Forgets window entries before `start` (never past the end).
    let private dropWindowBefore (start: LogIndex) (log: LogView) : LogView =
        if start <= log.WindowStart then
            log
        else
            let gone = windowBytesIn log.WindowStart (start - 1L) log
            { log with Window = log.Window.DropBefore start; WindowStart = start; WindowBytes = log.WindowBytes - gone }

    /// Where the window must start, and its bytes then, to hold at most `windowSize` entries and at most
    /// `windowBytes` bytes, but always the newest entry: a run of large values must not pin gigabytes in memory
    /// (older entries are loaded from storage when needed). Each entry is dropped once, so the walk is paid once.
    let private trimmed
        (windowSize: int)
        (windowBytes: int64)
        (window: EntryWindow)
        (start: LogIndex)
        (bytes: int64)
        (last: LogIndex)
        : struct (LogIndex * int64) =
        let mutable start = start
        let mutable bytes = bytes
        while start < last - int64 windowSize + 1L || (bytes > windowBytes && start < last) do
            bytes <- bytes - int64 (entrySize (window.Get start))
            start <- start + 1L
        struct (start, bytes)

    /// Removes entries from the front of the window as `trimmed` says.
    let private trimWindow (windowSize: int) (windowBytes: int64) (log: LogView) : LogView =
        let struct (start, bytes) = trimmed windowSize windowBytes log.Window log.WindowStart log.WindowBytes log.LastIndex
        if start = log.WindowStart then
            log
        else
            { log with Window = log.Window.DropBefore start; WindowStart = start; WindowBytes = bytes }

    /// Appends entries that directly follow LastIndex (entries that do not are ignored, to stay total), then
    /// trims the window to `windowSize` entries and `windowBytes` bytes. One new view and window per call.
    let append (windowSize: int) (windowBytes: int64) (entries: Entry list) (log: LogView) : LogView =
        // One pass: keep the entries that follow on (others are ignored), track term boundaries, then add them to
        // the window in one go (one copy of its tail per batch, not a tree insertion per entry).
        let mutable last = log.LastIndex
        let mutable bounds = log.Boundaries
        let mutable bytes = 0L
        let mutable allFollow = true
        for e in entries do
            if e.Index = last + 1L then
                match bounds with
                | (_, t) :: _ when t = e.Term -> ()
                | bs -> bounds <- (e.Index, e.Term) :: bs
                last <- e.Index
                bytes <- bytes + int64 (entrySize e)
            else
                allFollow <- false
        if last = log.LastIndex then
            log
        else
            // Usually every entry follows on: then the list is the batch as it is.
            let kept =
                if allFollow then
                    List.toArray entries
                else
                    let mutable expected = log.LastIndex + 1L
                    [| for e in entries do
                           if e.Index = expected then
                               expected <- expected + 1L
                               yield e |]
            let window = log.Window.Append kept
            let struct (start, windowBytesNow) = trimmed windowSize windowBytes window log.WindowStart (log.WindowBytes + bytes) last
            { log with
                LastIndex = last
                Boundaries = bounds
                Window = window.DropBefore start
                WindowStart = start
                WindowBytes = windowBytesNow }

    /// Discards entries at and after `i` (a conflict with the leader). Never discards compacted history.
    let truncateFrom (i: LogIndex) (log: LogView) : LogView =
        if i > log.LastIndex || i < log.FirstIndex then
            log
        else
            { log with
                LastIndex = i - 1L
                Boundaries = log.Boundaries |> List.filter (fun (start, _) -> start < i)
                Window = log.Window.TakeBefore i
                WindowBytes = log.WindowBytes - windowBytesIn i log.LastIndex log
                WindowStart = min log.WindowStart i
                Persisted = min log.Persisted (i - 1L) }

    /// Forgets stored entries up to and including `upTo` (they are in a snapshot and compacted in storage).
    let compact (upTo: LogIndex) (log: LogView) : LogView =
        if upTo < log.FirstIndex || upTo > log.LastIndex then
            log
        else
            match termAt upTo log with
            | None -> log
            | Some t ->
                let newer = log.Boundaries |> List.filter (fun (start, _) -> start > upTo)
                { dropWindowBefore (upTo + 1L) log with FirstIndex = upTo + 1L; Boundaries = newer @ [ upTo, t ] }

    /// Forgets window entries before `from` (never the newest entry), in steps of at least a chunk of the window so
    /// that a step that frees one entry does not make a new view. Entries nobody needs any more are then garbage
    /// within milliseconds, instead of living in the window for thousands of writes: long enough to be copied by
    /// the runtime's collector into its older generations, only to die there.
    let release (from: LogIndex) (log: LogView) : LogView =
        let from = min from log.LastIndex
        if from - log.WindowStart < 32L then log else dropWindowBefore from log

    /// Marks entries up to `index` durable, provided entry `index` still has `term` (a late acknowledgement for
    /// entries that were since truncated must not count).
    let persisted (index: LogIndex) (term: Term) (log: LogView) : LogView =
        if index > log.Persisted && hasTerm index term log then { log with Persisted = index } else log

    /// Builds a view from what storage holds: the first stored index, the term of the entry before it, the last
    /// index, the first index of each term after FirstIndex - 1 (ascending or not), and some recent entries.
    let create
        (windowSize: int)
        (windowBytes: int64)
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
              Window = EntryWindow.Empty(start).Append(List.toArray window)
              WindowBytes = window |> List.sumBy (fun e -> int64 (entrySize e))
              Persisted = lastIndex }
        trimWindow windowSize windowBytes log
