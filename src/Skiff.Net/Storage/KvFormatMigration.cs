namespace Skiff.Net.Storage;

/// <summary>
/// Converts, when it opens, a key-value store of older versions (object values, <see cref="LegacyObjectStore"/>)
/// into this version's format (inline values, <see cref="FasterKvStore"/>): a data directory of an older version, or
/// a snapshot streamed from an older member and just installed. Once, and crash-safely: the new store is written
/// into the staging directory snapshot installs use (<c>kv.staging</c>) from the old store's newest checkpoint, made
/// durable, marked complete and swapped in by the same renames (<see cref="SnapshotInstaller"/>). A crash before the
/// mark leaves the old store, and the next open converts again; after it, the next open finishes the swap.
/// </summary>
internal static class KvFormatMigration
{
    /// <summary>Converts the store in <paramref name="dir"/> if it is of the old format. A store with no complete
    /// checkpoint holds nothing the log cannot replay, so it is cleared instead; unless it has unfinished ones and
    /// the log was compacted (<paramref name="logHoldsEverything"/> false), which is
    /// <see cref="ErrorKind.StorageCorrupted"/> as it is for a store of this format.</summary>
    /// <returns>Whether the directory held an old store (converted or cleared).</returns>
    public static bool ConvertIfNeeded(string dir, KvOptions options, bool logHoldsEverything)
    {
        var geometry = StoreGeometry.Read(dir);
        if (geometry is { InlineValues: true }) return false;
        var checkpoints = Path.Combine(dir, "checkpoints", "cpr-checkpoints");
        bool hasCheckpoint = Directory.Exists(checkpoints) && Directory.EnumerateDirectories(checkpoints).Any();
        if (geometry is null && !hasCheckpoint && !Directory.EnumerateFiles(dir, "hlog.*").Any()) return false;
        using (var legacy = hasCheckpoint ? LegacyObjectStore.TryOpen(dir, geometry ?? KvOptions.LegacyGeometry, options.IndexSizeBytes) : null)
        {
            if (legacy is null)
            {
                if (hasCheckpoint && !logHoldsEverything)
                    throw new SkiffException(ErrorKind.StorageCorrupted,
                        $"the key-value store in {dir} has no complete checkpoint and the log no longer starts at index 1");
                CheckpointFiles.DeleteContents(dir);
                return true;
            }
            var pageSizeBits = options.PageSizeBits;
            while (!TryConvert(legacy, dir + ".staging", options with { PageSizeBits = pageSizeBits }, out var needed))
                pageSizeBits = needed;
        }
        SnapshotInstaller.CommitStaging(dir);
        return true;
    }

    /// <summary>Writes every live record of <paramref name="legacy"/> into a new store in <paramref name="staging"/>
    /// and makes it durable; false, with the page size a value needs, if one does not fit a page.</summary>
    private static bool TryConvert(LegacyObjectStore legacy, string staging, KvOptions options, out int neededPageSizeBits)
    {
        neededPageSizeBits = 0;
        if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
        StorageIo.CreateDirectoryDurably(staging);
        using (var store = FasterKvStore.Create(staging, options))
        {
            store.StartSession();
            foreach (var (key, value) in legacy.LiveRecords())
            {
                // The old store had no such limit: the pages must hold its largest value (and its history copy).
                var needed = KvOptions.PageSizeBitsFor(value.Length);
                if (needed > store.Geometry.PageSizeBits)
                {
                    neededPageSizeBits = needed;
                    return false;
                }
                store.Upsert(key, value);
            }
            store.TakeCheckpoint();
        }
        foreach (var file in Directory.EnumerateFiles(staging, "*", SearchOption.AllDirectories))
        {
            using var h = File.OpenHandle(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            StorageIo.Fdatasync(h, file);
        }
        foreach (var d in Directory.EnumerateDirectories(staging, "*", SearchOption.AllDirectories)) StorageIo.FsyncDirectory(d);
        StorageIo.FsyncDirectory(staging);
        return true;
    }
}
