using System.Diagnostics;
using Skiff.Net.Runtime;

namespace Skiff.Net.Storage.Ports;

/// <summary>
/// One timed stretch of a thread's work (a snapshot's start, or its finish, on the applying thread): its wall time and,
/// inside it, the garbage collector's pauses and the thread's waits for a core (<see cref="RunQueueWait"/>; null where
/// the system does not say). Stretches add up, so a snapshot's pause is its start plus its finish.
/// </summary>
internal readonly record struct PauseStretch(double WallMs, double GcMs, double? WaitedMs)
{
    /// <summary>The stretch less the collections and the waits for a core inside it: the work's own time (never
    /// negative; nothing is taken out for waits the system does not count).</summary>
    public double OwnMs => Math.Max(0, WallMs - GcMs - (WaitedMs ?? 0));

    /// <summary>Two stretches as one (a wait unknown in either is unknown in the sum).</summary>
    public static PauseStretch operator +(PauseStretch a, PauseStretch b) =>
        new(a.WallMs + b.WallMs, a.GcMs + b.GcMs, a.WaitedMs + b.WaitedMs);

    /// <summary>Starts timing a stretch on the calling thread.</summary>
    public static Timer Start() => new(Stopwatch.GetTimestamp(), RunQueueWait.OfCurrentThread(), GC.GetTotalPauseDuration());

    /// <summary>A stretch being timed. The waits for a core are read inside the timed wall time, so that no wait
    /// outside it is taken out of it.</summary>
    internal readonly struct Timer(long started, TimeSpan? waiting, TimeSpan gc)
    {
        /// <summary>Ends the stretch, on the thread that started it.</summary>
        public PauseStretch Stop()
        {
            var gcMs = (GC.GetTotalPauseDuration() - gc).TotalMilliseconds;
            var waitedMs = (RunQueueWait.OfCurrentThread() - waiting)?.TotalMilliseconds;
            return new PauseStretch(Stopwatch.GetElapsedTime(started).TotalMilliseconds, gcMs, waitedMs);
        }
    }
}
