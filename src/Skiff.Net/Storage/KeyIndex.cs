namespace Skiff.Net.Storage;

/// <summary>
/// An ordered index of the keys of the key-value store (FASTER's hash index has no ordered scan), plus a
/// refcounted map of their directory parts. Most keys sit in a sorted array (the base), never changed in place;
/// changes since it was built are two small sets beside it: keys added that are not in the base, and base keys
/// removed. An array of references is ~8 bytes a key where a sorted set and a hash set of every key took ~80, and a
/// base can be handed to another thread as it is: a snapshot writes it out (<see cref="Freeze"/>) while applying goes
/// on, and the merged array it writes becomes the next base (<see cref="Adopt"/>), so the sets stay small.
/// <para>Costs: a put or delete of a key in the base is a binary search (O(log n)); of a new key O(1) (it goes to a
/// hash set and an unsorted list, merged into a sorted set by the next listing: inserting each put into a sorted set
/// directly was ~5% of a member's CPU at 10,000 puts/s of new keys, for listings that may never come). Listing is
/// O(log n + k). Not thread-safe: the state machine serialises access; a <see cref="Frozen"/> view is immutable.</para>
/// </summary>
internal sealed class KeyIndex
{
    private string[] _base = [];
    private HashSet<string> _removed = new(StringComparer.Ordinal); // keys of _base no longer live
    private HashSet<string> _added = new(StringComparer.Ordinal); // live keys not in _base
    private SortedSet<string> _addedSorted = new(StringComparer.Ordinal); // _added in order, after Merge
    private readonly List<string> _unsorted = new(); // put in _added since the last merge (some may be gone since)
    private List<string>? _touched; // keys whose liveness changed since Freeze, while a frozen view is being written
    // Directory parts: how many keys each has, and the same parts in order (so a page of them starts anywhere in
    // O(log n), where a SortedDictionary would have to be walked from its first part).
    private Dictionary<string, int> _prefixes = new(StringComparer.Ordinal);
    private SortedSet<string> _prefixOrder = new(StringComparer.Ordinal);

    /// <summary>Number of keys.</summary>
    public int Count => _base.Length - _removed.Count + _added.Count;

    private bool InBase(string key) => Array.BinarySearch(_base, key, StringComparer.Ordinal) >= 0;

    /// <summary>Whether <paramref name="key"/> is in the index.</summary>
    public bool Contains(string key) => _added.Contains(key) || (!_removed.Contains(key) && InBase(key));

    /// <summary>Adds a key; no-op if present.</summary>
    /// <param name="key">The key.</param>
    public void Add(string key)
    {
        if (_added.Contains(key)) return;
        if (InBase(key))
        {
            if (!_removed.Remove(key)) return;
        }
        else
        {
            _added.Add(key);
            _unsorted.Add(key);
        }
        _touched?.Add(key);
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
        if (_added.Remove(key)) _addedSorted.Remove(key); // if it is still in _unsorted, the merge skips it
        else if (!InBase(key) || !_removed.Add(key)) return false;
        _touched?.Add(key);
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

    /// <summary>Replaces the contents with the given (distinct) keys: one sort, no tree to build.</summary>
    /// <param name="keys">The live keys.</param>
    public void Rebuild(ICollection<string> keys)
    {
        var sorted = new string[keys.Count];
        keys.CopyTo(sorted, 0);
        Array.Sort(sorted, StringComparer.Ordinal);
        LoadSorted(sorted);
    }

    /// <summary>Replaces the contents with <paramref name="sorted"/>, distinct keys in ordinal order (the array is
    /// kept as the base, not copied).</summary>
    /// <param name="sorted">The live keys, sorted.</param>
    public void LoadSorted(string[] sorted)
    {
        SetBase(sorted);
        _touched = null;
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        string? last = null; // sorted keys of one directory mostly follow each other: count them without a substring each
        var lastCount = 0;
        foreach (var k in sorted)
        {
            var slash = k.LastIndexOf('/');
            if (slash < 0) continue;
            if (last is not null && k.AsSpan(0, slash).SequenceEqual(last)) lastCount++;
            else
            {
                if (last is not null) counts[last] = counts.GetValueOrDefault(last) + lastCount;
                last = k.Substring(0, slash);
                lastCount = 1;
            }
        }
        if (last is not null) counts[last] = counts.GetValueOrDefault(last) + lastCount;
        _prefixes = counts;
        _prefixOrder = new SortedSet<string>(counts.Keys, StringComparer.Ordinal);
    }

    private void SetBase(string[] sorted)
    {
        _base = sorted;
        _removed = new HashSet<string>(StringComparer.Ordinal);
        _added = new HashSet<string>(StringComparer.Ordinal);
        _addedSorted = new SortedSet<string>(StringComparer.Ordinal);
        _unsorted.Clear();
    }

    /// <summary>Removes everything.</summary>
    public void Clear() => LoadSorted([]);

    /// <summary>The key minus its last <c>/</c> segment, or null for a key without <c>/</c>.</summary>
    /// <param name="key">The key.</param>
    /// <returns>Its directory part.</returns>
    public static string? DirectoryOf(string key)
    {
        int slash = key.LastIndexOf('/');
        return slash < 0 ? null : key.Substring(0, slash);
    }

    /// <summary>The keys as they are now, as an immutable view another thread can write out (see
    /// <see cref="Frozen.Sorted"/>) while this index goes on changing. Costs a copy of the changes since the base was
    /// built, not of the keys. Until <see cref="Adopt"/> or <see cref="Thaw"/>, the index remembers which keys
    /// change, so the sorted array the view produces can become its base.</summary>
    public Frozen Freeze()
    {
        _touched = new List<string>();
        return new Frozen(_base, [.. _removed], [.. _added]);
    }

    /// <summary>Makes <paramref name="frozen"/>'s sorted array (it must have been made, <see cref="Frozen.Sorted"/>)
    /// the base, and the changes since <see cref="Freeze"/> the sets beside it: the keys are the same, the sets small
    /// again. Only for the view the last <see cref="Freeze"/> returned.</summary>
    public void Adopt(Frozen frozen)
    {
        if (_touched is not { } touched || frozen.Result is not { } merged)
        {
            Thaw();
            return;
        }
        var live = new Dictionary<string, bool>(StringComparer.Ordinal);
        foreach (var k in touched) live[k] = Contains(k);
        SetBase(merged);
        _touched = null;
        foreach (var (k, isLive) in live)
        {
            var inBase = InBase(k);
            if (isLive && !inBase)
            {
                _added.Add(k);
                _unsorted.Add(k);
            }
            else if (!isLive && inBase) _removed.Add(k);
        }
    }

    /// <summary>Stops remembering changes for a frozen view that will not be adopted (its snapshot failed).</summary>
    public void Thaw() => _touched = null;

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
        if (Count == 0 || limit <= 0) return result;
        var lower = !string.IsNullOrEmpty(startAfter) && string.CompareOrdinal(startAfter, prefix) > 0 ? startAfter : prefix;
        var b = LowerBound(_base, lower);
        using var added = From(_addedSorted, lower).GetEnumerator();
        var a = added.MoveNext() ? added.Current : null;
        while (result.Count < limit)
        {
            while (b < _base.Length && _removed.Contains(_base[b])) b++;
            string k;
            if (b < _base.Length && (a is null || string.CompareOrdinal(_base[b], a) < 0)) k = _base[b++];
            else if (a is not null)
            {
                k = a;
                a = added.MoveNext() ? added.Current : null;
            }
            else break;
            if (!k.StartsWith(prefix, StringComparison.Ordinal)) break;
            if (startAfter is not null && string.CompareOrdinal(k, startAfter) <= 0) continue; // only startAfter itself
            result.Add(k);
        }
        return result;
    }

