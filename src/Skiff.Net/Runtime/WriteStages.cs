using System.Diagnostics;

namespace Skiff.Net.Runtime;

/// <summary>Where the time of local writes goes, summed over the process (for measurements): submit to the
/// loop's step, step to Accepted (same step), Accepted to applied (replication, fsyncs, commit, apply) and
/// applied to the caller running again.</summary>
internal static class WriteStages
{
    private static long _count, _toLoop, _toAccepted, _toApplied, _toCaller;

    internal static void Record(Pending p)
    {
        if (p.Stepped == 0 || p.AcceptedAt == 0 || p.Answered == 0) return;
        var now = Stopwatch.GetTimestamp();
        Interlocked.Increment(ref _count);
        Interlocked.Add(ref _toLoop, p.Stepped - p.Submitted);
        Interlocked.Add(ref _toAccepted, p.AcceptedAt - p.Stepped);
        Interlocked.Add(ref _toApplied, p.Answered - p.AcceptedAt);
        Interlocked.Add(ref _toCaller, now - p.Answered);
    }

    /// <summary>Clears the sums.</summary>
    public static void Reset()
    {
        _count = _toLoop = _toAccepted = _toApplied = _toCaller = 0;
    }

    /// <summary>Mean microseconds per stage since the last reset.</summary>
    public static string Summary()
    {
        var n = Math.Max(1, Interlocked.Read(ref _count));
        double Us(long ticks) => ticks * 1_000_000.0 / Stopwatch.Frequency / n;
        return $"writes={_count} mean us: to-loop={Us(_toLoop):F0} step={Us(_toAccepted):F0} accepted-to-applied={Us(_toApplied):F0} to-caller={Us(_toCaller):F0}";
    }
}
