namespace Skiff.Net.Storage;

/// <summary>Refuses writes while the disk under a directory has less free space than a minimum. FASTER cannot
/// report a failed background page flush to its writers (on a full disk they wait for buffer space forever), so the
/// log and the state machine stop before the disk is full instead. Checks the disk at most every 20 ms unless
/// forced, and at once again after a refusal. Not thread-safe: its owner calls it under its own lock.</summary>
internal sealed class FreeSpaceCheck
{
    private readonly string _dir;
    private readonly long _minFreeBytes;
    private readonly string _needs;
    private long _nextCheck;

    /// <param name="dir">The directory whose disk is checked.</param>
    /// <param name="minFreeBytes">The least free space that writing needs.</param>
    /// <param name="needs">What needs it, for the error: "the log needs at least {min} to append safely".</param>
    public FreeSpaceCheck(string dir, long minFreeBytes, Func<long, string> needs)
    {
        _dir = dir;
        _minFreeBytes = minFreeBytes;
        _needs = needs(minFreeBytes);
    }

    /// <summary>Throws <see cref="ErrorKind.StorageError"/> if the disk is nearly full.</summary>
    /// <param name="force">Check now, even if the last check was less than 20 ms ago.</param>
    public void Ensure(bool force = false)
    {
        long now = Environment.TickCount64;
        if (!force && now < _nextCheck) return;
        _nextCheck = now + 20;
        if (AvailableBytes(_dir) is not { } free) return; // cannot tell; let the write itself fail if it must
        if (free < _minFreeBytes)
        {
            _nextCheck = 0; // check again next time
            throw new SkiffException(ErrorKind.StorageError, $"disk full: {free} bytes free under {_dir}, {_needs}");
        }
    }

    /// <summary>The free space of the disk under <paramref name="dir"/>, or null if it cannot be told.</summary>
    public static long? AvailableBytes(string dir)
    {
        try
        {
            return new DriveInfo(dir).AvailableFreeSpace;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
            return null;
        }
    }
}
