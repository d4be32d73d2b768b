using System.Net;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Skiff.Bench.Cluster.Systems;

/// <summary>
/// Certificates for the TLS rows, made fresh for each cluster (System.Security.Cryptography, ECDSA P-256, as the
/// tests make theirs): one CA, and per member one certificate naming its address first in the SANs, usable for both server
/// and client authentication, so the same files serve the client port and mutual TLS between members. PEM files
/// under <c>dir</c>: ca.pem, m{i}.pem, m{i}-key.pem.
/// </summary>
public sealed class BenchCertificates
{
    public string CaFile { get; }
    private readonly X509Certificate2 ca;
    private readonly string dir;

    public BenchCertificates(string dir, IReadOnlyList<IPAddress> members)
    {
        this.dir = dir;
        Directory.CreateDirectory(dir);
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=skiff-bench-ca", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        ca = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(2));
        CaFile = Path.Combine(dir, "ca.pem");
        File.WriteAllText(CaFile, ca.ExportCertificatePem());
        for (int i = 0; i < members.Count; i++) Issue(i, members[i], members);
    }

    public string CertFile(int member) => Path.Combine(dir, $"m{member}.pem");

    public string KeyFile(int member) => Path.Combine(dir, $"m{member}-key.pem");

    private void Issue(int member, IPAddress ip, IReadOnlyList<IPAddress> all)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN=m{member}", key, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddIpAddress(ip);
        // etcd's --peer-client-cert-auth checks a dialling member's certificate against the address the connection
        // comes from, and on loopback the kernel sends every connection from 127.0.0.1 whatever the member listens on.
        // With only its own address in its certificate, a member other than 127.0.0.1 could not reach its peers: a
        // cluster whose first candidate was such a member never elected (2 of 8 starts under load, one CI run).
        foreach (var other in all.Where(a => !a.Equals(ip))) san.AddIpAddress(other);
        request.CertificateExtensions.Add(san.Build());
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(
            [new Oid("1.3.6.1.5.5.7.3.1"), new Oid("1.3.6.1.5.5.7.3.2")], false)); // server and client authentication
        var serial = RandomNumberGenerator.GetBytes(12);
        using var signed = request.Create(ca, DateTimeOffset.UtcNow.AddMinutes(-1), DateTimeOffset.UtcNow.AddDays(1), serial);
        File.WriteAllText(CertFile(member), signed.ExportCertificatePem());
        File.WriteAllText(KeyFile(member), key.ExportPkcs8PrivateKeyPem());
    }

    /// <summary>Client-side validation against this CA only (not the machine's trust store), for the etcd channels.</summary>
    public RemoteCertificateValidationCallback Validate => (_, certificate, _, errors) =>
    {
        if (certificate is null) return false;
        // Name mismatches are errors too; only the chain is checked against our own root here.
        if ((errors & ~SslPolicyErrors.RemoteCertificateChainErrors) != SslPolicyErrors.None) return false;
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(ca);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        return chain.Build(new X509Certificate2(certificate));
    };
}
