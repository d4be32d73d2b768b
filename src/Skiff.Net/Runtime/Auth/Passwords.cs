using System.Security.Cryptography;
using System.Text;
using Microsoft.FSharp.Core;
using Skiff.Core;

namespace Skiff.Net.Runtime.Auth;

/// <summary>
/// Password hashing with PBKDF2-SHA256 (the framework's <see cref="Rfc2898DeriveBytes.Pbkdf2(ReadOnlySpan{byte}, ReadOnlySpan{byte}, int, HashAlgorithmName, int)"/>),
/// a random 16-byte salt per user, and the iteration count stored with each hash. The hash is made on the member
/// that received the request, before anything is proposed, so the log and the store never see a password.
/// </summary>
internal static class Passwords
{
    /// <summary>Iterations for new hashes. OWASP asks 600,000 for PBKDF2-SHA256; 210,000 keeps an authentication near
    /// 0.1 s on a small machine (each one costs the member that serves it this much CPU) while still making an offline
    /// guess expensive. Stored with each hash, so it can be raised later without breaking existing users.</summary>
    public const int Iterations = 210_000;

    /// <summary>Longest password accepted, in UTF-8 bytes (etcd has no limit; a bound keeps hashing cheap to refuse).</summary>
    public const int MaxPasswordBytes = 1024;

    /// <summary>A fresh hash of <paramref name="password"/> (null or empty: a user without a password, who can only
    /// authenticate with a client certificate).</summary>
    public static FSharpOption<PasswordHash> Hash(string? password)
    {
        if (string.IsNullOrEmpty(password)) return FSharpOption<PasswordHash>.None;
        var bytes = Encoding.UTF8.GetBytes(password);
        if (bytes.Length > MaxPasswordBytes)
            throw new SkiffException(ErrorKind.InvalidArgument, $"a password may have at most {MaxPasswordBytes} UTF-8 bytes");
        var salt = RandomNumberGenerator.GetBytes(16);
        return new PasswordHash(Iterations, salt, Rfc2898DeriveBytes.Pbkdf2(bytes, salt, Iterations, HashAlgorithmName.SHA256, 32));
    }

    /// <summary>Whether <paramref name="password"/> matches <paramref name="hash"/> (compared in constant time).</summary>
    public static bool Verify(PasswordHash hash, string password)
    {
        var bytes = Encoding.UTF8.GetBytes(password);
        if (bytes.Length > MaxPasswordBytes || hash.Iterations is < 1 or > 10_000_000 || hash.Hash.Length == 0) return false;
        var made = Rfc2898DeriveBytes.Pbkdf2(bytes, hash.Salt, hash.Iterations, HashAlgorithmName.SHA256, hash.Hash.Length);
        return CryptographicOperations.FixedTimeEquals(made, hash.Hash);
    }
}
