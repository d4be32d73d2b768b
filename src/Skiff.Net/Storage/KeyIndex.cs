namespace Skiff.Net.Storage;

/// <summary>
/// An ordered index of the keys of the key-value store (FASTER's hash index has no ordered scan), plus a
/// refcounted map of their directory parts. Listing the keys under a prefix costs O(log n + k); keeping the index
/// costs O(log n) per put or delete. Not thread-safe: the state machine serialises access.
/// </summary>
public sealed class KeyIndex
{
    private SortedSet<string> _keys = new(StringComparer.Ordinal);
    private SortedDictionary<string, int> _prefixes = new(StringComparer.Ordinal);

    /// <summary>Number of keys.</summary>
    public int Count => _keys.Count;

    /// <summary>Adds a key; no-op if present.</summary>
    /// <param name="key">The key.</param>
    public void Add(string key)
    {
        if (!_keys.Add(key)) return;
        if (DirectoryOf(key) is { } dir)
            _prefixes[dir] = _prefixes.TryGetValue(dir, out var n) ? n + 1 : 1;
    }

    /// <summary>Removes a key; no-op if absent. Its directory part goes when its last key goes.</summary>
    /// <param name="key">The key.</param>
    /// <returns>Whether the key was present.</returns>
    public bool Remove(string key)
    {
        if (!_keys.Remove(key)) return false;
        if (DirectoryOf(key) is { } dir && _prefixes.TryGetValue(dir, out var n))
        {
            if (n <= 1) _prefixes.Remove(dir);
            else _prefixes[dir] = n - 1;
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
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var k in sorted)
            if (DirectoryOf(k) is { } dir)
                counts[dir] = counts.TryGetValue(dir, out var n) ? n + 1 : 1;
        _prefixes = new SortedDictionary<string, int>(counts, StringComparer.Ordinal);
    }

    /// <summary>Removes everything.</summary>
    public void Clear()
    {
        _keys.Clear();
        _prefixes.Clear();
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
    public List<string> List(string prefix, int limit = int.MaxValue)
    {
        var result = new List<string>();
        if (_keys.Count == 0 || limit <= 0) return result;
        IEnumerable<string> range;
        if (prefix.Length == 0) range = _keys;
        else
        {
            var max = _keys.Max!;
            if (string.CompareOrdinal(prefix, max) > 0) return result;
            var upper = Successor(prefix);
            range = _keys.GetViewBetween(prefix, upper is not null && string.CompareOrdinal(upper, max) < 0 ? upper : max);
        }
        foreach (var k in range)
        {
            if (!k.StartsWith(prefix, StringComparison.Ordinal)) break;
            result.Add(k);
            if (result.Count >= limit) break;
        }
        return result;
    }

    /// <summary>Every distinct directory part of the keys, in ordinal order.</summary>
    /// <returns>The prefixes.</returns>
    public List<string> Prefixes() => new(_prefixes.Keys);

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
}
