namespace Skiff.Core

open System.Collections.Generic

/// The results a client session keeps, by request number (Sessions.Session.Results): immutable, and built for how
/// clients number their requests. New numbers arrive mostly above the ones kept (not always in order: requests
/// in flight together reach the log in any order) and old ones leave from below, as the client acknowledges
/// replies. The numbers kept sit in a sorted array shared between versions (dropping from below moves an offset
/// into it) and the newest in a short list, merged into a new array once the list holds a quarter of the whole (at
/// least 16). Adding a result then costs one list cell and, amortised, a few array slots; a balanced tree, as this
/// replaces, copied a path of nodes to add each result and another to drop each one, on every member for every
/// write.
[<Sealed>]
type ResultWindow<'T> private (sorted: struct (int64 * 'T)[], start: int, recent: struct (int64 * 'T) list, recentCount: int) =
    static let empty = ResultWindow<'T>([||], 0, [], 0)

    /// The first position in `sorted` at or after `start` whose number is at least `n` (its length if none).
    static let lowerBound (sorted: struct (int64 * 'T)[]) (start: int) (n: int64) =
        let mutable lo = start
        let mutable hi = sorted.Length
        while lo < hi do
            let mid = (lo + hi) >>> 1
            let struct (k, _) = sorted[mid]
            if k < n then lo <- mid + 1 else hi <- mid
        lo

    static let rec findIn (l: struct (int64 * 'T) list) (n: int64) : 'T voption =
        match l with
        | struct (k, v) :: rest -> if k = n then ValueSome v else findIn rest n
        | [] -> ValueNone

    static let rec anyBelow (l: struct (int64 * 'T) list) (n: int64) =
        match l with
        | struct (k, _) :: rest -> k < n || anyBelow rest n
        | [] -> false

    static let rec minOf (l: struct (int64 * 'T) list) (m: int64) =
        match l with
        | struct (k, _) :: rest -> minOf rest (min k m)
        | [] -> m

    /// The sorted part from `start` and the list's `count` results, in one new array in ascending order.
    static let ascending (sorted: struct (int64 * 'T)[]) (start: int) (recent: struct (int64 * 'T) list) (count: int) =
        let all = Array.zeroCreate (sorted.Length - start + count)
        Array.blit sorted start all 0 (sorted.Length - start)
        let mutable at = sorted.Length - start
        for r in recent do
            all[at] <- r
            at <- at + 1
        Array.sortInPlaceBy (fun (struct (k, _)) -> k) all
        all

    /// No results.
    static member Empty: ResultWindow<'T> = empty

    /// The results given, by number (numbers must be distinct).
    static member OfSeq(results: seq<int64 * 'T>) : ResultWindow<'T> =
        let sorted = results |> Seq.map (fun (k, v) -> struct (k, v)) |> Array.ofSeq
        Array.sortInPlaceBy (fun (struct (k, _)) -> k) sorted
        if sorted.Length = 0 then empty else ResultWindow(sorted, 0, [], 0)

    /// How many results are kept.
    member _.Count = sorted.Length - start + recentCount

    /// Whether none are.
    member this.IsEmpty = this.Count = 0

    /// The result of request `n`, if kept.
    member _.TryFind(n: int64) : 'T voption =
        match findIn recent n with
        | ValueSome _ as found -> found
        | ValueNone ->
            let i = lowerBound sorted start n
            if i < sorted.Length && (let struct (k, _) = sorted[i] in k = n) then
                let struct (_, v) = sorted[i]
                ValueSome v
            else
                ValueNone

    /// The smallest number kept; the window must not be empty.
    member this.MinKey: int64 =
        let fromSorted =
            if start < sorted.Length then
                let struct (k, _) = sorted[start]
                k
            else
                System.Int64.MaxValue
        minOf recent fromSorted

    /// With request `n`'s result added; `n` must not be kept already.
    member this.Add(n: int64, result: 'T) : ResultWindow<'T> =
        let recent = struct (n, result) :: recent
        if recentCount + 1 < max 16 (this.Count / 4) then
            ResultWindow(sorted, start, recent, recentCount + 1)
        else
            ResultWindow(ascending sorted start recent (recentCount + 1), 0, [], 0)

    /// Without the results numbered below `n`.
    member this.DropBelow(n: int64) : ResultWindow<'T> =
        let from = lowerBound sorted start n
        if anyBelow recent n then
            let kept = recent |> List.filter (fun (struct (k, _)) -> k >= n)
            ResultWindow(sorted, from, kept, List.length kept)
        elif from = start then
            this
        else
            ResultWindow(sorted, from, recent, recentCount)

    /// The results, in ascending order of number.
    member _.ToArray() : struct (int64 * 'T)[] = ascending sorted start recent recentCount

    override this.Equals(o: obj) =
        match o with
        | :? ResultWindow<'T> as w ->
            w.Count = this.Count
            && Array.forall2
                (fun (struct (a, x): struct (int64 * 'T)) (struct (b, y): struct (int64 * 'T)) ->
                    a = b && EqualityComparer<'T>.Default.Equals(x, y))
                (this.ToArray())
                (w.ToArray())
        | _ -> false

    override this.GetHashCode() = hash this.Count

    override this.ToString() =
        this.ToArray() |> Array.map (fun (struct (k, v)) -> sprintf "%d: %A" k v) |> String.concat "; " |> sprintf "[%s]"
