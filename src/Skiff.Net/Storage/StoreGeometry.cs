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
internal readonly record struct StoreGeometry(int PageSizeBits, int SegmentSizeBits)
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
        if (File.Exists(path)) return Parse(path, File.ReadAllText(path, Encoding.ASCII));
        var chosen = Directory.EnumerateFiles(dir, dataFilePrefix + "*").Any() ? legacy : wanted;
        StorageIo.WriteAtomically(path, Encoding.ASCII.GetBytes(chosen.ToString()));
        StorageIo.FsyncDirectory(dir);
        return chosen;
    }

    /// <summary>The file's content: <c>page=N segment=M</c>.</summary>
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"page={PageSizeBits} segment={SegmentSizeBits}\n");

    private static StoreGeometry Parse(string path, string text)
    {
        int? page = null, segment = null;
        foreach (var part in text.Split((char[])[' ', '\n'], StringSplitOptions.RemoveEmptyEntries))
        {
            var kv = part.Split('=');
            if (kv.Length == 2 && int.TryParse(kv[1], NumberStyles.None, CultureInfo.InvariantCulture, out var v) && v is > 8 and < 40)
            {
                if (kv[0] == "page") page = v;
                else if (kv[0] == "segment") segment = v;
            }
        }
        if (page is not { } p || segment is not { } s || s < p)
            throw new SkiffException(ErrorKind.StorageCorrupted, $"{path} does not hold a page and segment size: '{text.Trim()}'");
        return new StoreGeometry(p, s);
    }
}
