namespace Skiff;

/// <summary>Whether a committed change set a key or removed it.</summary>
public enum ChangeKind
{
    /// <summary>The key was set (by insert or a successful compare-and-swap).</summary>
    Insert,

    /// <summary>The key was removed.</summary>
    Delete,
}

/// <summary>One committed change to the key-value store, as a node applied it.</summary>
/// <param name="Key">The key that changed.</param>
/// <param name="Kind">Whether it was set or removed.</param>
/// <param name="Value">The new value for an insert; null for a delete.</param>
/// <param name="Index">The Raft log index of the change: changes arrive in increasing index order.</param>
public sealed record Change(string Key, ChangeKind Kind, ReadOnlyMemory<byte>? Value, long Index)
{
    /// <summary>The value decoded as <typeparamref name="T"/> with the default JSON serializer;
    /// <c>default(T)</c> for a delete.</summary>
    /// <exception cref="SkiffException">With <see cref="ErrorKind.DeserializeFailed"/> if the bytes are not a T.</exception>
    public T? ValueAs<T>() => ValueAs<T>(JsonSkiffSerializer.Default);

    /// <summary>The value decoded as <typeparamref name="T"/> with the given serializer; <c>default(T)</c> for a delete.</summary>
    /// <exception cref="SkiffException">With <see cref="ErrorKind.DeserializeFailed"/> if the bytes are not a T.</exception>
    public T? ValueAs<T>(ISkiffSerializer serializer)
    {
        ArgumentNullException.ThrowIfNull(serializer);
        return Value is { } bytes ? serializer.Deserialize<T>(bytes) : default;
    }
}
