using System.CommandLine;

namespace Skiff.Cli;

/// <summary>The auth commands, named as etcdctl's: <c>user</c>, <c>role</c>, <c>auth</c>.</summary>
internal static class AuthCommands
{
    /// <summary>The environment variable a password comes from when <c>--user</c> names only the user.</summary>
    public const string PasswordVariable = "SKIFF_PASSWORD";

    /// <summary>NAME:PASSWORD, or NAME with the password in <see cref="PasswordVariable"/> (no prompt: scripts and
    /// tests must not hang; a password on the command line is visible to other local users, the variable is not).</summary>
    public static (string Name, string Password) Credentials(string user)
    {
        var colon = user.IndexOf(':', StringComparison.Ordinal);
        if (colon >= 0) return (user[..colon], user[(colon + 1)..]);
        var password = Environment.GetEnvironmentVariable(PasswordVariable);
        if (string.IsNullOrEmpty(password))
            throw new CliException(Exit.Usage, $"--user {user} needs a password: --user {user}:PASSWORD, or set {PasswordVariable}");
        return (user, password);
    }

    private static Command Simple(string name, string description, Argument[] args, Func<ParseResult, Client, CancellationToken, Task> call,
        Func<ParseResult, string> done)
    {
        var command = new Command(name, description);
        foreach (var a in args) command.Add(a);
        command.SetAction((p, ct) => Commands.Run(p, ct, async (c, o, t) =>
        {
            await call(p, c, t);
            o.Done(done(p), new { ok = true });
            return Exit.Ok;
        }));
        return command;
    }

    private static Argument<string> Arg(string name, string description) => new(name) { Description = description };

    /// <summary><c>skiff user add|delete|passwd|grant-role|revoke-role|list</c>.</summary>
    public static Command UserCommand()
    {
        var user = new Command("user", "Manage users (root only once auth is enabled)");
        var name = Arg("NAME", "The user");
        var password = new Argument<string?>("PASSWORD")
        {
            Description = $"The password (default: {PasswordVariable}; none given: the user signs in only with a client certificate)",
            Arity = ArgumentArity.ZeroOrOne,
        };
        string? Password(ParseResult p) => p.GetValue(password) ?? Environment.GetEnvironmentVariable(PasswordVariable);
        user.Add(Simple("add", "Add user NAME", [name, password], (p, c, t) => c.UserAddAsync(p.GetValue(name)!, Password(p), t),
            p => $"User {p.GetValue(name)} created"));
        user.Add(Simple("delete", "Delete user NAME", [name], (p, c, t) => c.UserDeleteAsync(p.GetValue(name)!, t),
            p => $"User {p.GetValue(name)} deleted"));
        user.Add(Simple("passwd", "Set the password of user NAME", [name, password],
            (p, c, t) => c.UserChangePasswordAsync(p.GetValue(name)!, Password(p), t), _ => "Password updated"));
        var role = Arg("ROLE", "The role");
        user.Add(Simple("grant-role", "Grant ROLE to user NAME", [name, role], (p, c, t) => c.UserGrantRoleAsync(p.GetValue(name)!, p.GetValue(role)!, t),
            p => $"Role {p.GetValue(role)} is granted to user {p.GetValue(name)}"));
        user.Add(Simple("revoke-role", "Take ROLE from user NAME", [name, role], (p, c, t) => c.UserRevokeRoleAsync(p.GetValue(name)!, p.GetValue(role)!, t),
            p => $"Role {p.GetValue(role)} is revoked from user {p.GetValue(name)}"));
        var list = new Command("list", "List the users and their roles");
        list.SetAction((p, ct) => Commands.Run(p, ct, async (c, o, t) =>
        {
            var status = await c.GetAuthStatusAsync(t);
            if (o.Json) o.Document(status.Users.Select(u => new { name = u.Name, roles = u.Roles, password = u.HasPassword }));
            else foreach (var u in status.Users) Console.WriteLine($"{u.Name}  {string.Join(',', u.Roles)}");
            return Exit.Ok;
        }));
        user.Add(list);
        return user;
    }

    /// <summary><c>skiff role add|delete|grant-permission|revoke-permission|list</c>.</summary>
    public static Command RoleCommand()
    {
        var role = new Command("role", "Manage roles (root only once auth is enabled)");
        var name = Arg("ROLE", "The role");
        role.Add(Simple("add", "Add ROLE", [name], (p, c, t) => c.RoleAddAsync(p.GetValue(name)!, t), p => $"Role {p.GetValue(name)} created"));
        role.Add(Simple("delete", "Delete ROLE", [name], (p, c, t) => c.RoleDeleteAsync(p.GetValue(name)!, t), p => $"Role {p.GetValue(name)} deleted"));
        var kind = Arg("PERMISSION", "read or readwrite");
        kind.AcceptOnlyFromAmong("read", "readwrite");
        var prefix = Arg("PREFIX", "Keys starting with this ('' for every key)");
        role.Add(Simple("grant-permission", "Let ROLE read (or read and write) the keys under PREFIX", [name, kind, prefix],
            (p, c, t) => c.RoleGrantPermissionAsync(p.GetValue(name)!, p.GetValue(prefix)!,
                p.GetValue(kind) == "readwrite" ? KeyPermission.ReadWrite : KeyPermission.Read, t),
            p => $"Role {p.GetValue(name)} updated"));
        role.Add(Simple("revoke-permission", "Take ROLE's grant on PREFIX", [name, prefix],
            (p, c, t) => c.RoleRevokePermissionAsync(p.GetValue(name)!, p.GetValue(prefix)!, t), p => $"Permission of role {p.GetValue(name)} revoked"));
        var list = new Command("list", "List the roles and their grants");
        list.SetAction((p, ct) => Commands.Run(p, ct, async (c, o, t) =>
        {
            var status = await c.GetAuthStatusAsync(t);
            if (o.Json)
                o.Document(status.Roles.Select(r => new
                {
                    name = r.Name,
                    permissions = r.Permissions.Select(x => new { prefix = x.Prefix, write = x.Permission == KeyPermission.ReadWrite }),
                }));
            else
                foreach (var r in status.Roles)
                    Console.WriteLine($"{r.Name}  {string.Join(' ', r.Permissions.Select(x => $"{(x.Permission == KeyPermission.ReadWrite ? "readwrite" : "read")}:'{x.Prefix}'"))}");
            return Exit.Ok;
        }));
        role.Add(list);
        return role;
    }

    /// <summary><c>skiff auth enable|disable|status</c>.</summary>
    public static Command AuthCommand()
    {
        var auth = new Command("auth", "Turn auth on or off (enabling needs a user with the root role)");
        auth.Add(Simple("enable", "Require a user on every call", [], (_, c, t) => c.AuthEnableAsync(t), _ => "Authentication Enabled"));
        auth.Add(Simple("disable", "Stop requiring users", [], (_, c, t) => c.AuthDisableAsync(t), _ => "Authentication Disabled"));
        var status = new Command("status", "Whether auth is on, and its revision");
        status.SetAction((p, ct) => Commands.Run(p, ct, async (c, o, t) =>
        {
            var s = await c.GetAuthStatusAsync(t);
            o.Done($"Authentication Status: {(s.Enabled ? "true" : "false")}\nAuthRevision: {s.Revision}", new { enabled = s.Enabled, revision = s.Revision });
            return Exit.Ok;
        }));
        auth.Add(status);
        return auth;
    }
}
