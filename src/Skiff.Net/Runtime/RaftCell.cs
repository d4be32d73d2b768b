using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using Skiff.Core;

namespace Skiff.Net.Runtime;

/// <summary>The node's Raft state between steps: the one place the runtime calls the reducer's functions
/// (Raft.init / Raft.step) and keeps the state they return, so that the event loop depends only on the contract in
/// Types.fs. (Not to be confused with the simulator's <c>Reducer</c>, the pluggable reducer a simulation runs.)</summary>
internal sealed class RaftCell
{
    private State _state = null!;

    /// <summary>Initialises the reducer and returns its first effects.</summary>
    public FSharpList<Effect> Init(Start start)
    {
        var (state, effects) = Raft.init(start);
        _state = state;
        return effects;
    }

    /// <summary>On a leader, each follower's lag (last index minus its match); read from any thread: the state is
    /// immutable and replaced whole, so a reader sees one consistent step.</summary>
    public IReadOnlyDictionary<Guid, long> PeerLag()
    {
        var s = Volatile.Read(ref _state);
        var lags = new Dictionary<Guid, long>();
        if (s is null || !Raft.isLeader(s)) return lags;
        var last = Raft.lastIndex(s);
        foreach (var id in Raft.configuration(s).Members.Keys)
        {
            if (id == Raft.id(s)) continue;
            var progress = Raft.progress(id, s);
            if (progress is not null) lags[id] = last - progress.Value.Match;
        }
        return lags;
    }

    /// <summary>Feeds one event and returns the effects to carry out.</summary>
    public FSharpList<Effect> Step(Event ev)
    {
        var (state, effects) = Raft.step(_state, ev);
        _state = state;
        return effects;
    }

    /// <summary>The commit index the reducer knows.</summary>
    public long CommitIndex => Raft.commitIndex(_state);

    /// <summary>Whether <see cref="Init"/> has run (a node that failed to start has no state to speak of).</summary>
    public bool Started => _state is not null;

    /// <summary>The reducer's defaults.</summary>
    public static Options DefaultOptions => Skiff.Core.OptionsModule.defaults;
}
