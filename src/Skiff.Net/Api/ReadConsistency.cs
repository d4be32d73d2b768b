namespace Skiff;

/// <summary>How fresh a read must be.</summary>
public enum ReadConsistency
{
    /// <summary>The default: the read reflects every write acknowledged before it started (ReadIndex on the leader).</summary>
    Linearizable,

    /// <summary>Served from the answering node's own state without a round trip to the leader: fast, possibly stale.</summary>
    Stale,
}
