namespace Skiff.Net.Storage;

/// <summary>
/// An ordered index of the keys of the key-value store (FASTER's hash index has no ordered scan), plus a
/// refcounted map of their directory parts. Listing the keys under a prefix costs O(log n + k) once the index is
/// sorted; a put costs O(1): new keys go to a hash set and an unsorted list, and are merged into the sorted set by
/// the next listing (inserted one by one, or a full sort when many are waiting). Inserting each put into the sorted
/// set directly was ~5% of a member's CPU at 10,000 puts/s of new keys (tree walks over cold nodes on every
/// member's applier), for listings that may never come. A delete costs O(log n). Not thread-safe: the state
/// machine serialises access.
/// </summary>
internal sealed class KeyIndex
{
    private HashSet<string> _all = new(StringComparer.Ordinal);
    private SortedSet<string> _keys = new(StringComparer.Ordinal);
    private readonly List<string> _unsorted = new(); // added since the last merge (some may be removed since)
    // Directory parts: how many keys each has, and the same parts in order (so a page of them starts anywhere in
    // O(log n), where a SortedDictionary would have to be walked from its first part).
    private Dictionary<string, int> _prefixes = new(StringComparer.Ordinal);
    private SortedSet<string> _prefixOrder = new(StringComparer.Ordinal);

    /// <summary>Number of keys.</summary>
    public int Count => _all.Count;

    /// <summary>Adds a key; no-op if present.</summary>
    /// <param name="key">The key.</param>
    public void Add(string key)
    {
        if (!_all.Add(key)) return;
        _unsorted.Add(key);
        if (DirectoryOf(key) is not { } dir) return;
        if (_prefixes.TryGetValue(dir, out var n)) _prefixes[dir] = n + 1;
        else
        {
            _prefixes[dir] = 1;
            _prefixOrder.Add(dir);
        }
    }

    /// <summary>Removes a key; no-op if absent. Its directory part goes when its last key goes.</summary>
    /// <param name="key">The key.</param>
    /// <returns>Whether the key was present.</returns>
    public bool Remove(string key)
    {
        if (!_all.Remove(key)) return false;
        _keys.Remove(key); // if it is still in _unsorted, the merge skips it (it is no longer in _all)
        if (DirectoryOf(key) is { } dir && _prefixes.TryGetValue(dir, out var n))
        {
            if (n > 1) _prefixes[dir] = n - 1;
            else
            {
                _prefixes.Remove(dir);
                _prefixOrder.Remove(dir);
            }
        }
        return true;
    }

