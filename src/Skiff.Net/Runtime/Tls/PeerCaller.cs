using System.Security.Cryptography.X509Certificates;
using Grpc.Core;

namespace Skiff.Net.Runtime.Tls;

/// <summary>
/// The member at the other end of a peer-service call, as its TLS certificate shows it: signed by the peer CA, and
/// speaking only for the members whose addresses its names cover. The sender a peer message names is believed only if
/// the certificate covers that member's address (from the configuration, or for a member not in it yet, the address
/// its stream announces), so one member cannot speak for another, nor a client certificate for any member.
/// </summary>
internal sealed class PeerCaller
{
    private readonly X509Certificate2 _certificate;
    private readonly Dictionary<string, bool> _covers = new(StringComparer.OrdinalIgnoreCase); // per host; one stream, one reader

    private PeerCaller(X509Certificate2 certificate) => _certificate = certificate;

    /// <summary>The caller of <paramref name="context"/>, or null when it presented no member's certificate.</summary>
    public static PeerCaller? Authenticate(ServerCallContext context, NodeTls tls)
    {
        var certificate = context.GetHttpContext().Connection.ClientCertificate;
        return tls.IsMember(certificate) ? new PeerCaller(certificate!) : null;
    }

    /// <summary>Whether the caller may speak for the member at <paramref name="address"/> ("host:port").</summary>
    public bool SpeaksFor(string? address)
    {
        if (address is null) return false;
        var host = CertificateChecks.HostOf(address);
        if (!_covers.TryGetValue(host, out var covered))
            _covers[host] = covered = CertificateChecks.Covers(_certificate, host);
        return covered;
    }

    /// <summary>The names the certificate carries, for logs.</summary>
    public string Subject => _certificate.Subject;
}
