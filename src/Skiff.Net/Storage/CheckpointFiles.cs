namespace Skiff.Net.Storage;

/// <summary>A snapshot: a FASTER checkpoint of the state machine at an applied index, and the files (with their
/// lengths at checkpoint time) that make it up.</summary>
/// <param name="Index">The last applied index included.</param>
/// <param name="Term">The term of that entry.</param>
/// <param name="Token">FASTER's checkpoint token.</param>
/// <param name="Files">Files relative to the store directory, and how many bytes of each belong to the snapshot.</param>
internal sealed record SnapshotInfo(long Index, long Term, Guid Token, IReadOnlyList<(string Path, long Length)> Files)
{
    /// <summary>Total bytes of the snapshot's files.</summary>
    public long TotalBytes => Files.Sum(f => f.Length);
}

/// <summary>The files on disk that make up a checkpoint of the key-value store: which they are (the manifest a
/// snapshot is streamed from), making them durable, and clearing a store directory.</summary>
internal static class CheckpointFiles
{
    /// <summary>The files of checkpoint <paramref name="token"/> in the store directory <paramref name="dir"/>: its
    /// own directories, the store's <see cref="StoreGeometry"/> file, and the hybrid log and object log segments from
    /// <paramref name="firstSegment"/> (the one the checkpoint's begin address lies in; earlier ones are garbage
    /// FASTER is deleting) with their current lengths. Bytes below the checkpoint's final address never change
    /// afterwards (later writes go to higher addresses), and bytes beyond it are ignored when recovering from it, so
    /// the lengths may include later data harmlessly.</summary>
    public static List<(string, long)> Manifest(string dir, Guid token, long firstSegment)
    {
        var tokenText = token.ToString();
        var files = new List<(string, long)>();
        foreach (var path in Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories))
        {
            var rel = Path.GetRelativePath(dir, path);
            bool isCheckpoint = rel.StartsWith("checkpoints" + Path.DirectorySeparatorChar, StringComparison.Ordinal);
            bool isData = rel.StartsWith("hlog.", StringComparison.Ordinal)
                && long.TryParse(rel.AsSpan(rel.LastIndexOf('.') + 1), out var segment) && segment >= firstSegment;
            bool isGeometry = rel == StoreGeometry.FileName;
            if ((isCheckpoint && rel.Contains(tokenText, StringComparison.Ordinal)) || (!isCheckpoint && (isData || isGeometry)))
                files.Add((rel, new FileInfo(path).Length));
        }
        files.Sort((a, b) => string.CompareOrdinal(a.Item1, b.Item1));
        return files;
    }

    /// <summary>Syncs the checkpoint's files of <paramref name="files"/> and every checkpoint directory. FASTER
    /// writes some checkpoint metadata with plain buffered writes and never syncs directories; the snapshot must
    /// survive power loss before the log is compacted behind it.</summary>
    public static void MakeDurable(string dir, IEnumerable<(string Path, long Length)> files)
    {
        foreach (var (rel, _) in files)
        {
            if (!rel.StartsWith("checkpoints", StringComparison.Ordinal)) continue;
            var full = Path.Combine(dir, rel);
            using var h = File.OpenHandle(full, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            StorageIo.Fdatasync(h, full);
        }
        var checkpoints = Path.Combine(dir, "checkpoints");
        foreach (var d in Directory.EnumerateDirectories(checkpoints, "*", SearchOption.AllDirectories))
            StorageIo.FsyncDirectory(d);
        StorageIo.FsyncDirectory(checkpoints); // its own entries (cpr-checkpoints, ...): FASTER made them, unsynced
        StorageIo.FsyncDirectory(dir);
    }

    /// <summary>Deletes the checkpoints other than <paramref name="token"/>'s (log checkpoints and index checkpoints),
    /// once that checkpoint is durable: never before, or a power loss could leave neither. FASTER keeps the previous
    /// index checkpoint too (in case the newest is unfinished), and each is a copy of the whole hash index (4 MiB by
    /// default): the largest fixed part of a small store's disk use. A snapshot being streamed keeps its files open,
    /// so deleting them does not disturb it.
    /// <para>In an order a power loss at any point cannot turn into an older checkpoint being recovered: FASTER tries
    /// the log checkpoints newest first by their directories' times (not by version), and deleting a file in a
    /// directory makes it the newest. So a checkpoint's metadata file goes first, durably (FASTER then passes over
    /// the checkpoint), then the rest; and log checkpoints before index checkpoints (a log checkpoint whose index is
    /// gone would be recovered by replaying its whole hybrid log, which compaction has cut).</para></summary>
    public static void DeleteOlderCheckpoints(string dir, Guid token)
    {
        var tokenText = token.ToString();
        foreach (var kind in new[] { "cpr-checkpoints", "index-checkpoints" })
        {
            var root = Path.Combine(dir, "checkpoints", kind);
            if (!Directory.Exists(root)) continue;
            foreach (var sub in Directory.EnumerateDirectories(root))
            {
                if (Path.GetFileName(sub) == tokenText) continue;
                foreach (var metadata in Directory.EnumerateFiles(sub, "info.dat*")) File.Delete(metadata);
                StorageIo.FsyncDirectory(sub);
                Directory.Delete(sub, recursive: true);
            }
            StorageIo.FsyncDirectory(root);
        }
    }

    /// <summary>Removes everything in <paramref name="dir"/> and syncs it, leaving an empty store directory.</summary>
    public static void DeleteContents(string dir)
    {
        foreach (var sub in Directory.EnumerateDirectories(dir)) Directory.Delete(sub, recursive: true);
        foreach (var file in Directory.EnumerateFiles(dir)) File.Delete(file);
        StorageIo.FsyncDirectory(dir);
    }
}
