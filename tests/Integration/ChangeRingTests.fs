/// The applier's in-memory change history as bytes in a ring (Skiff.Net.Runtime.ChangeRing) against a plain queue
/// of Change objects with the same caps: random adds (inserts, removes, empty values, values larger than the whole
/// cap), clears and reads, checked after every step. Seeded: prints the seed; SKIFF_SEED replays it.
module Skiff.Integration.ChangeRingTests

open System
open System.Collections.Generic
open Expecto
open Skiff
open Skiff.Net.Runtime
open Skiff.Integration.StorageSupport

/// What the ring must behave as: the oldest changes go first, past a count or a byte cap.
type private Model(maxCount: int, maxBytes: int64) =
    let kept = Queue<Change>()
    let size (c: Change) = 5L + int64 (Text.Encoding.UTF8.GetByteCount c.Key) + int64 (if c.Value.HasValue then c.Value.Value.Length else 0)
    member val Floor = 0L with get, set
    member this.Bytes = kept |> Seq.sumBy size
    member _.Count = kept.Count

    member this.Add(c: Change) =
        if size c > maxBytes || maxCount = 0 then
            this.Clear c.Index
        else
            while kept.Count >= maxCount || this.Bytes + size c > maxBytes do
                this.Floor <- kept.Dequeue().Index
            kept.Enqueue c

    member this.Clear(floor: int64) =
        kept.Clear()
        this.Floor <- floor

    member _.From(fromIndex: int64, prefix: string) =
        kept |> Seq.filter (fun c -> c.Index >= fromIndex && c.Key.StartsWith(prefix, StringComparison.Ordinal)) |> List.ofSeq

let private describe (c: Change) =
    sprintf "%d %s %A %s" c.Index c.Key c.Kind (if c.Value.HasValue then Convert.ToHexString(c.Value.Value.Span) else "-")

let private run (seed: int) (steps: int) =
    let rng = Random seed
    let maxCount = [| 0; 1; 7; 100; 1000 |][rng.Next 5]
    let maxBytes = [| 64L; 1000L; 70_000L; 300_000L |][rng.Next 4]
    let ring = ChangeRing(maxCount, maxBytes)
    let model = Model(maxCount, maxBytes)
    let mutable index = 0L
    for step in 1..steps do
        let context = sprintf "seed %d, step %d, caps %d/%d" seed step maxCount maxBytes
        match rng.Next 100 with
        | 0 ->
            index <- index + int64 (rng.Next 3)
            ring.Clear index
            model.Clear index
        | r when r < 10 ->
            let fromIndex = index - int64 (rng.Next 50)
            let prefix = [| ""; "a/"; "b/"; "a/é" |][rng.Next 4]
            let got = List<Change>()
            ring.CopyFrom(fromIndex, prefix, got)
            Expect.sequenceEqual (got |> Seq.map describe) (model.From(fromIndex, prefix) |> Seq.map describe) context
        | _ ->
            index <- index + 1L + int64 (rng.Next 2)
            let prefixes = [| "a/"; "b/"; "a/é" |]
            let key = sprintf "%s%d" prefixes[rng.Next 3] (rng.Next 1000)
            let change =
                if rng.Next 5 = 0 then
                    Change.Removed(index, key)
                else
                    // Mostly small values, some empty, a few near or over the whole cap.
                    let length =
                        match rng.Next 20 with
                        | 0 -> 0
                        | 1 -> rng.Next(int maxBytes + 10)
                        | _ -> rng.Next 200
                    let value = Array.zeroCreate<byte> length
                    rng.NextBytes value
                    Change.Inserted(index, key, ReadOnlyMemory value)
            ring.Add change
            model.Add change
        Expect.equal ring.Count model.Count $"count ({context})"
        Expect.equal ring.Bytes model.Bytes $"bytes ({context})"
        Expect.equal ring.Floor model.Floor $"floor ({context})"

let tests =
    testList
        "change ring"
        [ testCase "the byte ring keeps exactly what a queue of changes with the same caps keeps"
          <| fun () ->
              let seed = seedFromEnv ()
              printfn "change ring: seed=%d (replay with SKIFF_SEED=%d)" seed seed
              let rng = Random seed
              for _ in 1..200 do
                  run (rng.Next()) 2000 ]
