namespace Skiff;

/// <summary>The key-value calls, answered the same way by a Client over the network and by an embedded
/// SkiffNode in process. Keys are strings with <c>/</c> separating levels; values are bytes, typed
/// through an <see cref="ISkiffSerializer"/>. Every call has a deadline and honours its cancellation token.</summary>
public interface IKeyValueStore
{
    /// <summary>Sets <paramref name="key"/> to <paramref name="value"/> and returns once the write is committed.</summary>
    Task InsertAsync<T>(string key, T value, CancellationToken cancellationToken = default);

    /// <summary>Sets <paramref name="key"/> to raw bytes and returns once the write is committed.</summary>
    Task InsertBytesAsync(string key, ReadOnlyMemory<byte> value, CancellationToken cancellationToken = default);

    /// <summary>The value of <paramref name="key"/>, or <c>default(T)</c> when absent (ask for <c>int?</c> to tell).</summary>
    Task<T?> GetAsync<T>(string key, CancellationToken cancellationToken = default);

    /// <summary>The value of <paramref name="key"/> read with the given consistency, or <c>default(T)</c> when absent.</summary>
    Task<T?> GetAsync<T>(string key, ReadConsistency consistency, CancellationToken cancellationToken = default);

    /// <summary>The raw bytes of <paramref name="key"/>, or null when absent.</summary>
    Task<byte[]?> GetBytesAsync(string key, ReadConsistency consistency = ReadConsistency.Linearizable, CancellationToken cancellationToken = default);

    /// <summary>Removes <paramref name="key"/>; removing an absent key is not an error.</summary>
    Task RemoveAsync(string key, CancellationToken cancellationToken = default);

    /// <summary>Sets <paramref name="key"/> to <paramref name="next"/> only if its current value equals
    /// <paramref name="expected"/>; true if it did.</summary>
    Task<bool> CompareAndSwapAsync<T>(string key, T expected, T next, CancellationToken cancellationToken = default);

    /// <summary>Compare-and-swap on raw bytes: a null <paramref name="expected"/> means the key must be absent, a null
    /// <paramref name="next"/> deletes it; true if the swap happened.</summary>
    Task<bool> CompareAndSwapBytesAsync(string key, ReadOnlyMemory<byte>? expected, ReadOnlyMemory<byte>? next, CancellationToken cancellationToken = default);

    /// <summary>Every key that starts with <paramref name="prefix"/> (<c>""</c> lists all), in ordinal order, read
    /// page by page within one deadline. For a large store prefer <see cref="EnumerateKeysAsync"/> or pages.</summary>
    Task<IReadOnlyList<string>> ListKeysAsync(string prefix, CancellationToken cancellationToken = default);

    /// <summary>One page of the keys that start with <paramref name="prefix"/> and come after
    /// <paramref name="startAfter"/> (null: from the first), in ordinal order: at most <paramref name="limit"/> keys
    /// (0: the member's largest page, 10,000 by default; a larger limit gets that many at most). Pass the page's
    /// <see cref="ListPage.Next"/> as <paramref name="startAfter"/> to read the next page.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="limit"/> is negative.</exception>
    Task<ListPage> ListKeysAsync(string prefix, int limit, string? startAfter = null, CancellationToken cancellationToken = default);

    /// <summary>Every key that starts with <paramref name="prefix"/>, in ordinal order, read one page at a time as the
    /// enumeration goes (each page under its own deadline), so memory stays bounded however many keys there are.
    /// Keys written or removed during the walk may or may not be seen; every key present for the whole walk is
    /// seen exactly once.</summary>
    IAsyncEnumerable<string> EnumerateKeysAsync(string prefix, CancellationToken cancellationToken = default);

    /// <summary>Every distinct level above the stored keys (each key minus its last segment), in ordinal order, read
    /// page by page within one deadline.</summary>
    Task<IReadOnlyList<string>> GetPrefixesAsync(CancellationToken cancellationToken = default);

    /// <summary>One page of the levels above the stored keys, after <paramref name="startAfter"/> (null: from the
    /// first), at most <paramref name="limit"/> (0: the member's largest page); see
    /// <see cref="ListKeysAsync(string, int, string?, CancellationToken)"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="limit"/> is negative.</exception>
    Task<ListPage> GetPrefixesAsync(int limit, string? startAfter = null, CancellationToken cancellationToken = default);

    /// <summary>Every level above the stored keys, in ordinal order, read one page at a time as the enumeration goes.</summary>
    IAsyncEnumerable<string> EnumeratePrefixesAsync(CancellationToken cancellationToken = default);

    /// <summary>Streams committed changes under <paramref name="prefix"/> in commit order. Returns once the
    /// subscription is active, so every change committed after it returns is seen.</summary>
    Task<Subscriber> WatchAsync(string prefix, CancellationToken cancellationToken = default);

    /// <summary>Removes a member from the cluster (skiff-rs's <c>remove_node</c>). The member is named by
    /// <paramref name="id"/>; <paramref name="address"/> plays no part (skiff-rs asks for it).</summary>
    Task RemoveNodeAsync(Guid id, System.Net.IPAddress address, CancellationToken cancellationToken = default);

    /// <summary>Removes the member <paramref name="id"/> from the cluster, wherever it is addressed.</summary>
    Task RemoveNodeAsync(Guid id, CancellationToken cancellationToken = default);
}
