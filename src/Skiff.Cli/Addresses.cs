using System.Globalization;
using System.Net;

namespace Skiff.Cli;

/// <summary>
/// Strict address parsing for the command line. <see cref="IPAddress.TryParse(string?, out IPAddress?)"/> accepts
/// the legacy inet_aton forms, so a typo like <c>127.0.1</c> silently means 127.0.0.1 and <c>1.2.3</c> means
/// 1.2.0.3, a host off this machine. Here an IPv4 address must be four decimal parts of 0–255.
/// </summary>
internal static class Addresses
{
    /// <summary>Parses a dotted-quad IPv4 or any IPv6 address; false for anything else.</summary>
    public static bool TryParse(string text, out IPAddress address)
    {
        address = IPAddress.None;
        if (text.Contains(':'))
        {
            if (!IPAddress.TryParse(text, out var v6)) return false;
            address = v6;
            return true;
        }
        var parts = text.Split('.');
        if (parts.Length != 4) return false;
        var bytes = new byte[4];
        for (int i = 0; i < 4; i++)
        {
            var p = parts[i];
            if (p.Length is 0 or > 3 || !p.All(char.IsAsciiDigit)) return false;
            int value = int.Parse(p, CultureInfo.InvariantCulture);
            if (value > 255) return false;
            bytes[i] = (byte)value;
        }
        address = new IPAddress(bytes);
        return true;
    }

    /// <summary>Parses <c>IP</c>, <c>IP:PORT</c> or <c>[IPv6]:PORT</c> strictly; port is null when not given.</summary>
    public static bool TryParseEndpoint(string text, out IPAddress address, out int? port)
    {
        port = null;
        if (text.StartsWith('['))
        {
            int close = text.IndexOf(']');
            address = IPAddress.None;
            if (close < 0 || !TryParse(text[1..close], out address)) return false;
            if (close == text.Length - 1) return true;
            if (text[close + 1] != ':' || !int.TryParse(text[(close + 2)..], NumberStyles.None, CultureInfo.InvariantCulture, out var p6)) return false;
            port = p6;
            return true;
        }
        int colon = text.IndexOf(':');
        if (colon < 0 || text.IndexOf(':', colon + 1) >= 0) return TryParse(text, out address);
        if (!TryParse(text[..colon], out address)) return false;
        if (!int.TryParse(text[(colon + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out var p)) return false;
        port = p;
        return true;
    }

    /// <summary>One member address of the command line, <c>HOST[:PORT]</c>, as the <c>host:port</c> the cluster
    /// records: a host name, a dotted-quad IPv4 address or an IPv6 address (bare or bracketed); the port defaults to
    /// <paramref name="defaultPort"/>. False, with <paramref name="why"/>, for anything else.</summary>
    public static bool TryParseMember(string text, int defaultPort, out string endpoint, out string why)
    {
        endpoint = TryParseEndpoint(text, out var ip, out var given) ? Skiff.Net.Runtime.MemberAddress.Of(ip, given ?? defaultPort)
            : text.Contains(':') ? text : $"{text}:{defaultPort}";
        return Skiff.Net.Runtime.MemberAddress.TryParse(endpoint, out _, out _, out why);
    }
}
