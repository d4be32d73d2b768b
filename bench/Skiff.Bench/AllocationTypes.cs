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

    protected override void OnEventSourceCreated(EventSource source)
    {
        // The GC keyword (0x1) at Verbose level carries GCAllocationTick.
        if (source.Name == "Microsoft-Windows-DotNETRuntime") EnableEvents(source, EventLevel.Verbose, (EventKeywords)0x1);
    }

    protected override void OnEventWritten(EventWrittenEventArgs e)
    {
        if (e.EventName is not { } name || !name.StartsWith("GCAllocationTick", StringComparison.Ordinal)) return;
        if (e.PayloadNames is not { } names || e.Payload is not { } payload) return;
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
        return $"# {total} samples\n{string.Join('\n', lines)}\n";
    }
}
