using System.Runtime.CompilerServices;

namespace Skiff.Net.Runtime;

/// <summary>
/// Listings in pages, for every layer: the size a member serves (never more than its largest page, whatever a client
/// asks for, so one request cannot make a member build and send its whole key set, nor hold the state machine's lock
/// for a whole walk), and walking every page of a listing (the calls that return everything are such walks, one
/// bounded page at a time).
/// </summary>
internal static class Paging
{
    /// <summary>The default largest page a member serves.</summary>
    public const int DefaultMaxPage = 10_000;

    /// <summary>The size of the page to serve for a requested <paramref name="limit"/>: 0 asks for the largest page
    /// (what a skiff-rs client, which sends none, gets), a larger limit gets the largest, a negative one is refused.</summary>
    public static int Size(int limit, int maxPage)
    {
        if (limit < 0) throw new SkiffException(ErrorKind.InvalidArgument, $"a listing limit must not be negative (it was {limit})");
        return limit == 0 ? maxPage : Math.Min(limit, maxPage);
    }

    /// <summary>Throws InvalidKey unless <paramref name="startAfter"/> is null, empty, or of a key's length at most
    /// (a continuation is the last item of a page, so it never needs to be longer).</summary>
    public static void CheckStartAfter(string? startAfter)
    {
        if (!string.IsNullOrEmpty(startAfter) && System.Text.Encoding.UTF8.GetByteCount(startAfter) > RequestLimits.MaxKeyBytes)
            throw new SkiffException(ErrorKind.InvalidKey, $"a listing's start is at most {RequestLimits.MaxKeyBytes} UTF-8 bytes, like a key");
    }

    /// <summary>A page of <paramref name="size"/> items from a read of up to size + 1 of them (the extra one only says
    /// that more follow).</summary>
    public static ListPage Cut(IReadOnlyList<string> items, int size) =>
        items.Count > size ? new ListPage(items.Take(size).ToList(), more: true) : new ListPage(items, more: false);

    /// <summary>Every item of a listing, reading it page by page with <paramref name="page"/> (given the continuation,
    /// null for the first page).</summary>
    public static async Task<IReadOnlyList<string>> AllAsync(Func<string?, CancellationToken, Task<ListPage>> page, CancellationToken ct)
    {
        var all = new List<string>();
        await foreach (var item in EnumerateAsync(page, ct).ConfigureAwait(false)) all.Add(item);
        return all;
    }

    /// <summary>Every item of a listing, read page by page with <paramref name="page"/> as the enumeration goes.</summary>
    public static async IAsyncEnumerable<string> EnumerateAsync(Func<string?, CancellationToken, Task<ListPage>> page,
        [EnumeratorCancellation] CancellationToken ct = default)
    {
        string? next = null;
        while (true)
        {
            var current = await page(next, ct).ConfigureAwait(false);
            foreach (var item in current.Items) yield return item;
            if (current.Next is null) yield break;
            // A continuation that does not move forward would repeat the same page for ever.
            if (next is not null && string.CompareOrdinal(current.Next, next) <= 0)
                throw new SkiffException(ErrorKind.InvalidArgument, $"a listing page did not move past '{next}'");
            next = current.Next;
        }
    }
}
