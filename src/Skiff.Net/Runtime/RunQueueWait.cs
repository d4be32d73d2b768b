using System.Buffers.Text;

namespace Skiff.Net.Runtime;

/// <summary>
/// How long the calling thread has been runnable but not running: waiting for a core. Linux keeps it per thread
/// (the second field of <c>/proc/thread-self/schedstat</c>, in nanoseconds, since the thread started). A pause measured
/// on a machine with more runnable threads than cores (three members and a load generator on two cores, say) is
/// mostly this wait, which any other stretch of the same thread's work sees as well; the snapshot pause reports its
/// work without it (<see cref="RuntimeMetrics.SnapshotPauseWork"/>) so that what a snapshot itself costs can be told from
/// what the machine's load adds to it.
/// </summary>
internal static class RunQueueWait
{
    private const string Path = "/proc/thread-self/schedstat";
    private static bool _unavailable = !OperatingSystem.IsLinux();

    /// <summary>The calling thread's total wait for a core so far, or null where the system does not say.</summary>
    public static TimeSpan? OfCurrentThread()
    {
        if (_unavailable) return null;
        try
        {
            using var handle = File.OpenHandle(Path);
            Span<byte> text = stackalloc byte[96];
            var length = RandomAccess.Read(handle, text, 0);
            return Parse(text[..length]) is { } nanoseconds ? TimeSpan.FromTicks(nanoseconds / 100) : Unavailable();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return Unavailable();
        }
    }

    /// <summary>The wait (ns) in a schedstat line: "run-time wait-time timeslices".</summary>
    internal static long? Parse(ReadOnlySpan<byte> line)
    {
        var space = line.IndexOf((byte)' ');
        if (space < 0) return null;
        var rest = line[(space + 1)..];
        return Utf8Parser.TryParse(rest, out long waited, out var used) && used > 0 && waited >= 0 ? waited : null;
    }

    // A kernel without scheduler statistics has no such file: stop asking.
    private static TimeSpan? Unavailable()
    {
        _unavailable = true;
        return null;
    }
}
