using Skiff.Net.Runtime;

namespace Skiff;

// Listings: one page per call, each under the store's deadline; the calls that return everything walk the pages
// (a member never serves more than its largest page, so a whole listing is always a walk).
public abstract partial class KeyValueStoreBase
{
    /// <inheritdoc />
    public Task<IReadOnlyList<string>> ListKeysAsync(string prefix, CancellationToken cancellationToken = default)
    {
        KeyRules.ValidatePrefix(prefix);
        return WithDeadline(cancellationToken, t => Paging.AllAsync((after, pt) => ListKeysPageCoreAsync(prefix, after, 0, pt), t));
    }

    /// <inheritdoc />
    public Task<ListPage> ListKeysAsync(string prefix, int limit, string? startAfter = null, CancellationToken cancellationToken = default)
    {
        KeyRules.ValidatePrefix(prefix);
        ArgumentOutOfRangeException.ThrowIfNegative(limit);
        return WithDeadline(cancellationToken, t => ListKeysPageCoreAsync(prefix, startAfter, limit, t));
    }

    /// <inheritdoc />
    public IAsyncEnumerable<string> EnumerateKeysAsync(string prefix, CancellationToken cancellationToken = default)
    {
        KeyRules.ValidatePrefix(prefix);
        return Paging.EnumerateAsync((after, t) => WithDeadline(t, pt => ListKeysPageCoreAsync(prefix, after, 0, pt)), cancellationToken);
    }

    /// <inheritdoc />
    public Task<IReadOnlyList<string>> GetPrefixesAsync(CancellationToken cancellationToken = default) =>
        WithDeadline(cancellationToken, t => Paging.AllAsync((after, pt) => GetPrefixesPageCoreAsync(after, 0, pt), t));

    /// <inheritdoc />
    public Task<ListPage> GetPrefixesAsync(int limit, string? startAfter = null, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(limit);
        return WithDeadline(cancellationToken, t => GetPrefixesPageCoreAsync(startAfter, limit, t));
    }

    /// <inheritdoc />
    public IAsyncEnumerable<string> EnumeratePrefixesAsync(CancellationToken cancellationToken = default) =>
        Paging.EnumerateAsync((after, t) => WithDeadline(t, pt => GetPrefixesPageCoreAsync(after, 0, pt)), cancellationToken);
}
