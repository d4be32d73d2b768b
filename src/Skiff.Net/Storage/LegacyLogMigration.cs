namespace Skiff.Net.Storage;

/// <summary>
/// Moves a Raft log written by older versions (FASTER's FasterLog, <see cref="LegacyLogReader"/>) into the
/// write-ahead log when the log directory is opened. Crash-safe at every step: the new segments are written and
/// synced first, then a <c>migrated</c> marker is written atomically; only then are the old files deleted (and the
/// deletion synced), and last the marker. Opening again after a crash: old files without the marker mean the new
/// log may be partial, so its segments are deleted and the migration starts over; old files with the marker mean
/// the new log is complete, so only the deletion is finished.
/// </summary>
internal static class LegacyLogMigration
{
    private const string Marker = "migrated";
    private const int Chunk = 4096;

    /// <summary>Migrates the old log in <paramref name="dir"/> if there is one; returns the entries moved.</summary>
    public static long Run(string dir, RaftLogOptions options)
    {
        var marker = Path.Combine(dir, Marker);
        bool legacy = LegacyLogReader.Present(dir);
        if (!legacy)
        {
            if (File.Exists(marker)) DeleteDurably(dir, new[] { marker });
            return 0;
        }
        long moved = 0;
        if (!File.Exists(marker))
        {
            DeleteDurably(dir, Directory.EnumerateFiles(dir, "*" + WalSegments.Suffix));
            moved = Copy(dir, options);
            StorageIo.WriteAtomically(marker, "SKIFFWAL migrated\n"u8);
        }
        DeleteDurably(dir, LegacyLogReader.Files(dir));
        var commits = Path.Combine(dir, "commits");
        if (Directory.Exists(commits)) StorageIo.Guard(commits, () => Directory.Delete(commits, recursive: true));
        DeleteDurably(dir, new[] { marker });
        return moved;
    }

    private static long Copy(string dir, RaftLogOptions options)
    {
        using var old = LegacyLogReader.Open(dir, options);
        // The new log is opened on the side of RaftLog.Open, which is what called us.
        using var log = RaftLog.OpenWithoutMigration(dir, options);
        if (old.BaseIndex > 0) log.ResetToSnapshot(old.BaseIndex, old.BaseTerm, keepSuffix: false).GetAwaiter().GetResult();
        for (long from = old.BaseIndex + 1; from <= old.LastIndex; from += Chunk)
        {
            var entries = old.Read(from, Math.Min(old.LastIndex, from + Chunk - 1));
            log.AppendAsync(entries).GetAwaiter().GetResult();
        }
        if (log.LastIndex != old.LastIndex)
            throw new SkiffException(ErrorKind.StorageError, $"migrating the log in {dir}: {log.LastIndex} entries written, {old.LastIndex} expected");
        return old.LastIndex - old.BaseIndex;
    }

    private static void DeleteDurably(string dir, IEnumerable<string> files)
    {
        bool any = false;
        foreach (var f in files.ToList())
        {
            StorageIo.Guard(f, () => File.Delete(f));
            any = true;
        }
        if (any) StorageIo.FsyncDirectory(dir);
    }
}
