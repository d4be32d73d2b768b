using System.Net.Security;
using System.Security.Cryptography.X509Certificates;

namespace Skiff.Net.Runtime.Tls;

/// <summary>
/// How this process's gRPC channels to members are secured: plain HTTP/2, or TLS that verifies the member against a
/// CA file (and its certificate's names against the address dialled) and presents a certificate of its own if it has
/// one. A member calling another (peer traffic, forwarded calls, joins) presents its peer certificate and names
/// <see cref="NodeTls.PeerServerName"/>, so that the other presents its peer certificate in turn.
/// </summary>
internal sealed class ChannelSecurity
{
    private readonly Func<string, SslClientAuthenticationOptions>? _ssl;

    private ChannelSecurity(Func<string, SslClientAuthenticationOptions>? ssl) => _ssl = ssl;

    /// <summary>Plain HTTP/2 (h2c), no TLS.</summary>
    public static ChannelSecurity Plaintext { get; } = new(null);

    /// <summary>Whether channels use TLS.</summary>
    public bool IsTls => _ssl is not null;

    /// <summary>The URL of a member's services at <paramref name="address"/> ("host:port").</summary>
    public string Url(string address) => (IsTls ? "https://" : "http://") + address;

    /// <summary>Sets up <paramref name="handler"/>'s TLS for a channel to <paramref name="address"/>.</summary>
    public void Apply(SocketsHttpHandler handler, string address)
    {
        if (_ssl is { } ssl) handler.SslOptions = ssl(CertificateChecks.HostOf(address));
    }

    /// <summary>A client's channels (the application's <c>Client</c>, the <c>skiff</c> command).</summary>
    /// <exception cref="SkiffException">InvalidArgument when the files cannot be read.</exception>
    public static ChannelSecurity ForClient(ClientTlsOptions options)
    {
        options.Validate();
        var ca = Pem.Trust(options.CaFile);
        var pair = options.CertFile is null ? null : Pem.Certificate(options.CertFile, options.KeyFile!);
        return Tls(pair, ca, serverName: null);
    }

    /// <summary>A member's channels to other members.</summary>
    public static ChannelSecurity ForPeer(PemSource<X509Certificate2> pair, PemSource<X509Certificate2Collection> peerCa) =>
        Tls(pair, peerCa, NodeTls.PeerServerName);

    private static ChannelSecurity Tls(PemSource<X509Certificate2>? pair, PemSource<X509Certificate2Collection> ca, string? serverName) =>
        new(host => new SslClientAuthenticationOptions
        {
            // An IP address as the target host sends no SNI: the member then presents its client certificate.
            TargetHost = serverName ?? host,
            LocalCertificateSelectionCallback = pair is null ? null : (_, _, _, _, _) => pair.Current,
            // The CA file alone decides (not the machine's store), and the certificate must name the host dialled.
            RemoteCertificateValidationCallback = (_, certificate, _, _) =>
                certificate is X509Certificate2 c && CertificateChecks.ChainsTo(c, ca.Current) && CertificateChecks.Covers(c, host),
        });
}
