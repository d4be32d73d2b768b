using System.Collections.Concurrent;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Server.Kestrel.Https;

namespace Skiff.Net.Runtime.Tls;

/// <summary>
/// A node's TLS (see <see cref="TlsOptions"/>): what its port presents, whom its services accept, and how it dials
/// other members. One port serves clients and members: a member dialling another names <see cref="PeerServerName"/>
/// (SNI) and gets the peer certificate; a client gets the client-facing one. Any client certificate is accepted
/// during the handshake; each service then decides (<see cref="IsMember"/>, <see cref="IsClient"/>).
/// </summary>
internal sealed class NodeTls
{
    /// <summary>The server name a member sends when it dials another member.</summary>
    public const string PeerServerName = "skiff-peer";

    private readonly PemSource<X509Certificate2> _clientPair;
    private readonly PemSource<X509Certificate2> _peerPair;
    private readonly PemSource<X509Certificate2Collection>? _clientCa;
    private readonly PemSource<X509Certificate2Collection> _peerCa;

    // Verdicts by certificate, valid for a minute (a certificate expires) while the CA files are the ones they were
    // reached with: building a chain costs far more than a call, and with client certificates every call asks.
    // Cleared when it grows large.
    private readonly ConcurrentDictionary<(string Thumbprint, bool Peer), (X509Certificate2Collection Roots, long Until, bool Trusted)> _verdicts = new();
    private const int MaxVerdicts = 10_000;
    private const long VerdictMs = 60_000;

    /// <exception cref="SkiffException">InvalidArgument for incomplete settings or unreadable files.</exception>
    public NodeTls(TlsOptions options)
    {
        options.Validate();
        _clientPair = Pem.Certificate(options.CertFile, options.KeyFile);
        _peerPair = options.PeerCertFile is null ? _clientPair : Pem.Certificate(options.PeerCertFile, options.PeerKeyFile!);
        _clientCa = options.TrustedCaFile is null ? null : Pem.Trust(options.TrustedCaFile);
        _peerCa = options.PeerTrustedCaFile is null ? _clientCa! : Pem.Trust(options.PeerTrustedCaFile);
        ClientCertAuth = options.ClientCertAuth;
        PeerChannels = ChannelSecurity.ForPeer(_peerPair, _peerCa);
    }

    /// <summary>Whether client calls need a certificate (<see cref="TlsOptions.ClientCertAuth"/>).</summary>
    public bool ClientCertAuth { get; }

    /// <summary>How this node dials other members (peer traffic, forwarded calls, joins).</summary>
    public ChannelSecurity PeerChannels { get; }

    /// <summary>Kestrel's TLS settings for the node's port.</summary>
    public HttpsConnectionAdapterOptions ServerOptions() => new()
    {
        ServerCertificateSelector = (_, name) => name == PeerServerName ? _peerPair.Current : _clientPair.Current,
        ClientCertificateMode = ClientCertificateMode.AllowCertificate,
        ClientCertificateValidation = (_, _, _) => true, // who may call what is each service's decision
    };

    /// <summary>Whether <paramref name="certificate"/> is a member's: signed by the peer CA. Which member it is
    /// depends on the names it carries (<see cref="CertificateChecks.Covers"/>).</summary>
    public bool IsMember(X509Certificate2? certificate) =>
        certificate is not null && ChainsTo(certificate, _peerCa.Current, peer: true);

    /// <summary>Whether <paramref name="certificate"/> may make client calls: signed by the client CA, or a
    /// member's (members forward calls to each other).</summary>
    public bool IsClient(X509Certificate2? certificate) =>
        certificate is not null
        && ((_clientCa is { } ca && ChainsTo(certificate, ca.Current, peer: false)) || IsMember(certificate));

    private bool ChainsTo(X509Certificate2 certificate, X509Certificate2Collection roots, bool peer)
    {
        var key = (certificate.Thumbprint, peer);
        var now = Environment.TickCount64;
        if (_verdicts.TryGetValue(key, out var known) && ReferenceEquals(known.Roots, roots) && now < known.Until) return known.Trusted;
        var trusted = CertificateChecks.ChainsTo(certificate, roots);
        if (_verdicts.Count >= MaxVerdicts) _verdicts.Clear();
        _verdicts[key] = (roots, now + VerdictMs, trusted);
        return trusted;
    }
}
