using System.Security.Cryptography;
using Skiff.Core;
using Skiff.Net.Protocol;

namespace Skiff.Net.Runtime.Auth;

/// <summary>
/// The auth calls of one node: authenticating (answered by the member called, from its applied auth state) and
/// auth changes, which go through the log like key-value writes (routed to the leader, which hashes any password
/// and makes any signing key before proposing, so the log never carries a password).
/// </summary>
internal sealed class AuthCalls(SkiffServer node, Func<NodeRuntime> runtime, LeaderRouter router, TimeSpan tokenTtl)
{
    /// <summary>Longest user or role name, in characters.</summary>
    public const int MaxNameLength = 128;

    // A hash to verify against when the user is unknown, so a wrong name costs as long as a wrong password.
    private static readonly Lazy<PasswordHash> Decoy = new(() => Passwords.Hash("decoy").Value);

    // Each password check costs the member ~0.1 s of CPU (the KDF is slow on purpose), and Authenticate is open to
    // anyone who reaches the port: at most one check per core runs at once, and a caller that cannot get a slot
    // within a second is told to come back (Overloaded) instead of queueing without bound.
    private readonly SemaphoreSlim _checks = new(Math.Max(1, Environment.ProcessorCount), Math.Max(1, Environment.ProcessorCount));

    /// <summary>A token for <paramref name="user"/> if <paramref name="password"/> is theirs; with auth off, an empty
    /// token (calls need none). A wrong name or password is <see cref="ErrorKind.Unauthenticated"/>, the same for both.</summary>
    public async Task<(string Token, DateTimeOffset Expires)> AuthenticateAsync(string user, string password, CancellationToken ct)
    {
        var state = node.AuthState;
        if (!state.Enabled) return ("", DateTimeOffset.UtcNow + tokenTtl);
        if (!await _checks.WaitAsync(TimeSpan.FromSeconds(1), ct).ConfigureAwait(false))
            throw new SkiffException(ErrorKind.Overloaded, "too many sign-ins at once; try again", outcome: WriteOutcome.NotApplied);
        try
        {
            var hash = state.Users.TryGetValue(user, out var found) ? found.Password?.Value : null;
            var ok = Passwords.Verify(hash ?? Decoy.Value, password) && hash is not null;
            if (!ok)
                throw new SkiffException(ErrorKind.Unauthenticated, "wrong user name or password (or the user has none: it signs in with a client certificate)",
                    outcome: WriteOutcome.NotApplied);
            var expires = DateTimeOffset.UtcNow + tokenTtl;
            return (Tokens.Issue(state, user, expires), expires);
        }
        finally
        {
            _checks.Release();
        }
    }

    /// <summary>Applies an auth change through the log; returns the auth revision it made.</summary>
    public Task<long> ChangeAsync(AuthChangeRequest request, CallOrigin origin, CancellationToken ct)
    {
        Validate(request);
        return router.RouteAsync(async t =>
        {
            var command = LogCommand.NewAuth(CommandOf(request));
            var (result, _) = await runtime().ProposeAsync(LogCommandCodec.encode(command), t).ConfigureAwait(false);
            return result switch
            {
                LogResult.AuthApplied applied => applied.revision,
                LogResult.AuthRefused refused => throw new SkiffException(ErrorKind.InvalidArgument, refused.reason, outcome: WriteOutcome.NotApplied),
                _ => throw new SkiffException(ErrorKind.StorageError, $"the auth change gave {result}"),
            };
        }, (c, t) => c.AuthChangeOnceAsync(request, t), origin, ct);
    }

    /// <summary>The command a request stands for, with its password hashed and, to enable auth, a fresh signing key.</summary>
    private static AuthCommand CommandOf(AuthChangeRequest r) => r.Op switch
    {
        AuthOp.UserAdd => AuthCommand.NewUserAdd(r.User, Passwords.Hash(r.Password)),
        AuthOp.UserDelete => AuthCommand.NewUserDelete(r.User),
        AuthOp.UserChangePassword => AuthCommand.NewUserChangePassword(r.User, Passwords.Hash(r.Password)),
        AuthOp.UserGrantRole => AuthCommand.NewUserGrantRole(r.User, r.Role),
        AuthOp.UserRevokeRole => AuthCommand.NewUserRevokeRole(r.User, r.Role),
        AuthOp.RoleAdd => AuthCommand.NewRoleAdd(r.Role),
        AuthOp.RoleDelete => AuthCommand.NewRoleDelete(r.Role),
        AuthOp.RoleGrantPermission => AuthCommand.NewRoleGrantPermission(r.Role, new Permission(r.Prefix, r.Write)),
        AuthOp.RoleRevokePermission => AuthCommand.NewRoleRevokePermission(r.Role, r.Prefix),
        AuthOp.AuthEnable => AuthCommand.NewEnable(RandomNumberGenerator.GetBytes(32)),
        AuthOp.AuthDisable => AuthCommand.Disable,
        _ => throw new SkiffException(ErrorKind.InvalidArgument, $"unknown auth change {r.Op}"),
    };

    /// <summary>Refuses malformed requests before anything is hashed or proposed (input from the network).</summary>
    private static void Validate(AuthChangeRequest r)
    {
        switch (r.Op)
        {
            case AuthOp.UserAdd or AuthOp.UserDelete or AuthOp.UserChangePassword:
                Name(r.User, "user");
                break;
            case AuthOp.UserGrantRole or AuthOp.UserRevokeRole:
                Name(r.User, "user");
                Name(r.Role, "role");
                break;
            case AuthOp.RoleAdd or AuthOp.RoleDelete:
                Name(r.Role, "role");
                break;
            case AuthOp.RoleGrantPermission or AuthOp.RoleRevokePermission:
                Name(r.Role, "role");
                RequestLimits.Prefix(r.Prefix);
                break;
            case AuthOp.AuthEnable or AuthOp.AuthDisable:
                break;
            default:
                throw new SkiffException(ErrorKind.InvalidArgument, $"unknown auth change {r.Op}");
        }
        if (System.Text.Encoding.UTF8.GetByteCount(r.Password) > Passwords.MaxPasswordBytes)
            throw new SkiffException(ErrorKind.InvalidArgument, $"a password may have at most {Passwords.MaxPasswordBytes} UTF-8 bytes");
    }

    private static void Name(string name, string what)
    {
        if (name.Length is 0 or > MaxNameLength || name.Any(char.IsControl) || name.Contains(':'))
            throw new SkiffException(ErrorKind.InvalidArgument,
                $"a {what} name must have 1 to {MaxNameLength} characters, none of them ':' or a control character; '{name}' does not");
    }

    /// <summary>Users, roles and the switch as this member has applied them.</summary>
    public AuthStatusReply Status()
    {
        var state = node.AuthState;
        var reply = new AuthStatusReply { Enabled = state.Enabled, Revision = (ulong)state.Revision };
        foreach (var u in state.Users.Values)
        {
            var user = new AuthUser { Name = u.Name, HasPassword = u.Password is not null };
            user.Roles.AddRange(u.Roles);
            reply.Users.Add(user);
        }
        reply.Roles.Add(new AuthRole { Name = Core.Auth.RootRole });
        foreach (var (name, perms) in state.Roles)
        {
            var role = new AuthRole { Name = name };
            role.Permissions.AddRange(perms.Select(p => new AuthPermission { Prefix = p.Prefix, Write = p.Write }));
            reply.Roles.Add(role);
        }
        return reply;
    }
}
