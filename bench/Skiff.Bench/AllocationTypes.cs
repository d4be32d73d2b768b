using System.Collections.Concurrent;
using System.Diagnostics.Tracing;

namespace Skiff.Bench;

/// <summary>Which types a process allocates: the runtime's allocation sampling (an AllocationTick event about
/// every 100 KB allocated, naming the type of the object that crossed the mark), listened to in-process. Samples
/// are proportional to bytes, so their shares say where the bytes go. Off unless asked for (writepath members
/// with SKIFF_ALLOC_TYPES set to a file prefix: each "stats" request appends the types sampled since the previous
/// one to PREFIX-IP.txt).</summary>
internal sealed class AllocationTypes : EventListener
{
    private ConcurrentDictionary<string, int> _counts = new();
    private ConcurrentQueue<string> _collections = new();
    private DateTime _suspended;
    private string _collecting = "";

    protected override void OnEventSourceCreated(EventSource source)
    {
        // The GC keyword (0x1) at Verbose level carries GCAllocationTick.
        if (source.Name == "Microsoft-Windows-DotNETRuntime") EnableEvents(source, EventLevel.Verbose, (EventKeywords)0x1);
    }

    private static long Kb(object? bytes) => Convert.ToInt64(bytes ?? 0L, System.Globalization.CultureInfo.InvariantCulture) / 1024;

    protected override void OnEventWritten(EventWrittenEventArgs e)
    {
        if (e.EventName is not { } name || e.PayloadNames is not { } names || e.Payload is not { } payload) return;
        object? Field(string field) => names.IndexOf(field) is var at and >= 0 ? payload[at] : null;
        // One line per collection: its generation and reason (GCStart), what survived it (GCHeapStats), how long
        // the runtime was suspended (from the suspension's start to the restart's end).
        if (name.StartsWith("GCSuspendEEBegin", StringComparison.Ordinal)) _suspended = e.TimeStamp;
        else if (name.StartsWith("GCStart", StringComparison.Ordinal)) _collecting = $"gen{Field("Depth")} {Field("Reason")} type {Field("Type")}";
        else if (name.StartsWith("GCHeapStats", StringComparison.Ordinal))
            _collecting += $" promoted0 {Kb(Field("TotalPromotedSize0"))} KB promoted1 {Kb(Field("TotalPromotedSize1"))} KB " +
                           $"gen0 {Kb(Field("GenerationSize0"))} KB gen1 {Kb(Field("GenerationSize1"))} KB gen2 {Kb(Field("GenerationSize2"))} KB pinned {Field("PinnedObjectCount")}";
        else if (name.StartsWith("GCRestartEEEnd", StringComparison.Ordinal) && _collecting.Length > 0)
        {
            _collections.Enqueue($"{(e.TimeStamp - _suspended).TotalMilliseconds,6:F2} ms {_collecting}");
            _collecting = "";
        }
        if (!name.StartsWith("GCAllocationTick", StringComparison.Ordinal)) return;
        var i = names.IndexOf("TypeName");
        if (i >= 0) _counts.AddOrUpdate(payload[i]?.ToString() ?? "?", 1, (_, n) => n + 1);
    }

    /// <summary>The top types sampled since the last call, one per line, and a fresh count.</summary>
    public string TakeReport(int top = 30)
    {
        var counts = Interlocked.Exchange(ref _counts, new ConcurrentDictionary<string, int>());
        var total = Math.Max(1, counts.Values.Sum());
        var lines = counts.OrderByDescending(kv => kv.Value).Take(top)
            .Select(kv => $"  {100.0 * kv.Value / total,5:F1}% {kv.Key}");
        var collections = Interlocked.Exchange(ref _collections, new ConcurrentQueue<string>());
        return $"# {total} samples\n{string.Join('\n', lines)}\n# {collections.Count} collections\n{string.Join('\n', collections.Select(c => "  " + c))}\n";
    }
}
