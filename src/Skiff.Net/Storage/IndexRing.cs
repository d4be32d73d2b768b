namespace Skiff.Net.Storage;

/// <summary>An ascending sequence of log indexes, each with a size, with O(1) append at the newest end and removal at
/// the oldest, and O(log n) search: the state machine's in-memory index of the changes it keeps in its durable change
/// history (the size is the record's, so the history can be bounded in bytes). Not thread-safe: the state machine
/// serialises access.</summary>
internal sealed class IndexRing
{
    private long[] _items = new long[16];
    private int[] _sizes = new int[16];
    private int _head;

    /// <summary>Number of indexes.</summary>
    public int Count { get; private set; }

    /// <summary>The <paramref name="i"/>-th oldest index.</summary>
    public long this[int i] => _items[(_head + i) & (_items.Length - 1)];

    /// <summary>The size given with the <paramref name="i"/>-th oldest index.</summary>
    public int SizeAt(int i) => _sizes[(_head + i) & (_items.Length - 1)];

    /// <summary>Appends an index greater than every one held, with its size.</summary>
    public void Add(long index, int size)
    {
        if (Count == _items.Length)
        {
            var bigger = new long[_items.Length * 2];
            var biggerSizes = new int[_items.Length * 2];
            for (var i = 0; i < Count; i++)
            {
                bigger[i] = this[i];
                biggerSizes[i] = SizeAt(i);
            }
            _items = bigger;
            _sizes = biggerSizes;
            _head = 0;
        }
        _items[(_head + Count) & (_items.Length - 1)] = index;
        _sizes[(_head + Count) & (_items.Length - 1)] = size;
        Count++;
    }

    /// <summary>Removes and returns the oldest index and its size.</summary>
    public (long Index, int Size) RemoveOldest()
    {
        var v = (_items[_head], _sizes[_head]);
        _head = (_head + 1) & (_items.Length - 1);
        Count--;
        return v;
    }

    /// <summary>Removes everything.</summary>
    public void Clear()
    {
        _head = 0;
        Count = 0;
    }

    /// <summary>The position of the first index at or after <paramref name="index"/> (Count if none).</summary>
    public int LowerBound(long index)
    {
        int lo = 0, hi = Count;
        while (lo < hi)
        {
            var mid = (lo + hi) >>> 1;
            if (this[mid] < index) lo = mid + 1;
            else hi = mid;
        }
        return lo;
    }
}
