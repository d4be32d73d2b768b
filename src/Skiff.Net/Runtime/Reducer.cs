using Microsoft.FSharp.Collections;
using Skiff.Core;

namespace Skiff.Net.Runtime;

/// <summary>What the runtime read from storage to (re)start the reducer.</summary>
internal sealed record StartInfo(
    Guid Id,
    ulong Seed,
    HardState HardState,
    SnapshotMeta? Snapshot,
    IReadOnlyList<Entry> Entries,
    long Applied,
    Configuration Bootstrap);

/// <summary>The one place the runtime touches the reducer's functions (Raft.init / Raft.step), so that the
/// event loop depends only on the contract in Types.fs.</summary>
internal sealed class Reducer
{
    private object _state = null!;

    /// <summary>Initialises the reducer and returns its first effects.</summary>
    public FSharpList<Effect> Init(StartInfo start)
    {
        throw new NotImplementedException("the reducer has not landed yet");
    }

    /// <summary>Feeds one event and returns the effects to carry out.</summary>
    public FSharpList<Effect> Step(Event ev)
    {
        _ = _state;
        throw new NotImplementedException("the reducer has not landed yet");
    }

    /// <summary>The commit index the reducer knows.</summary>
    public long CommitIndex => 0;
}
