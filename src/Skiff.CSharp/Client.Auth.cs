using Skiff.Net.Protocol;

namespace Skiff;

/// <summary>Auth, as etcd's: signing in, and managing users, roles and the auth switch.</summary>
/// <remarks>Once auth is enabled every call names a user, by a token (<see cref="WithCredentials"/> or
/// <see cref="AuthenticateAsync"/>) or by a client certificate whose common name is the user (with
/// <see cref="TlsOptions.ClientCertAuth"/> on the members). Roles grant read or read-write access to key prefixes;
/// the built-in <c>root</c> role may do everything, and only it may change members, leadership or auth. A denied
/// call fails with <see cref="ErrorKind.PermissionDenied"/>, a missing, wrong, expired or stale token with
/// <see cref="ErrorKind.Unauthenticated"/>.</remarks>
public sealed partial class Client
{
    private (string User, string Password)? _credentials;

    /// <summary>Signs in as <paramref name="user"/> with <paramref name="password"/>: lazily on the first call, and
    /// again whenever the token is about to expire or an auth change made it stale. Set before the first call.</summary>
    /// <exception cref="InvalidOperationException">After the first call.</exception>
    public Client WithCredentials(string user, string password)
    {
        ArgumentNullException.ThrowIfNull(user);
        ArgumentNullException.ThrowIfNull(password);
        EnsureNotConnected();
        _credentials = (user, password);
        return this;
    }

    /// <summary>Gets a token for <paramref name="user"/> and makes this client's calls carry it until it expires
    /// (5 minutes unless the members say otherwise) or an auth change ends it; returns the token (empty while auth
    /// is off). Prefer <see cref="WithCredentials"/>, which renews the token by itself.</summary>
    /// <exception cref="SkiffException"><see cref="ErrorKind.Unauthenticated"/> for a wrong user name or password.</exception>
    public Task<string> AuthenticateAsync(string user, string password, CancellationToken cancellationToken = default) =>
        WithDeadline(cancellationToken, async t =>
        {
            var (token, _) = await Grpc.AuthenticateAsync(user, password, t).ConfigureAwait(false);
            Grpc.WithToken(token);
            return token;
        });

    private Task ChangeAsync(AuthChangeRequest request, CancellationToken cancellationToken) =>
        WithDeadline(cancellationToken, t => Grpc.AuthChangeAsync(request, t));

    /// <summary>Adds a user. Without a password (null or empty) the user can only sign in with a client certificate
    /// naming it. The password is hashed (PBKDF2-SHA256) by the member that proposes the change; only the hash is
    /// replicated.</summary>
    /// <exception cref="SkiffException"><see cref="ErrorKind.InvalidArgument"/> if the user exists or the name is invalid.</exception>
    public Task UserAddAsync(string user, string? password, CancellationToken cancellationToken = default) =>
        ChangeAsync(new AuthChangeRequest { Op = AuthOp.UserAdd, User = user, Password = password ?? "" }, cancellationToken);

    /// <summary>Deletes a user (refused while auth is on if it is the last user with the root role).</summary>
    public Task UserDeleteAsync(string user, CancellationToken cancellationToken = default) =>
        ChangeAsync(new AuthChangeRequest { Op = AuthOp.UserDelete, User = user }, cancellationToken);

    /// <summary>Sets a user's password (null or empty: none, certificate sign-in only).</summary>
    public Task UserChangePasswordAsync(string user, string? password, CancellationToken cancellationToken = default) =>
        ChangeAsync(new AuthChangeRequest { Op = AuthOp.UserChangePassword, User = user, Password = password ?? "" }, cancellationToken);

    /// <summary>Grants <paramref name="role"/> (<c>root</c> or one added with <see cref="RoleAddAsync"/>) to a user.</summary>
    public Task UserGrantRoleAsync(string user, string role, CancellationToken cancellationToken = default) =>
        ChangeAsync(new AuthChangeRequest { Op = AuthOp.UserGrantRole, User = user, Role = role }, cancellationToken);

    /// <summary>Takes a role from a user.</summary>
    public Task UserRevokeRoleAsync(string user, string role, CancellationToken cancellationToken = default) =>
        ChangeAsync(new AuthChangeRequest { Op = AuthOp.UserRevokeRole, User = user, Role = role }, cancellationToken);

    /// <summary>Adds a role with no permissions.</summary>
    public Task RoleAddAsync(string role, CancellationToken cancellationToken = default) =>
        ChangeAsync(new AuthChangeRequest { Op = AuthOp.RoleAdd, Role = role }, cancellationToken);

    /// <summary>Deletes a role (and takes it from every user). The root role cannot be deleted.</summary>
    public Task RoleDeleteAsync(string role, CancellationToken cancellationToken = default) =>
        ChangeAsync(new AuthChangeRequest { Op = AuthOp.RoleDelete, Role = role }, cancellationToken);

    /// <summary>Lets holders of <paramref name="role"/> read (and with <paramref name="permission"/>
    /// <see cref="KeyPermission.ReadWrite"/>, write) every key that starts with <paramref name="prefix"/> ("" is
    /// every key). Replaces the role's earlier grant on the same prefix. A prefix is plain text: <c>app/</c> covers
    /// <c>app/x</c> but not <c>apple</c>, while <c>app</c> covers both.</summary>
    public Task RoleGrantPermissionAsync(string role, string prefix, KeyPermission permission, CancellationToken cancellationToken = default) =>
        ChangeAsync(new AuthChangeRequest
        {
            Op = AuthOp.RoleGrantPermission,
            Role = role,
            Prefix = prefix,
            Write = permission == KeyPermission.ReadWrite,
        }, cancellationToken);

    /// <summary>Takes the role's grant on exactly <paramref name="prefix"/>.</summary>
    public Task RoleRevokePermissionAsync(string role, string prefix, CancellationToken cancellationToken = default) =>
        ChangeAsync(new AuthChangeRequest { Op = AuthOp.RoleRevokePermission, Role = role, Prefix = prefix }, cancellationToken);

    /// <summary>Turns auth on: from then on every call needs a user. Refused unless a user with the root role exists.</summary>
    public Task AuthEnableAsync(CancellationToken cancellationToken = default) =>
        ChangeAsync(new AuthChangeRequest { Op = AuthOp.AuthEnable }, cancellationToken);

    /// <summary>Turns auth off (root only while it is on).</summary>
    public Task AuthDisableAsync(CancellationToken cancellationToken = default) =>
        ChangeAsync(new AuthChangeRequest { Op = AuthOp.AuthDisable }, cancellationToken);

    /// <summary>Users, roles and the auth switch as the contacted member has applied them (root only while auth is on).</summary>
    public Task<AuthStatus> GetAuthStatusAsync(CancellationToken cancellationToken = default) =>
        WithDeadline(cancellationToken, async t =>
        {
            var r = await Grpc.AuthStatusAsync(t).ConfigureAwait(false);
            return new AuthStatus(r.Enabled, (long)r.Revision,
                r.Users.Select(u => new AuthUserInfo(u.Name, u.Roles.ToList(), u.HasPassword)).ToList(),
                r.Roles.Select(x => new AuthRoleInfo(x.Name,
                    x.Permissions.Select(p => new AuthPermissionInfo(p.Prefix, p.Write ? KeyPermission.ReadWrite : KeyPermission.Read)).ToList())).ToList());
        });
}
