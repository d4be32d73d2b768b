using Grpc.Core;
using Skiff.Net.Protocol;

namespace Skiff.Net.Runtime;

/// <summary>The auth side of <see cref="SkiffGrpcClient"/>: the token its calls carry, signing in lazily with a
/// user and password (and again when the token expires or an auth change ends it), and the auth calls.</summary>
internal sealed partial class SkiffGrpcClient
{
    private readonly SemaphoreSlim _signing = new(1, 1);
    private (string User, string Password)? _credentials;
    private volatile string? _token;
    private DateTimeOffset _tokenExpires;

    /// <summary>Where calls get the token they carry (a forwarding member's; by default this client's own).</summary>
    internal Func<string?>? TokenSource { get; init; }

    /// <summary>Where a forwarding member's calls get the member token they carry beside the client's (null: none).</summary>
    internal Func<string?>? MemberTokenSource { get; init; }

    /// <summary>Makes every call carry a token for <paramref name="user"/>, got with <paramref name="password"/> on
    /// the first call and again whenever the token is about to expire or a member refuses it as stale.</summary>
    public SkiffGrpcClient WithCredentials(string user, string password)
    {
        _credentials = (user, password);
        return this;
    }

    /// <summary>Makes every call carry <paramref name="token"/> (from <see cref="AuthenticateAsync"/>).</summary>
    public SkiffGrpcClient WithToken(string token)
    {
        _token = token;
        return this;
    }

    /// <summary>The token this client's calls carry, if any.</summary>
    internal string? Token => TokenSource is { } source ? source() : _token;

    private Task<T> Call<T>(Func<Protocol.Skiff.SkiffClient, CallOptions, Task<T>> call, CancellationToken ct, bool idempotent) =>
        SignedIn(() => CallCore(call, ct, idempotent), ct);

    private Task<T> Write<T>(Func<Protocol.Skiff.SkiffClient, CallOptions, SessionRef?, Task<T>> call, CancellationToken ct) =>
        SignedIn(() => WriteCore(call, ct), ct);

    /// <summary>Runs <paramref name="body"/> with a current token when the client has credentials; a refusal for a
    /// stale or expired token (nothing was done) gets a new token and one more try.</summary>
    private async Task<T> SignedIn<T>(Func<Task<T>> body, CancellationToken ct)
    {
        if (_credentials is null) return await body().ConfigureAwait(false);
        await EnsureTokenAsync(renew: false, ct).ConfigureAwait(false);
        try { return await body().ConfigureAwait(false); }
        catch (SkiffException e) when (e.Kind == ErrorKind.Unauthenticated && e.Outcome == WriteOutcome.NotApplied)
        {
            await EnsureTokenAsync(renew: true, ct).ConfigureAwait(false);
            return await body().ConfigureAwait(false);
        }
    }

    private async Task EnsureTokenAsync(bool renew, CancellationToken ct)
    {
        if (_credentials is not { } c) return;
        var seen = _token;
        await _signing.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            if (renew ? _token != seen : _token is not null && DateTimeOffset.UtcNow < _tokenExpires) return; // another call renewed it
            var (token, expires) = await AuthenticateAsync(c.User, c.Password, ct).ConfigureAwait(false);
            // Renewed a little early: a token must not expire between here and the member reading it.
            _tokenExpires = expires - TimeSpan.FromTicks(Math.Min((expires - DateTimeOffset.UtcNow).Ticks / 10, TimeSpan.FromSeconds(10).Ticks));
            _token = token;
        }
        finally
        {
            _signing.Release();
        }
    }

    /// <summary>A token for <paramref name="user"/> and its expiry (an empty token while auth is off).</summary>
    public Task<(string Token, DateTimeOffset Expires)> AuthenticateAsync(string user, string password, CancellationToken ct = default) =>
        CallCore(async (c, o) =>
        {
            var r = await c.AuthenticateAsync(new AuthenticateRequest { User = user, Password = password }, o).ConfigureAwait(false);
            return (r.Token, DateTimeOffset.FromUnixTimeMilliseconds((long)r.ExpiresUnixMs));
        }, ct, idempotent: true);

    /// <summary>Applies an auth change (one attempt); returns the auth revision it made.</summary>
    public Task<long> AuthChangeAsync(AuthChangeRequest request, CancellationToken ct = default) =>
        Call(async (c, o) => (long)(await c.AuthChangeAsync(request, o).ConfigureAwait(false)).Revision, ct, idempotent: false);

    // A forwarding member's attempt: its token comes from the call it forwards.
    internal Task<long> AuthChangeOnceAsync(AuthChangeRequest request, CancellationToken ct) =>
        CallCore(async (c, o) => (long)(await c.AuthChangeAsync(request, o).ConfigureAwait(false)).Revision, ct, idempotent: false);

    /// <summary>Users, roles and the auth switch as the contacted member sees them.</summary>
    public Task<AuthStatusReply> AuthStatusAsync(CancellationToken ct = default) =>
        Call(async (c, o) => await c.AuthStatusAsync(new Empty(), o).ConfigureAwait(false), ct, idempotent: true);
}
