using Grpc.Core;

namespace Skiff.Net.Runtime;

/// <summary>
/// With client certificate authentication on (<see cref="TlsOptions.ClientCertAuth"/>), refuses a client call whose
/// connection presented no certificate signed by the client CA (or the peer CA: members forward calls to each other)
/// with <see cref="ErrorKind.PermissionDenied"/>, before anything runs.
/// </summary>
internal sealed class ClientCertificateCheck(SkiffServer node) : ClientCallCheck
{
    protected override void Check(ServerCallContext context)
    {
        if (node.Tls is not { ClientCertAuth: true } tls) return;
        if (tls.IsClient(context.GetHttpContext().Connection.ClientCertificate)) return;
        throw ErrorMapping.ToRpc(new SkiffException(ErrorKind.PermissionDenied,
            $"the member at {node.Address} requires a client certificate signed by its trusted CA", outcome: WriteOutcome.NotApplied));
    }
}
