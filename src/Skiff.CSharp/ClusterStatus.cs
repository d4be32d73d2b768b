namespace Skiff;

/// <summary>One member of the cluster as it reports itself (see <see cref="Client.GetStatusAsync"/>).</summary>
/// <param name="Id">The member's stable id.</param>
/// <param name="Address">Where it serves, as <c>ip:port</c>.</param>
/// <param name="Voter">True for a voting member, false for a learner still catching up.</param>
/// <param name="Reachable">False when the member did not answer; the fields below are then zero or null.</param>
/// <param name="Role">The role it plays now (<c>Leader</c>, <c>Follower</c>, <c>Candidate</c>, <c>PreCandidate</c>).</param>
/// <param name="Term">Its current Raft term.</param>
/// <param name="CommitIndex">The highest log index it knows to be committed.</param>
/// <param name="AppliedIndex">The highest log index it has applied to its store.</param>
/// <param name="LeaderId">The leader it knows of, if any.</param>
/// <param name="Error">Why it did not answer, when <paramref name="Reachable"/> is false.</param>
public sealed record MemberStatus(
    Guid Id, string Address, bool Voter, bool Reachable, string? Role, long Term, long CommitIndex, long AppliedIndex,
    Guid? LeaderId, string? Error);

/// <summary>Every member of the cluster, each as it reports itself.</summary>
/// <param name="Members">The members of the configuration the contacted member knows, ordered by address.</param>
/// <param name="LeaderId">The leader of the highest term any member reports, if any.</param>
public sealed record ClusterStatus(IReadOnlyList<MemberStatus> Members, Guid? LeaderId)
{
    /// <summary>The id of the cluster, made when it was founded (null if the contacted member does not know it yet).</summary>
    public Guid? ClusterId { get; init; }
}

/// <summary>One member of the configuration a node has in force (see <see cref="SkiffNode.GetMembersAsync"/>).</summary>
/// <param name="Id">The member's stable id.</param>
/// <param name="Endpoint">Its address as the configuration records it and the other members dial it:
/// <c>host:port</c>, with a host name or an IP address.</param>
/// <param name="Voter">True for a voting member; false for a learner (added, not yet promoted: it does not count
/// toward a majority).</param>
public sealed record ClusterMember(Guid Id, string Endpoint, bool Voter)
{
    /// <summary>The IP address in <see cref="Endpoint"/>, or null for a member addressed by host name.</summary>
    public System.Net.IPAddress? Address => SkiffNode.IpOf(Endpoint);
}
