namespace Skiff;

/// <summary>One page of a listing (keys, or the directory parts of keys), in ordinal order. A member never returns
/// more than its largest page however many items are asked for, so a listing of a large store is read page by page:
/// pass <see cref="Next"/> as the next call's <c>startAfter</c> until it is null.</summary>
public sealed class ListPage
{
    /// <summary>Creates a page.</summary>
    /// <param name="items">The items, in ordinal order.</param>
    /// <param name="more">Whether items follow the last one.</param>
    public ListPage(IReadOnlyList<string> items, bool more)
    {
        ArgumentNullException.ThrowIfNull(items);
        Items = items;
        Next = more && items.Count > 0 ? items[^1] : null;
    }

    /// <summary>The items of this page, in ordinal order (possibly fewer than asked for, even when more follow).</summary>
    public IReadOnlyList<string> Items { get; }

    /// <summary>The continuation: the last item of this page when more items follow it (pass it as the next call's
    /// <c>startAfter</c>), or null when this page is the last.</summary>
    public string? Next { get; }

    /// <summary>Whether items follow this page.</summary>
    public bool HasMore => Next is not null;
}
