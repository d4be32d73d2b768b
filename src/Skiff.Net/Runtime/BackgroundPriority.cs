using System.Runtime.InteropServices;

namespace Skiff.Net.Runtime;

/// <summary>
/// Lowers the scheduling priority of one of Skiff's own background threads (on Linux, its nice value; elsewhere
/// nothing), so that its CPU work gives way to the threads that apply and replicate writes.
/// <para>Why: a snapshot's checkpoint runs on a thread of its own beside applying, but on a busy machine (a 3-member
/// cluster on 2 cores) waking that thread at the same priority let it take the CPU from the applying thread that woke
/// it, in the middle of the snapshot's start or finish: the handoff itself was measured at 1-6 ms and up to 23 ms, and
/// a snapshot's pause reached 20-25 ms (issue 16 bounds it at 10). At nice +10 the same runs stayed under 10.5 ms. This
/// is what RocksDB does for its compaction threads (<c>LowerThreadPoolCPUPriority</c>).</para>
/// <para>It changes only the calling thread, one Skiff created: the process's own priority, and every other thread's,
/// stay as the host set them. Relative to the thread's current nice value, so a host that runs the process niced
/// keeps the gap. A failure (no such call, not permitted) leaves the thread as it was.</para>
/// </summary>
internal static class BackgroundPriority
{
    /// <summary>How much nicer than the process's other threads background work runs (Linux nice values go up to
    /// 19; each step is about a quarter less CPU share when threads compete).</summary>
    public const int NiceIncrement = 10;

    private const int PrioProcess = 0; // with a thread id as "who", setpriority applies to that thread on Linux
    private const int MaxNice = 19;

    [DllImport("libc", EntryPoint = "gettid")]
    private static extern int GetThreadId();

    [DllImport("libc", EntryPoint = "getpriority", SetLastError = true)]
    private static extern int GetPriority(int which, int who);

    [DllImport("libc", EntryPoint = "setpriority", SetLastError = true)]
    private static extern int SetPriority(int which, int who, int prio);

    /// <summary>Makes the calling thread <see cref="NiceIncrement"/> nicer than it is (at most 19).</summary>
    /// <returns>Whether the priority was lowered.</returns>
    public static bool LowerCurrentThread()
    {
        if (!OperatingSystem.IsLinux()) return false;
        try
        {
            var tid = GetThreadId();
            Marshal.SetLastPInvokeError(0);
            var current = GetPriority(PrioProcess, tid); // -1 is a valid nice value: errno tells a failure
            if (current == -1 && Marshal.GetLastPInvokeError() != 0) return false;
            return SetPriority(PrioProcess, tid, Math.Min(MaxNice, current + NiceIncrement)) == 0;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;
        }
    }
}
