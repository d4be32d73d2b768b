namespace Skiff;

/// <summary>Whether a committed change set a key or removed it.</summary>
public enum ChangeKind
{
    /// <summary>The key was set (by insert or a successful compare-and-swap).</summary>
    Insert,

    /// <summary>The key was removed.</summary>
    Remove,
}

/// <summary>One committed change to the key-value store, as a node applied it. The one change type of every layer:
/// the state machine records it in its history, the applier hands it to watchers, the client service streams it,
/// and the facade gives it to the application.</summary>
/// <param name="Key">The key that changed.</param>
/// <param name="Kind">Whether it was set or removed.</param>
/// <param name="Value">The new value for an insert; null for a delete.</param>
/// <param name="Index">The Raft log index of the change: changes arrive in increasing index order.</param>
public sealed record Change(string Key, ChangeKind Kind, ReadOnlyMemory<byte>? Value, long Index)
{
    /// <summary>A key set to <paramref name="value"/> at <paramref name="index"/>.</summary>
    public static Change Inserted(long index, string key, ReadOnlyMemory<byte> value) => new(key, ChangeKind.Insert, value, index);

    /// <summary>A key removed at <paramref name="index"/>.</summary>
    public static Change Removed(long index, string key) => new(key, ChangeKind.Remove, null, index);

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
