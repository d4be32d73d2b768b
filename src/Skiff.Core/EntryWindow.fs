namespace Skiff.Core

/// An immutable, dense run of log entries [Start, End - 1], for the in-memory window. Entries sit in immutable
/// chunks of 32 (never written after publication) plus a short tail, so a lookup is two array reads, appending
/// copies at most the tail (and, once per 32 entries, the array of chunk references), and dropping the oldest
/// entries drops whole chunks. This replaces a Map<LogIndex, Entry>, whose every add/remove/lookup walked and
/// rebuilt a balanced tree. No array is ever mutated once a value holding it exists, so values can be shared
/// freely between States.
[<Sealed>]
type EntryWindow private (baseIdx: LogIndex, start: LogIndex, full: Entry[][], tail: Entry[]) =
    static let chunk = 32
    static let emptyChunks: Entry[][] = [||]
    static let emptyTail: Entry[] = [||]

    /// An empty window whose next entry will be `start`.
    static member Empty(start: LogIndex) = EntryWindow(start, start, emptyChunks, emptyTail)

    /// First index held.
    member _.Start = start

    /// One past the last index held.
    member _.End = baseIdx + int64 (full.Length * chunk + tail.Length)

    /// Whether `i` is held.
    member this.Contains(i: LogIndex) = i >= start && i < this.End

    /// The entry at `i`; `i` must be held (see Contains).
    member _.Get(i: LogIndex) : Entry =
        let off = int (i - baseIdx)
        let c = off / chunk
        if c < full.Length then full[c][off % chunk] else tail[off - full.Length * chunk]

    /// Appends entries that follow End directly (the caller checks contiguity).
    member this.Append(es: Entry[]) : EntryWindow =
        if es.Length = 0 then
            this
        else
            let combined = tail.Length + es.Length
            let at p = if p < tail.Length then tail[p] else es[p - tail.Length]
            let newChunks = combined / chunk
            let rest = combined % chunk
            let full =
                if newChunks = 0 then
                    full
                else
                    let f = Array.zeroCreate (full.Length + newChunks)
                    Array.blit full 0 f 0 full.Length
                    for k in 0 .. newChunks - 1 do
                        let c = Array.zeroCreate chunk
                        for j in 0 .. chunk - 1 do
                            c[j] <- at (k * chunk + j)
                        f[full.Length + k] <- c
                    f
            let t =
                if rest = 0 then
                    emptyTail
                else
                    let t = Array.zeroCreate rest
                    for j in 0 .. rest - 1 do
                        t[j] <- at (newChunks * chunk + j)
                    t
            EntryWindow(baseIdx, start, full, t)

    /// Forgets entries before `newStart`.
    member this.DropBefore(newStart: LogIndex) : EntryWindow =
        if newStart <= start then
            this
        elif newStart >= this.End then
            EntryWindow.Empty newStart
        else
            let k = min full.Length (int ((newStart - baseIdx) / int64 chunk))
            if k = 0 then
                EntryWindow(baseIdx, newStart, full, tail)
            else
                EntryWindow(baseIdx + int64 (k * chunk), newStart, Array.sub full k (full.Length - k), tail)

    /// Keeps only entries before `i` (a truncation; rare, so it simply rebuilds). The result starts at
    /// min(Start, i).
    member this.TakeBefore(i: LogIndex) : EntryWindow =
        if i >= this.End then
            this
        elif i <= start then
            EntryWindow.Empty i
        else
            EntryWindow.Empty(start).Append(Array.init (int (i - start)) (fun k -> this.Get(start + int64 k)))

    /// The entries held, oldest first.
    member this.ToList() : Entry list = List.init (int (this.End - start)) (fun k -> this.Get(start + int64 k))

    override this.Equals(o: obj) =
        match o with
        | :? EntryWindow as w ->
            w.Start = start
            && w.End = this.End
            && (let mutable eq = true
                let mutable i = start
                while eq && i < this.End do
                    eq <- this.Get i = w.Get i
                    i <- i + 1L
                eq)
        | _ -> false

    override this.GetHashCode() = hash (start, this.End)

    override this.ToString() = sprintf "EntryWindow[%d..%d]" start (this.End - 1L)
