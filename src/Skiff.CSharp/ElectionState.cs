namespace Skiff;

/// <summary>The role a node plays in the current Raft term, as skiff-rs names it.</summary>
public enum ElectionState
{
    /// <summary>Following a leader, or waiting to hear from one.</summary>
    Follower,

    /// <summary>Campaigning for leadership (including the pre-vote phase).</summary>
    Candidate,

    /// <summary>The leader of the current term.</summary>
    Leader,
}
