namespace Skiff.Net.Storage;

/// <summary>
/// The Raft log's in-memory index of its live entries: the base (the index before the first live entry, and its term
/// when known) and, for every live entry, its term and the address of its record. Recovery builds it by applying the
/// log's records in address order; afterwards the commit loop applies each batch once it is durable, so readers see
/// only durable entries. 16 bytes per live entry, bounded by compaction. Not thread-safe: the log guards it.
/// </summary>
internal sealed class LogIndex
{
    private readonly List<long> _terms = new();
    private readonly List<long> _addresses = new();

    /// <summary>Entries at or below this index are gone.</summary>
    public long BaseIndex { get; private set; }

    /// <summary>The term at <see cref="BaseIndex"/> (0 for a new log), -1 if unknown.</summary>
    public long BaseTerm { get; private set; }

    /// <summary>The last live index (the base when there are no live entries).</summary>
    public long LastIndex => BaseIndex + _terms.Count;

    /// <summary>Number of live entries.</summary>
    public int Count => _terms.Count;

    /// <summary>The term of the last live entry, or of the base when there is none (0 when unknown).</summary>
    public long LastTerm => _terms.Count > 0 ? _terms[^1] : Math.Max(0, BaseTerm);

    /// <summary>The term of live entry <paramref name="index"/> (in (base, last]).</summary>
    public long TermOf(long index) => _terms[(int)(index - BaseIndex - 1)];

    /// <summary>The address of the record of live entry <paramref name="index"/>.</summary>
    public long AddressOf(long index) => _addresses[(int)(index - BaseIndex - 1)];

    /// <summary>The addresses of the records of <paramref name="count"/> live entries from <paramref name="index"/>.</summary>
    public long[] AddressesOf(long index, int count) => _addresses.GetRange((int)(index - BaseIndex - 1), count).ToArray();

    /// <summary>The address of the first live entry's record, if any.</summary>
    public long? FirstAddress => _addresses.Count > 0 ? _addresses[0] : null;

    /// <summary>Takes the first entry seen at recovery as the start of the log (it may start after a truncation):
    /// the base is the index before it, with its term unknown unless the log starts at 1. A base record further on
    /// supplies the term.</summary>
    public void StartBefore(long firstIndex)
    {
        BaseIndex = firstIndex - 1;
        BaseTerm = firstIndex == 1 ? 0 : -1;
    }

    /// <summary>Entries written from <paramref name="first"/> on, with their terms and record addresses; any live
    /// entries at or after <paramref name="first"/> are dropped first (a suffix replacement).</summary>
    public void Append(long first, IEnumerable<long> terms, IEnumerable<long> addresses)
    {
        TruncateFrom(first);
        _terms.AddRange(terms);
        _addresses.AddRange(addresses);
    }

    /// <summary>One entry at <paramref name="index"/>; see <see cref="Append(long, IEnumerable{long}, IEnumerable{long})"/>.</summary>
    public void Append(long index, long term, long address)
    {
        TruncateFrom(index);
        _terms.Add(term);
        _addresses.Add(address);
    }

    private void TruncateFrom(long index)
    {
        int keep = (int)(index - BaseIndex - 1);
        if (keep < _terms.Count)
        {
            _terms.RemoveRange(keep, _terms.Count - keep);
            _addresses.RemoveRange(keep, _addresses.Count - keep);
        }
    }

    /// <summary>A base record: drops entries up to <paramref name="index"/> (all of them for a
    /// <paramref name="reset"/>, or when the base is at or past the last entry) and records the term there.</summary>
    public void SetBase(bool reset, long index, long term)
    {
        if (reset || index >= LastIndex)
        {
            _terms.Clear();
            _addresses.Clear();
        }
        else if (index > BaseIndex)
        {
            int drop = (int)(index - BaseIndex);
            _terms.RemoveRange(0, drop);
            _addresses.RemoveRange(0, drop);
        }
        BaseIndex = index;
        BaseTerm = term;
    }
}
