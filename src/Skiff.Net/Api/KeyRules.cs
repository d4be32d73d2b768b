using Skiff.Core;

namespace Skiff;

/// <summary>Checks keys and values before anything is sent, so bad input is a clear error and nothing is stored. The
/// rules are Skiff.Core's <c>Keys</c>; the facade, the server (RequestLimits) and the storage all throw through here.</summary>
public static class KeyRules
{
    /// <summary>The longest key accepted, in UTF-8 bytes.</summary>
    public const int MaxKeyBytes = Keys.MaxKeyBytes;

    /// <summary>The default limit on a value's size, in bytes (1 MiB).</summary>
    public const int DefaultMaxValueBytes = Keys.DefaultMaxValueBytes;

    /// <summary>Throws <see cref="SkiffException"/> (<see cref="ErrorKind.InvalidKey"/>) unless <paramref name="key"/>
    /// is non-empty, holds no NUL character, is valid UTF-16 and is at most <see cref="MaxKeyBytes"/> bytes of UTF-8.</summary>
    public static void ValidateKey(string? key)
    {
        if (Keys.problem(key ?? "") is { } problem) throw new SkiffException(ErrorKind.InvalidKey, problem.Value);
    }

    /// <summary>Throws <see cref="SkiffException"/> (<see cref="ErrorKind.InvalidKey"/>) unless <paramref name="prefix"/>
    /// is empty (every key) or a valid key.</summary>
    public static void ValidatePrefix(string? prefix)
    {
        ArgumentNullException.ThrowIfNull(prefix);
        if (Keys.prefixProblem(prefix) is { } problem) throw new SkiffException(ErrorKind.InvalidKey, problem.Value);
    }

    /// <summary>Throws <see cref="SkiffException"/> (<see cref="ErrorKind.ValueTooLarge"/>) if the value is over the limit.</summary>
    public static void ValidateValue(ReadOnlySpan<byte> value, int maxValueBytes)
    {
        if (value.Length > maxValueBytes)
            throw new SkiffException(ErrorKind.ValueTooLarge, $"the value is {value.Length} bytes; the limit is {maxValueBytes}");
    }
}
