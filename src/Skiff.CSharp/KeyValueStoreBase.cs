using System.Net;

namespace Skiff;

/// <summary>The typed half of <see cref="IKeyValueStore"/>, written once over a handful of byte-level calls, so the
/// network client and the embedded node validate, serialize and time out in exactly the same way.</summary>
public abstract partial class KeyValueStoreBase : IKeyValueStore
{
    private protected KeyValueStoreBase(ISkiffSerializer serializer, TimeSpan timeout, int maxValueBytes)
    {
        Serializer = serializer;
        Timeout = timeout;
        MaxValueBytes = maxValueBytes;
    }

    /// <summary>The serializer for typed values.</summary>
    public ISkiffSerializer Serializer { get; private protected set; }

    /// <summary>The deadline of every call.</summary>
    public TimeSpan Timeout { get; private protected set; }

    /// <summary>The largest value accepted, in bytes.</summary>
    public int MaxValueBytes { get; private protected set; }

    // The byte-level calls each side implements. The token already carries the call's deadline.
    private protected abstract Task PutCoreAsync(string key, byte[] value, CancellationToken cancellationToken);
    private protected abstract Task<byte[]?> GetCoreAsync(string key, ReadConsistency consistency, CancellationToken cancellationToken);
    private protected abstract Task DeleteCoreAsync(string key, CancellationToken cancellationToken);
    private protected abstract Task<bool> CompareAndSwapCoreAsync(string key, byte[]? expected, byte[]? next, CancellationToken cancellationToken);
    private protected abstract Task<ListPage> ListKeysPageCoreAsync(string prefix, string? startAfter, int limit, CancellationToken cancellationToken);
    private protected abstract Task<ListPage> GetPrefixesPageCoreAsync(string? startAfter, int limit, CancellationToken cancellationToken);
    private protected abstract Task<Subscriber> WatchCoreAsync(string prefix, CancellationToken cancellationToken);
    private protected abstract Task RemoveNodeCoreAsync(Guid id, CancellationToken cancellationToken);

    /// <inheritdoc />
    public Task InsertAsync<T>(string key, T value, CancellationToken cancellationToken = default)
    {
        KeyRules.ValidateKey(key);
        return InsertBytesAsync(key, Serializer.Serialize(value), cancellationToken);
    }

    /// <inheritdoc />
    public Task InsertBytesAsync(string key, ReadOnlyMemory<byte> value, CancellationToken cancellationToken = default)
    {
        KeyRules.ValidateKey(key);
        KeyRules.ValidateValue(value.Span, MaxValueBytes);
        var bytes = value.ToArray();
        return WithDeadline(cancellationToken, t => PutCoreAsync(key, bytes, t));
    }

    /// <inheritdoc />
    public Task<T?> GetAsync<T>(string key, CancellationToken cancellationToken = default) =>
        GetAsync<T>(key, ReadConsistency.Linearizable, cancellationToken);

    /// <inheritdoc />
    public async Task<T?> GetAsync<T>(string key, ReadConsistency consistency, CancellationToken cancellationToken = default)
    {
        var bytes = await GetBytesAsync(key, consistency, cancellationToken).ConfigureAwait(false);
        return bytes is null ? default : Serializer.Deserialize<T>(bytes);
    }

    /// <inheritdoc />
    public Task<byte[]?> GetBytesAsync(string key, ReadConsistency consistency = ReadConsistency.Linearizable, CancellationToken cancellationToken = default)
    {
        KeyRules.ValidateKey(key);
        return WithDeadline(cancellationToken, t => GetCoreAsync(key, consistency, t));
    }

    /// <inheritdoc />
    public Task RemoveAsync(string key, CancellationToken cancellationToken = default)
    {
        KeyRules.ValidateKey(key);
        return WithDeadline(cancellationToken, t => DeleteCoreAsync(key, t));
    }

    /// <inheritdoc />
    public Task<bool> CompareAndSwapAsync<T>(string key, T expected, T next, CancellationToken cancellationToken = default)
    {
        KeyRules.ValidateKey(key);
        return CompareAndSwapBytesAsync(key, Serializer.Serialize(expected), Serializer.Serialize(next), cancellationToken);
    }

    /// <inheritdoc />
    public Task<bool> CompareAndSwapBytesAsync(string key, ReadOnlyMemory<byte>? expected, ReadOnlyMemory<byte>? next, CancellationToken cancellationToken = default)
    {
        KeyRules.ValidateKey(key);
        if (next is { } n) KeyRules.ValidateValue(n.Span, MaxValueBytes);
        var expectedBytes = expected?.ToArray();
        var nextBytes = next?.ToArray();
        return WithDeadline(cancellationToken, t => CompareAndSwapCoreAsync(key, expectedBytes, nextBytes, t));
    }

    /// <inheritdoc />
    public Task<Subscriber> WatchAsync(string prefix, CancellationToken cancellationToken = default)
    {
        KeyRules.ValidatePrefix(prefix);
        return WithDeadline(cancellationToken, t => WatchCoreAsync(prefix, t));
    }

    /// <inheritdoc />
    public Task RemoveNodeAsync(Guid id, IPAddress address, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(address);
        return RemoveNodeAsync(id, cancellationToken);
    }

    /// <inheritdoc />
    public Task RemoveNodeAsync(Guid id, CancellationToken cancellationToken = default) =>
        WithDeadline(cancellationToken, t => RemoveNodeCoreAsync(id, t));

    private Task WithDeadline(CancellationToken cancellationToken, Func<CancellationToken, Task> call) =>
        WithDeadline(cancellationToken, async t =>
        {
            await call(t).ConfigureAwait(false);
            return true;
        });

    /// <summary>Runs a call under the store's deadline. Running out of time is <see cref="ErrorKind.Timeout"/>; the
    /// caller's own cancellation stays an <see cref="OperationCanceledException"/>.</summary>
    private protected async Task<TResult> WithDeadline<TResult>(CancellationToken cancellationToken, Func<CancellationToken, Task<TResult>> call)
    {
        cancellationToken.ThrowIfCancellationRequested();
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(Timeout);
        try
        {
            return await call(deadline.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException e) when (!cancellationToken.IsCancellationRequested)
        {
            // A write knows whether any attempt may have taken effect; anything else cut off by the deadline may have.
            var outcome = e is Skiff.Net.Runtime.WriteCancelledException w ? w.Outcome : WriteOutcome.Unknown;
            var what = outcome == WriteOutcome.Unknown ? "a write may have taken effect" : "it did not take effect";
            throw new SkiffException(ErrorKind.Timeout, $"no answer within {Timeout.TotalSeconds:0.###} s; {what}", e, outcome);
        }
    }
}