    /// <summary>Replaces the contents with the given (distinct) keys: one sort and a linear tree build, much faster
    /// than adding keys one by one in random order.</summary>
    /// <param name="keys">The live keys.</param>
    public void Rebuild(ICollection<string> keys)
    {
        var sorted = new string[keys.Count];
        keys.CopyTo(sorted, 0);
        Array.Sort(sorted, StringComparer.Ordinal);
        _keys = new SortedSet<string>(sorted, StringComparer.Ordinal);
        _all = new HashSet<string>(sorted, StringComparer.Ordinal);
        _unsorted.Clear();
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var k in sorted)
            if (DirectoryOf(k) is { } dir)
                counts[dir] = counts.TryGetValue(dir, out var n) ? n + 1 : 1;
        _prefixes = counts;
        _prefixOrder = new SortedSet<string>(counts.Keys, StringComparer.Ordinal);
    }

    /// <summary>Removes everything.</summary>
    public void Clear()
    {
        _keys.Clear();
        _all.Clear();
        _unsorted.Clear();
        _prefixes.Clear();
        _prefixOrder.Clear();
    }

    /// <summary>The key minus its last <c>/</c> segment, or null for a key without <c>/</c>.</summary>
    /// <param name="key">The key.</param>
    /// <returns>Its directory part.</returns>
    public static string? DirectoryOf(string key)
    {
        int slash = key.LastIndexOf('/');
        return slash < 0 ? null : key.Substring(0, slash);
    }

    /// <summary>All keys starting with <paramref name="prefix"/> (ordinal), in ordinal order; "" gives all.</summary>
    /// <param name="prefix">The prefix.</param>
    /// <param name="limit">At most this many.</param>
    /// <returns>The keys.</returns>
    public List<string> List(string prefix, int limit = int.MaxValue) => List(prefix, null, limit);

    /// <summary>Up to <paramref name="limit"/> keys starting with <paramref name="prefix"/> and ordered after
    /// <paramref name="startAfter"/> (null or "": from the first), in ordinal order. Costs O(log n + limit).</summary>
    /// <param name="prefix">The prefix.</param>
    /// <param name="startAfter">Only keys after this one.</param>
    /// <param name="limit">At most this many.</param>
    /// <returns>The keys.</returns>
    public List<string> List(string prefix, string? startAfter, int limit)
    {
        var result = new List<string>();
        Merge();
        if (_keys.Count == 0 || limit <= 0) return result;
        var lower = !string.IsNullOrEmpty(startAfter) && string.CompareOrdinal(startAfter, prefix) > 0 ? startAfter : prefix;
        var max = _keys.Max!;
        if (string.CompareOrdinal(lower, max) > 0) return result;
        var upper = prefix.Length == 0 ? null : Successor(prefix);
        if (upper is not null && string.CompareOrdinal(lower, upper) >= 0) return result; // after every key under prefix
        var range = _keys.GetViewBetween(lower, upper is not null && string.CompareOrdinal(upper, max) < 0 ? upper : max);
        foreach (var k in range)
        {
            if (!k.StartsWith(prefix, StringComparison.Ordinal)) break;
            if (startAfter is not null && string.CompareOrdinal(k, startAfter) <= 0) continue; // only startAfter itself
            result.Add(k);
            if (result.Count >= limit) break;
        }
        return result;
    }

    /// <summary>Every distinct directory part of the keys, in ordinal order.</summary>
    /// <returns>The prefixes.</returns>
    public List<string> Prefixes() => new(_prefixOrder);

    /// <summary>Up to <paramref name="limit"/> directory parts ordered after <paramref name="startAfter"/> (null or
    /// "": from the first), in ordinal order. Costs O(log n + limit).</summary>
    /// <param name="startAfter">Only parts after this one.</param>
    /// <param name="limit">At most this many.</param>
    /// <returns>The prefixes.</returns>
    public List<string> Prefixes(string? startAfter, int limit)
    {
        var result = new List<string>();
        if (_prefixOrder.Count == 0 || limit <= 0) return result;
        IEnumerable<string> range = _prefixOrder;
        if (!string.IsNullOrEmpty(startAfter))
        {
            var max = _prefixOrder.Max!;
            if (string.CompareOrdinal(startAfter, max) >= 0) return result;
            range = _prefixOrder.GetViewBetween(startAfter, max);
        }
        foreach (var p in range)
        {
            if (string.Equals(p, startAfter, StringComparison.Ordinal)) continue;
            result.Add(p);
            if (result.Count >= limit) break;
        }
        return result;
    }

    /// <summary>The smallest string greater than every string starting with <paramref name="prefix"/>, or null.</summary>
    private static string? Successor(string prefix)
    {
        var chars = prefix.ToCharArray();
        for (int i = chars.Length - 1; i >= 0; i--)
        {
            if (chars[i] != char.MaxValue)
            {
                chars[i]++;
                return new string(chars, 0, i + 1);
            }
        }
        return null;
    }

    /// <summary>Brings the sorted set up to date with the keys added since the last merge.</summary>
    private void Merge()
    {
        if (_unsorted.Count == 0) return;
        if (_unsorted.Count > 1024 && _unsorted.Count > _keys.Count / 4)
        {
            var sorted = new string[_all.Count];
            _all.CopyTo(sorted);
            Array.Sort(sorted, StringComparer.Ordinal);
            _keys = new SortedSet<string>(sorted, StringComparer.Ordinal);
        }
        else
        {
            foreach (var k in _unsorted)
                if (_all.Contains(k)) _keys.Add(k);
        }
        _unsorted.Clear();
    }
}
