namespace Skiff.Net.Runtime;

/// <summary>A write's place in a client session: which session, its number, and the lowest number whose reply the
/// client still waits for (the cluster may forget every result below it).</summary>
/// <param name="Id">The session (the log index that opened it).</param>
/// <param name="Sequence">The request's number; a retry reuses it.</param>
/// <param name="Acknowledged">Every request numbered below this has had its reply.</param>
internal readonly record struct SessionRef(long Id, long Sequence, long Acknowledged);

/// <summary>
/// One client session as its holder sees it (a <see cref="SkiffGrpcClient"/>, or a member for its own writes and
/// for the session-less calls it forwards): opens the session through the log on first use, numbers writes, and
/// tracks which replies are still awaited. Thread-safe; writes may be concurrent.
/// </summary>
internal sealed class ClientSession
{
    private readonly object _gate = new();
    private readonly SortedSet<long> _outstanding = new();
    private readonly Func<CancellationToken, Task<long>> _open;
    private Task<long>? _opening;
    private long _id;
    private long _next = 1;

    /// <summary>A session opened by <paramref name="open"/> (a call that registers one and returns its id).</summary>
    public ClientSession(Func<CancellationToken, Task<long>> open) => _open = open;

    /// <summary>The session's id, 0 while none is open.</summary>
    public long Id => Interlocked.Read(ref _id);

    /// <summary>The open session's id, opening one first if needed. Concurrent callers share one opening; a caller
    /// that gives up (its token) leaves the opening to finish for the others.</summary>
    public async Task<long> EnsureOpenAsync(CancellationToken ct)
    {
        var id = Id;
        if (id != 0) return id;
        Task<long> opening;
        lock (_gate)
        {
            if (_id != 0) return _id;
            if (_opening is null || _opening.IsFaulted || _opening.IsCanceled)
                _opening = OpenAsync();
            opening = _opening;
        }
        return await opening.WaitAsync(ct).ConfigureAwait(false);
    }

    private async Task<long> OpenAsync()
    {
        // Not tied to one caller's token: another caller may be waiting for the same session. It has its own limit.
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var id = await _open(limit.Token).ConfigureAwait(false);
        lock (_gate) _id = id;
        return id;
    }

    /// <summary>Takes the next request number and marks it as awaiting its reply.</summary>
    public long Begin()
    {
        lock (_gate)
        {
            var sequence = _next++;
            _outstanding.Add(sequence);
            return sequence;
        }
    }

    /// <summary>The reply to <paramref name="sequence"/> arrived (or the caller gave up on it).</summary>
    public void End(long sequence)
    {
        lock (_gate) _outstanding.Remove(sequence);
    }

    /// <summary>The stamp for request <paramref name="sequence"/> in session <paramref name="id"/>.</summary>
    public SessionRef Stamp(long id, long sequence)
    {
        lock (_gate) return new SessionRef(id, sequence, _outstanding.Count == 0 ? _next : _outstanding.Min);
    }

    /// <summary>The cluster no longer knows session <paramref name="id"/>: the next write opens a new one.</summary>
    public void Forget(long id)
    {
        lock (_gate)
        {
            if (_id == id)
            {
                _id = 0;
                _opening = null;
            }
        }
    }
}
