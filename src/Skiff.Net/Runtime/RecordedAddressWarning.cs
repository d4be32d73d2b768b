using Microsoft.Extensions.Logging;
using Skiff.Core;

namespace Skiff.Net.Runtime;

/// <summary>
/// Logs once when the configuration records this node at another address than the one it advertises. As etcd with
/// a member's peer URLs, the configuration is what the other members dial, and only a replicated change
/// (<c>skiff member update</c>) alters it: a node restarted with another advertise address does not rewrite its own
/// entry, since a typo in one member's options would otherwise move it where no one can reach it.
/// </summary>
internal sealed class RecordedAddressWarning(ILogger logger, Guid self, string advertised)
{
    private int _warned;

    /// <summary>Looks at a configuration now in force.</summary>
    public void Check(Configuration configuration)
    {
        if (!configuration.Members.TryGetValue(self, out var member) || member.Address == advertised) return;
        if (Interlocked.Exchange(ref _warned, 1) != 0) return;
        logger.LogWarning(
            "Skiff node {NodeId} advertises {Advertised}, but the cluster's configuration records it at {Recorded}, where the other " +
            "members dial it: run `skiff member update {Id} {Address}` (or restart it at {Old})",
            self, advertised, member.Address, self, advertised, member.Address);
    }
}
