using System.CommandLine;

namespace Skiff.Cli;

/// <summary><c>skiff serve</c>'s TLS flags, named as etcd's.</summary>
internal static class ServeTls
{
    private static readonly Option<string?> CertFile = new("--cert-file") { Description = "TLS: the certificate (PEM) presented to clients; its SANs name this member's address" };
    private static readonly Option<string?> KeyFile = new("--key-file") { Description = "TLS: the private key (PEM) of --cert-file" };
    private static readonly Option<string?> TrustedCaFile = new("--trusted-ca-file") { Description = "TLS: the CA (PEM) that signs client certificates (and members', without --peer-trusted-ca-file)" };
    private static readonly Option<bool> ClientCertAuth = new("--client-cert-auth") { Description = "TLS: refuse clients without a certificate signed by --trusted-ca-file" };
    private static readonly Option<string?> PeerCertFile = new("--peer-cert-file") { Description = "TLS: the certificate (PEM) presented to other members (default --cert-file)" };
    private static readonly Option<string?> PeerKeyFile = new("--peer-key-file") { Description = "TLS: the private key (PEM) of --peer-cert-file" };
    private static readonly Option<string?> PeerTrustedCaFile = new("--peer-trusted-ca-file") { Description = "TLS: the CA (PEM) that signs members' certificates (default --trusted-ca-file)" };

    /// <summary>The flags, to add to the command.</summary>
    public static IEnumerable<Option> Options() => [CertFile, KeyFile, TrustedCaFile, ClientCertAuth, PeerCertFile, PeerKeyFile, PeerTrustedCaFile];

    /// <summary>The TLS settings the flags give; null without <c>--cert-file</c> (plain HTTP/2).</summary>
    /// <exception cref="CliException">A TLS flag without --cert-file.</exception>
    public static TlsOptions? Read(ParseResult p)
    {
        var cert = p.GetValue(CertFile);
        if (cert is null)
        {
            if (p.GetValue(KeyFile) is not null || p.GetValue(TrustedCaFile) is not null || p.GetValue(ClientCertAuth)
                || p.GetValue(PeerCertFile) is not null || p.GetValue(PeerKeyFile) is not null || p.GetValue(PeerTrustedCaFile) is not null)
                throw new CliException(Exit.Usage, "the TLS flags need --cert-file and --key-file");
            return null;
        }
        return new TlsOptions
        {
            CertFile = cert,
            KeyFile = p.GetValue(KeyFile) ?? throw new CliException(Exit.Usage, "--cert-file needs --key-file"),
            TrustedCaFile = p.GetValue(TrustedCaFile),
            ClientCertAuth = p.GetValue(ClientCertAuth),
            PeerCertFile = p.GetValue(PeerCertFile),
            PeerKeyFile = p.GetValue(PeerKeyFile),
            PeerTrustedCaFile = p.GetValue(PeerTrustedCaFile),
        };
    }
}