    private static IEnumerable<string> From(SortedSet<string> set, string lower) =>
        set.Count == 0 || string.CompareOrdinal(lower, set.Max) > 0 ? [] : set.GetViewBetween(lower, set.Max!);

    /// <summary>The position of the first key at or after <paramref name="key"/> in a sorted array.</summary>
    private static int LowerBound(string[] sorted, string key)
    {
        var i = Array.BinarySearch(sorted, key, StringComparer.Ordinal);
        return i >= 0 ? i : ~i;
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

    /// <summary>Brings the sorted set of added keys up to date; when the changes beside the base have grown to a
    /// quarter of it, merges them into a new base instead (a listing pays that, as it paid a full sort before).</summary>
    private void Merge()
    {
        if (_unsorted.Count == 0 && _removed.Count <= 1024) return;
        var changes = _added.Count + _removed.Count;
        if (changes > 1024 && changes > _base.Length / 4)
        {
            var touched = _touched;
            SetBase(Frozen.MergeSorted(_base, _removed, [.. _added]));
            _touched = touched; // a frozen view being written stays adoptable: Adopt works from liveness, not layout
            return;
        }
        if (_unsorted.Count > 1024 && _unsorted.Count > _addedSorted.Count / 4)
            _addedSorted = new SortedSet<string>(_added, StringComparer.Ordinal);
        else
            foreach (var k in _unsorted)
                if (_added.Contains(k)) _addedSorted.Add(k);
        _unsorted.Clear();
    }

    /// <summary>The keys of a <see cref="KeyIndex"/> at one moment: its base, and copies of the changes beside it.
    /// Immutable; <see cref="Sorted"/> may run on any thread.</summary>
    internal sealed class Frozen(string[] @base, string[] removed, string[] added)
    {
        /// <summary>The sorted keys, once <see cref="Sorted"/> has made them.</summary>
        public string[]? Result { get; private set; }

        /// <summary>Number of keys.</summary>
        public int Count => @base.Length - removed.Length + added.Length;

        /// <summary>The keys in ordinal order (made once, O(n + d log d) for d changes).</summary>
        public string[] Sorted() => Result ??= MergeSorted(@base, new HashSet<string>(removed, StringComparer.Ordinal), added);

        /// <summary><paramref name="base"/> without <paramref name="removed"/>, merged with <paramref name="added"/>
        /// (sorted here, in place).</summary>
        internal static string[] MergeSorted(string[] @base, HashSet<string> removed, string[] added)
        {
            Array.Sort(added, StringComparer.Ordinal);
            var merged = new string[@base.Length - removed.Count + added.Length];
            int b = 0, a = 0, m = 0;
            while (true)
            {
                while (b < @base.Length && removed.Contains(@base[b])) b++;
                if (b < @base.Length && (a == added.Length || string.CompareOrdinal(@base[b], added[a]) < 0)) merged[m++] = @base[b++];
                else if (a < added.Length) merged[m++] = added[a++];
                else break;
            }
            return merged;
        }
    }
}
