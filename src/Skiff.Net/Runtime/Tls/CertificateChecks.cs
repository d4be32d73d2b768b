using System.Net;
using System.Security.Cryptography.X509Certificates;

namespace Skiff.Net.Runtime.Tls;

/// <summary>The two questions asked of every certificate a member or a client presents: did one of our CAs sign it,
/// and does it name the host it stands for.</summary>
internal static class CertificateChecks
{
    /// <summary>Whether <paramref name="certificate"/> chains to one of <paramref name="roots"/> (and only to them:
    /// the machine's trust store plays no part) and is valid now. Revocation is not checked (no CRL or OCSP).</summary>
    public static bool ChainsTo(X509Certificate2 certificate, X509Certificate2Collection roots)
    {
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(roots);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.VerificationFlags = X509VerificationFlags.NoFlag;
        return chain.Build(certificate);
    }

    /// <summary>Whether <paramref name="certificate"/>'s subject alternative names cover <paramref name="host"/>: an
    /// IP address SAN equal to it, or a DNS SAN equal to it (case-insensitive; a leading <c>*.</c> covers one label).
    /// The subject's common name is not looked at, as browsers and Go do not.</summary>
    public static bool Covers(X509Certificate2 certificate, string host)
    {
        var san = certificate.Extensions.OfType<X509SubjectAlternativeNameExtension>().FirstOrDefault();
        if (san is null) return false;
        if (IPAddress.TryParse(host.Trim('[', ']'), out var ip))
            return san.EnumerateIPAddresses().Any(a => a.Equals(ip));
        return san.EnumerateDnsNames().Any(name => DnsNameCovers(name, host));
    }

    /// <summary>The host part of an <c>host:port</c> address.</summary>
    public static string HostOf(string address)
    {
        var colon = address.LastIndexOf(':');
        return colon > 0 && !address.EndsWith(']') ? address[..colon] : address;
    }

    private static bool DnsNameCovers(string name, string host)
    {
        if (name.StartsWith("*.", StringComparison.Ordinal))
        {
            var dot = host.IndexOf('.');
            return dot > 0 && string.Equals(name[1..], host[dot..], StringComparison.OrdinalIgnoreCase);
        }
        return string.Equals(name, host, StringComparison.OrdinalIgnoreCase);
    }
}
