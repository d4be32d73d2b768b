namespace Skiff.Net.Runtime;

/// <summary>
/// Watches the free space of the disk under a node's data directory, so the node stops taking new writes while it
/// still has room to finish what it took. Storage refuses to write below its own reserve, and a refusal there stops
/// the node (it cannot tell a half-done write from a done one); this gate sits above that reserve, by
/// <see cref="Headroom"/>, and turns a nearly full disk into <see cref="ErrorKind.DiskFull"/> answers to new writes
/// and dropped entries from the leader, which the node takes again by itself once space is freed. Checks the disk
/// at most every 100 ms; safe to call from any thread.
/// </summary>
internal sealed class DiskSpaceGate
{
    /// <summary>Free space kept above storage's own reserve: what the writes already admitted may still need (the
    /// inbox, the writer and the applier each hold at most 64 MiB).</summary>
    public const long Headroom = 64L << 20;

    private const int CheckEveryMs = 100;

    private readonly string _dir;
    private long _nextCheck;
    private long _free = long.MaxValue;

    /// <param name="dir">The data directory.</param>
    /// <param name="storageReserveBytes">The free space below which storage itself refuses to write.</param>
    public DiskSpaceGate(string dir, long storageReserveBytes)
    {
        _dir = dir;
        MinFreeBytes = storageReserveBytes + Headroom;
    }

    /// <summary>Below this much free space, new writes are refused.</summary>
    public long MinFreeBytes { get; }

    /// <summary>Whether the disk has less free space than <see cref="MinFreeBytes"/>; <paramref name="free"/> is
    /// what it had at the last check.</summary>
    public bool IsLow(out long free)
    {
        var now = Environment.TickCount64;
        if (now >= Interlocked.Read(ref _nextCheck))
        {
            Interlocked.Exchange(ref _nextCheck, now + CheckEveryMs);
            // Cannot tell: let storage's own check decide.
            Interlocked.Exchange(ref _free, Storage.FreeSpaceCheck.AvailableBytes(_dir) ?? long.MaxValue);
        }
        free = Interlocked.Read(ref _free);
        return free < MinFreeBytes;
    }
}
