/// Which types a cycle allocates: the runtime's allocation sampling (an AllocationTick event about every 100 KB
/// allocated, naming the type of the object that crossed the mark), listened to in-process. Samples are
/// proportional to bytes, so the shares say where a cycle's bytes go. `--types` mode.
module Skiff.Bench.Reducer.AllocTypes

open System
open System.Collections.Concurrent
open System.Diagnostics.Tracing

type private Sampler() =
    inherit EventListener()
    let counts = ConcurrentDictionary<string, int>()
    member _.Counts = counts

    override this.OnEventSourceCreated(source: EventSource) =
        if source.Name = "Microsoft-Windows-DotNETRuntime" then
            // GC keyword (0x1) at Verbose carries GCAllocationTick.
            this.EnableEvents(source, EventLevel.Verbose, LanguagePrimitives.EnumOfValue<int64, EventKeywords> 0x1L)

    override _.OnEventWritten(e: EventWrittenEventArgs) =
        match e.EventName, e.PayloadNames, e.Payload with
        | NonNull name, NonNull names, NonNull payload when name.StartsWith "GCAllocationTick" ->
            let i = names.IndexOf "TypeName"
            if i >= 0 then
                let name = string payload[i]
                counts.AddOrUpdate(name, 1, fun _ n -> n + 1) |> ignore
        | _ -> ()

/// Runs `cycle` for `seconds` and prints the allocated types' shares (top 15).
let run (name: string) (seconds: float) (cycle: unit -> unit) =
    use sampler = new Sampler()
    let sw = Diagnostics.Stopwatch.StartNew()
    while sw.Elapsed.TotalSeconds < seconds do
        for _ in 1..50 do
            cycle ()
    Threading.Thread.Sleep 500
    let total = sampler.Counts.Values |> Seq.sum
    printfn "types %s (%d samples):" name total
    for KeyValue(t, n) in sampler.Counts |> Seq.sortByDescending (fun kv -> kv.Value) |> Seq.truncate 15 do
        printfn "  %5.1f%% %s" (100.0 * float n / float (max 1 total)) t
