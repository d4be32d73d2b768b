using System.Buffers.Text;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Skiff.Core;

namespace Skiff.Net.Runtime.Auth;

/// <summary>
/// Auth tokens that any member checks without asking another: <c>v1.USER.REVISION.EXPIRY.MAC</c>, where USER is
/// base64url UTF-8, REVISION the auth revision the token was made at, EXPIRY Unix milliseconds and MAC the
/// HMAC-SHA256 of the rest under the signing key in the replicated auth state. A token is refused once it expires,
/// and once any auth change has been applied after it was made (its revision is no longer the current one), as
/// etcd's tokens are: a revoked role or a deleted user cannot keep working through an old token. Clients that
/// authenticate with a password (<c>Client.WithCredentials</c>) get a new token transparently.
/// </summary>
internal static class Tokens
{
    private const string Version = "v1";

    /// <summary>The principal of a member's own calls forwarded to the leader (the embedding application's, the
    /// member's own session): allowed everything, as the application holds the data directory anyway. No user can
    /// have this name (user names have no control characters), and only members hold the key that signs it.</summary>
    public const string MemberPrincipal = "\0member";

    /// <summary>Makes a token for <paramref name="user"/> at the current revision, valid until <paramref name="expires"/>.</summary>
    public static string Issue(AuthState state, string user, DateTimeOffset expires)
    {
        var body = string.Join('.', Version, Base64Url.EncodeToString(Encoding.UTF8.GetBytes(user)),
            state.Revision.ToString(CultureInfo.InvariantCulture), expires.ToUnixTimeMilliseconds().ToString(CultureInfo.InvariantCulture));
        return body + "." + Base64Url.EncodeToString(Mac(state.SigningKey, body));
    }

    private static byte[] Mac(byte[] key, string body) => HMACSHA256.HashData(key, Encoding.UTF8.GetBytes(body));

    /// <summary>The user a token names, if it is well-formed, signed with the current key, made at the current
    /// revision and not expired; otherwise null with the reason.</summary>
    public static string? Verify(AuthState state, string token, DateTimeOffset now, out string reason)
    {
        reason = "";
        var parts = token.Length > 4096 ? [] : token.Split('.');
        if (parts.Length != 5 || parts[0] != Version)
        {
            reason = "the token is malformed";
            return null;
        }
        var body = token[..token.LastIndexOf('.')];
        byte[] mac;
        try { mac = Base64Url.DecodeFromChars(parts[4]); }
        catch (FormatException) { mac = []; }
        if (state.SigningKey.Length == 0 || !CryptographicOperations.FixedTimeEquals(mac, Mac(state.SigningKey, body)))
        {
            reason = "the token was not signed by this cluster";
            return null;
        }
        // Signed by us: the fields below are ours, so parsing them cannot fail unless the key leaked.
        if (!long.TryParse(parts[2], NumberStyles.None, CultureInfo.InvariantCulture, out var revision)
            || !long.TryParse(parts[3], NumberStyles.None, CultureInfo.InvariantCulture, out var expiry))
        {
            reason = "the token is malformed";
            return null;
        }
        if (revision != state.Revision)
        {
            reason = $"the token was made at auth revision {revision} and the member is at {state.Revision} (an auth change since); authenticate again";
            return null;
        }
        if (now.ToUnixTimeMilliseconds() >= expiry)
        {
            reason = "the token has expired; authenticate again";
            return null;
        }
        return Encoding.UTF8.GetString(Base64Url.DecodeFromChars(parts[1]));
    }
}
