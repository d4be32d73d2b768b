using System.Threading.Channels;

namespace Skiff.Net.Runtime;

/// <summary>The applier's watches: every change, in commit order, with a bounded buffer per subscriber and a history
/// for resuming.</summary>
internal sealed partial class Applier
{
    // ---------------- watches ----------------

    /// <summary>A watcher of changes under a prefix.</summary>
    internal sealed class Subscription
    {
        public required string Prefix { get; init; }
        public required long FromIndex { get; init; }
        public required Channel<Change> Channel { get; init; }
    }

    /// <summary>After a snapshot install moved the state machine from <paramref name="before"/> to
    /// <paramref name="installed"/>: the changes in between were never applied here, so they are published from the
    /// installed snapshot's change history (everything up to <paramref name="before"/> was committed, so it agrees
    /// with that history). If the history does not reach back that far, watchers would miss changes: they are
    /// ended with StreamClosed naming the index to resume from, and the in-memory history restarts after the
    /// snapshot.</summary>
    private void CatchUpWatchers(long before, long installed)
    {
        var missed = new List<Change>();
        long floor = installed;
        if (installed >= before && _durable is not null && _durable.TryReadChanges(before + 1, installed, "", missed, out floor))
        {
            foreach (var c in missed) Publish(c);
            return;
        }
        lock (_subsGate)
        {
            _history.Clear(installed);
            var gone = new SkiffException(ErrorKind.StreamClosed,
                $"watch ended: this node installed a snapshot at index {installed} and no longer has the changes after {before} up to {floor}; list the keys and watch from {installed + 1}");
            foreach (var s in _subs) s.Channel.Writer.TryComplete(gone);
            _subs.Clear();
        }
    }

    private void Publish(Change change)
    {
        SafeChanged(change);
        lock (_subsGate)
        {
            _history.Add(change);
            for (var i = _subs.Count - 1; i >= 0; i--)
            {
                var s = _subs[i];
                if (change.Index < s.FromIndex || !change.Key.StartsWith(s.Prefix, StringComparison.Ordinal)) continue;
                if (!s.Channel.Writer.TryWrite(change))
                {
                    s.Channel.Writer.TryComplete(new SkiffException(ErrorKind.StreamClosed,
                        $"watch dropped: the subscriber fell more than {_watchCapacity} changes behind at index {change.Index}; resume from that index"));
                    _subs.RemoveAt(i);
                }
            }
        }
    }

    private void SafeChanged(Change change)
    {
        try { Changed?.Invoke(change); }
        catch (Exception ex) { Microsoft.Extensions.Logging.LoggerExtensions.LogWarning(Logger, ex, "Skiff: a change observer failed"); }
    }

    private static SkiffException Compacted(long fromIndex, long floor) =>
        new(ErrorKind.StreamClosed,
            $"cannot resume from index {fromIndex}: changes up to index {floor} are compacted away on this node; the oldest index still available is {floor + 1} (list the keys and watch from there)");

    /// <summary>Starts a watch. With <paramref name="fromIndex"/> &gt; 0, changes at or after that index that were
    /// already applied come first, then live ones, with no gap and no duplicate. Recent changes come from the
    /// in-memory history; older ones from the state machine's durable change history (which survives restarts);
    /// older than both is refused with StreamClosed naming the oldest index still available.</summary>
    public ChannelReader<Change> Subscribe(string prefix, long fromIndex, CancellationToken ct)
    {
        // The bulk of a backlog older than the in-memory history is read before taking the lock, so applying is
        // not held up by it; under the lock only what left the in-memory history meanwhile is added.
        List<Change>? older = null;
        long olderTo = 0;
        if (fromIndex > 0 && _durable is not null)
        {
            var memoryFloor = _history.Floor;
            if (fromIndex <= memoryFloor)
            {
                older = new();
                if (!_durable.TryReadChanges(fromIndex, memoryFloor, prefix, older, out var floor)) throw Compacted(fromIndex, floor);
                olderTo = memoryFloor;
            }
        }
        lock (_subsGate)
        {
            // A slot is held from here until the watch leaves _subs: cancelled, dropped as too slow, ended by a
            // snapshot install or by shutdown.
            if (_subs.Count >= MaxWatchers)
                throw new SkiffException(ErrorKind.Overloaded,
                    $"this node already serves {_subs.Count} watches, its limit (MaxWatchers); end one or watch through another member");
            var backlog = new List<Change>();
            if (fromIndex > 0)
            {
                if (fromIndex <= _history.Floor && fromIndex <= _sm.AppliedIndex)
                {
                    // Published changes at or below _history.Floor are no longer in memory; every one above it is.
                    if (_durable is null) throw Compacted(fromIndex, _history.Floor);
                    older ??= new();
                    var from = Math.Max(fromIndex, olderTo + 1);
                    if (from <= _history.Floor && !_durable.TryReadChanges(from, _history.Floor, prefix, older, out var floor))
                        throw Compacted(fromIndex, floor);
                    backlog.AddRange(older);
                }
                _history.CopyFrom(fromIndex, prefix, backlog);
            }
            var channel = Channel.CreateBounded<Change>(new BoundedChannelOptions(_watchCapacity + backlog.Count)
            {
                SingleReader = true,
                SingleWriter = true,
                FullMode = BoundedChannelFullMode.Wait,
            });
            foreach (var c in backlog) channel.Writer.TryWrite(c);
            var sub = new Subscription { Prefix = prefix, FromIndex = fromIndex, Channel = channel };
            _subs.Add(sub);
            ct.Register(() =>
            {
                lock (_subsGate) _subs.Remove(sub);
                channel.Writer.TryComplete();
            });
            return channel.Reader;
        }
    }
}
