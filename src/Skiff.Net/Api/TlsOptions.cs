namespace Skiff;

/// <summary>
/// TLS for a node, named after etcd's flags. With TLS on, every connection to the node is TLS (one port serves
/// clients and members), and members always authenticate each other (mutual TLS): a member accepts peer traffic
/// only from a certificate its peer CA signed whose subject alternative names cover the address of the member the
/// traffic claims to come from. Certificates and CAs are PEM files, read again when they change (no restart).
/// </summary>
public sealed class TlsOptions
{
    /// <summary>The certificate the node presents to clients (PEM; <c>--cert-file</c>). Its subject alternative
    /// names must cover the address clients dial (an IP address or a DNS name).</summary>
    public required string CertFile { get; init; }

    /// <summary>The private key of <see cref="CertFile"/> (PEM; <c>--key-file</c>).</summary>
    public required string KeyFile { get; init; }

    /// <summary>The CA that signs client certificates (PEM, one or more certificates; <c>--trusted-ca-file</c>).
    /// Needed with <see cref="ClientCertAuth"/>; also the peer CA when <see cref="PeerTrustedCaFile"/> is not given.</summary>
    public string? TrustedCaFile { get; init; }

    /// <summary>Refuse client calls without a certificate signed by <see cref="TrustedCaFile"/> (or by the peer CA:
    /// members forward calls to each other with their peer certificates); <c>--client-cert-auth</c>.</summary>
    public bool ClientCertAuth { get; init; }

    /// <summary>The certificate this node presents to other members, as server and as client (PEM;
    /// <c>--peer-cert-file</c>); default <see cref="CertFile"/>. Its subject alternative names must cover this
    /// node's address.</summary>
    public string? PeerCertFile { get; init; }

    /// <summary>The private key of <see cref="PeerCertFile"/> (<c>--peer-key-file</c>).</summary>
    public string? PeerKeyFile { get; init; }

    /// <summary>The CA that signs members' certificates (<c>--peer-trusted-ca-file</c>); default
    /// <see cref="TrustedCaFile"/>. One of the two is required: members always verify each other.</summary>
    public string? PeerTrustedCaFile { get; init; }

    /// <summary>Throws <see cref="SkiffException"/> (InvalidArgument) when the settings do not make a whole TLS setup.</summary>
    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(CertFile) || string.IsNullOrWhiteSpace(KeyFile))
            throw new SkiffException(ErrorKind.InvalidArgument, "TLS needs a certificate and its key (--cert-file, --key-file)");
        if ((PeerCertFile is null) != (PeerKeyFile is null))
            throw new SkiffException(ErrorKind.InvalidArgument, "give the peer certificate and its key together (--peer-cert-file, --peer-key-file)");
        if (PeerTrustedCaFile is null && TrustedCaFile is null)
            throw new SkiffException(ErrorKind.InvalidArgument,
                "TLS needs the CA that signs the members' certificates (--peer-trusted-ca-file or --trusted-ca-file): members always verify each other");
        if (ClientCertAuth && TrustedCaFile is null)
            throw new SkiffException(ErrorKind.InvalidArgument, "client certificate authentication needs the CA that signs them (--trusted-ca-file)");
    }
}

/// <summary>TLS for a client of a cluster whose members use TLS, named after etcdctl's flags.</summary>
public sealed class ClientTlsOptions
{
    /// <summary>The CA that signed the members' client-facing certificates (PEM; <c>--cacert</c>). A member whose
    /// certificate it did not sign, or whose certificate does not cover the address dialled, is refused.</summary>
    public required string CaFile { get; init; }

    /// <summary>This client's certificate, for members that require one (PEM; <c>--cert</c>).</summary>
    public string? CertFile { get; init; }

    /// <summary>The private key of <see cref="CertFile"/> (<c>--key</c>).</summary>
    public string? KeyFile { get; init; }

    /// <summary>Throws <see cref="SkiffException"/> (InvalidArgument) for an incomplete setting.</summary>
    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(CaFile))
            throw new SkiffException(ErrorKind.InvalidArgument, "a TLS client needs the members' CA (--cacert)");
        if ((CertFile is null) != (KeyFile is null))
            throw new SkiffException(ErrorKind.InvalidArgument, "give the client certificate and its key together (--cert, --key)");
    }
}
