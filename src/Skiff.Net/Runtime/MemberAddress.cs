using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Skiff.Net.Runtime;

/// <summary>
/// The address of a member as the configuration records it and the other members dial it: <c>host:port</c>, where
/// the host is a DNS name (<c>skiff-0.skiff.default.svc</c>, <c>localhost</c>), an IPv4 address or a bracketed IPv6
/// address (<c>[fd00::1]:9400</c>). Names are resolved when a member dials (gRPC's handler asks DNS for every new
/// connection), never parsed as IP addresses, so a member that comes back under the same name at another IP
/// address is reached there. Every address that reaches a configuration, from a call or from the node's own
/// options, passes <see cref="Validate"/> first: a malformed one would otherwise become a peer link that can never
/// connect, or an entry every member replays.
/// </summary>
internal static class MemberAddress
{
    /// <summary>The longest address accepted (a DNS name is at most 253 characters, plus the port).</summary>
    public const int MaxLength = 260;

    /// <summary>The address of a node that listens on <paramref name="bind"/> and <paramref name="port"/> and
    /// advertises nothing else (an IPv6 address in brackets, so that the port stays separable). A wildcard bind
    /// gives an address <see cref="Validate"/> refuses.</summary>
    public static string Of(IPAddress bind, int port) => new IPEndPoint(bind, port).ToString();

    /// <summary>Returns <paramref name="address"/> if it is a usable <c>host:port</c>; otherwise throws
    /// <see cref="SkiffException"/> with <see cref="ErrorKind.InvalidAddress"/>, naming <paramref name="what"/>.</summary>
    public static string Validate(string? address, string what)
    {
        if (TryParse(address, out _, out _, out var why)) return address!;
        throw new SkiffException(ErrorKind.InvalidAddress, $"{what} '{Shorten(address)}' is not a host:port address: {why}",
            outcome: WriteOutcome.NotApplied);
    }

    /// <summary>Splits <c>host:port</c>; <paramref name="why"/> says what is wrong when it returns false.</summary>
    public static bool TryParse(string? address, out string host, out int port, out string why)
    {
        host = "";
        port = 0;
        if (string.IsNullOrEmpty(address)) return Fail("it is empty", out why);
        if (address.Length > MaxLength) return Fail($"it is longer than {MaxLength} characters", out why);
        var colon = address.LastIndexOf(':');
        if (colon <= 0 || colon == address.Length - 1) return Fail("it names no port (host:port)", out why);
        host = address[..colon];
        var portText = address[(colon + 1)..];
        if (!portText.All(char.IsAsciiDigit) || !int.TryParse(portText, NumberStyles.None, CultureInfo.InvariantCulture, out port)
            || port is < 1 or > 65535)
            return Fail($"the port '{portText}' is not between 1 and 65535", out why);
        if (host.StartsWith('['))
        {
            var inner = host.EndsWith(']') ? host[1..^1] : "";
            if (!IPAddress.TryParse(inner, out var v6) || v6.AddressFamily != AddressFamily.InterNetworkV6)
                return Fail($"'{host}' is not a bracketed IPv6 address", out why);
            return v6.Equals(IPAddress.IPv6Any) ? Fail(Unspecified, out why) : Ok(out why);
        }
        if (host.Contains(':')) return Fail("an IPv6 address needs brackets: [address]:port", out why);
        // Digits and dots only: an IPv4 address, four parts of 0-255. The resolver would read "127.0.1" (a typo) as
        // 127.0.0.1 and "1.2.3" as 1.2.0.3, the legacy inet_aton forms.
        if (host.All(c => c == '.' || char.IsAsciiDigit(c)))
            return !IsDottedQuad(host) ? Fail($"'{host}' is not an IPv4 address (four parts of 0-255)", out why)
                : host == "0.0.0.0" ? Fail(Unspecified, out why)
                : Ok(out why);
        // A name whose last label is a number is an address in disguise: the resolver reads "0x7f.0.0.1" or
        // "127.0.0.1.5" as an IP address (or refuses it), never as a DNS name; top-level domains are never numeric.
        var labels = host.Split('.');
        if (IsNumber(labels[^1]))
            return Fail($"'{host}' is not an IPv4 address (four decimal parts of 0-255) and not a host name", out why);
        return Uri.CheckHostName(host) is UriHostNameType.Dns or UriHostNameType.IPv4 && labels.All(l => l.Length <= 63)
            ? Ok(out why)
            : Fail($"'{host}' is neither a host name nor an IP address", out why);
    }

    // A wildcard is where a node listens, never where another reaches it.
    private const string Unspecified = "a wildcard address (0.0.0.0, [::]) cannot be dialled: advertise the address the others reach";

    private static bool IsDottedQuad(string host)
    {
        var parts = host.Split('.');
        // No leading zeros: "010" is 8 to inet_aton and 10 to a reader.
        return parts.Length == 4 && parts.All(p => p.Length is > 0 and <= 3 && (p.Length == 1 || p[0] != '0')
                                                   && int.Parse(p, CultureInfo.InvariantCulture) <= 255);
    }

    private static bool IsNumber(string label) =>
        label.Length > 0 && (label.All(char.IsAsciiDigit)
                             || (label.Length > 2 && label[0] == '0' && label[1] is 'x' or 'X' && label[2..].All(char.IsAsciiHexDigit)));

    private static bool Ok(out string why)
    {
        why = "";
        return true;
    }

    private static bool Fail(string reason, out string why)
    {
        why = reason;
        return false;
    }

    private static string Shorten(string? text) => text is null ? "" : text.Length <= 80 ? text : text[..80] + "…";
}
