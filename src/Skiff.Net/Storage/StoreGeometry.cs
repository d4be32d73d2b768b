using System.Globalization;
using System.Text;

namespace Skiff.Net.Storage;

/// <summary>
/// The page and segment sizes a FASTER store's files were written with, kept in a <c>geometry</c> file beside them.
/// FASTER stores neither: an address names a segment file by its size, and a record never crosses a page, so a
/// store opened with other sizes would read the wrong files or split records. Smaller segments let compaction free
/// disk sooner, so new stores get smaller ones than older versions made; a store written before this file existed
/// keeps the sizes it was written with (<c>legacy</c>).
/// </summary>
/// <param name="PageSizeBits">log2 of a page.</param>
/// <param name="SegmentSizeBits">log2 of a segment file.</param>
/// <param name="InlineValues">A key-value store whose keys and values lie in the hybrid log's pages
/// (<c>values=inline</c>); false for the object-log stores of older versions (and for logs, where it means nothing).</param>
internal readonly record struct StoreGeometry(int PageSizeBits, int SegmentSizeBits, bool InlineValues = false)
{
    /// <summary>The file's name in the store directory.</summary>
    public const string FileName = "geometry";

    /// <summary>The geometry of the store in <paramref name="dir"/>: its <c>geometry</c> file; else
    /// <paramref name="legacy"/> if it already holds data files (made before the file existed); else
    /// <paramref name="wanted"/>. Whatever is chosen is written down durably, so it never changes afterwards.</summary>
    /// <param name="dir">The store directory (it exists).</param>
    /// <param name="wanted">The sizes for a new store.</param>
    /// <param name="legacy">The sizes older versions used.</param>
    /// <param name="dataFilePrefix">How the store's data files' names start ("hlog.", "raft.log").</param>
    public static StoreGeometry Resolve(string dir, StoreGeometry wanted, StoreGeometry legacy, string dataFilePrefix)
    {
        var path = Path.Combine(dir, FileName);
        if (Read(dir) is { } written) return written;
        var chosen = Directory.EnumerateFiles(dir, dataFilePrefix + "*").Any() ? legacy : wanted;
        StorageIo.WriteAtomically(path, Encoding.ASCII.GetBytes(chosen.ToString()));
        StorageIo.FsyncDirectory(dir);
        return chosen;
    }

    /// <summary>The geometry written in <paramref name="dir"/>, or null if it has no <c>geometry</c> file.</summary>
    public static StoreGeometry? Read(string dir)
    {
        var path = Path.Combine(dir, FileName);
        return File.Exists(path) ? Parse(path, File.ReadAllText(path, Encoding.ASCII)) : null;
    }

    /// <summary>The file's content: <c>page=N segment=M</c>; for a store of inline values
    /// <c>values=inline pagebits=N segmentbits=M</c>, which versions before it refuse (their parser needs
    /// <c>page=</c> and <c>segment=</c>) rather than misread as a store of object values.</summary>
    public override string ToString() => InlineValues
        ? string.Create(CultureInfo.InvariantCulture, $"values=inline pagebits={PageSizeBits} segmentbits={SegmentSizeBits}\n")
        : string.Create(CultureInfo.InvariantCulture, $"page={PageSizeBits} segment={SegmentSizeBits}\n");

    private static StoreGeometry Parse(string path, string text)
    {
        int? page = null, segment = null;
        bool inline = false;
        foreach (var part in text.Split((char[])[' ', '\n'], StringSplitOptions.RemoveEmptyEntries))
        {
            if (part == "values=inline") inline = true;
            var kv = part.Split('=');
            if (kv.Length == 2 && int.TryParse(kv[1], NumberStyles.None, CultureInfo.InvariantCulture, out var v) && v is > 8 and < 40)
            {
                if (kv[0] is "page" or "pagebits") page = v;
                else if (kv[0] is "segment" or "segmentbits") segment = v;
            }
        }
        if (page is not { } p || segment is not { } s || s < p)
            throw new SkiffException(ErrorKind.StorageCorrupted, $"{path} does not hold a page and segment size: '{text.Trim()}'");
        return new StoreGeometry(p, s, inline);
    }
}
