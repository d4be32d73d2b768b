using System.Text;

namespace Skiff;

/// <summary>Checks keys and values before anything is sent, so bad input is a clear error and nothing is stored.</summary>
public static class KeyRules
{
    /// <summary>The longest key accepted, in UTF-8 bytes.</summary>
    public const int MaxKeyBytes = 4096;

    /// <summary>The default limit on a value's size, in bytes (1 MiB).</summary>
    public const int DefaultMaxValueBytes = 1 << 20;

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>Throws <see cref="SkiffException"/> (<see cref="ErrorKind.InvalidKey"/>) unless <paramref name="key"/>
    /// is non-empty, valid UTF-16 and at most <see cref="MaxKeyBytes"/> bytes of UTF-8.</summary>
    public static void ValidateKey(string? key)
    {
        if (string.IsNullOrEmpty(key))
            throw new SkiffException(ErrorKind.InvalidKey, "a key must not be empty");
        int bytes;
        try
        {
            bytes = StrictUtf8.GetByteCount(key);
        }
        catch (EncoderFallbackException)
        {
            throw new SkiffException(ErrorKind.InvalidKey, "the key is not valid UTF-16 (it has an unpaired surrogate)");
        }
        if (bytes > MaxKeyBytes)
            throw new SkiffException(ErrorKind.InvalidKey, $"the key is {bytes} bytes of UTF-8; the limit is {MaxKeyBytes}");
    }

    /// <summary>Throws <see cref="SkiffException"/> (<see cref="ErrorKind.InvalidKey"/>) unless <paramref name="prefix"/>
    /// is valid UTF-16 of at most <see cref="MaxKeyBytes"/> bytes; the empty prefix (everything) is allowed.</summary>
    public static void ValidatePrefix(string? prefix)
    {
        ArgumentNullException.ThrowIfNull(prefix);
        if (prefix.Length > 0) ValidateKey(prefix);
    }

    /// <summary>Throws <see cref="SkiffException"/> (<see cref="ErrorKind.ValueTooLarge"/>) if the value is over the limit.</summary>
    public static void ValidateValue(ReadOnlySpan<byte> value, int maxValueBytes)
    {
        if (value.Length > maxValueBytes)
            throw new SkiffException(ErrorKind.ValueTooLarge, $"the value is {value.Length} bytes; the limit is {maxValueBytes}");
    }
}
