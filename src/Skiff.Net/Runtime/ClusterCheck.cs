using Grpc.Core;

namespace Skiff.Net.Runtime;

/// <summary>
/// Refuses client calls meant for another cluster: a client that learned its cluster's id on first contact sends it
/// with every call (<see cref="ErrorMapping.ClusterHeader"/>), and a member of another cluster, say one that lost its
/// data directory and founded a new cluster at the old address, answers <see cref="ErrorKind.ClusterMismatch"/>
/// before doing anything. A call without the header (a first contact, another gRPC client) is served.
/// </summary>
internal sealed class ClusterCheck(SkiffServer node) : ClientCallCheck
{
    protected override void Check(ServerCallContext context)
    {
        var expected = context.RequestHeaders.GetValue(ErrorMapping.ClusterHeader);
        if (node.Cluster.AdmitsClient(expected)) return;
        throw ErrorMapping.ToRpc(new SkiffException(ErrorKind.ClusterMismatch,
            $"the member at {node.Address} belongs to cluster {node.Cluster.Id}, not to cluster {expected} that the client first reached",
            outcome: WriteOutcome.NotApplied));
    }
}
