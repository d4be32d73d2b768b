namespace Skiff;

/// <summary>What a role's grant on a key prefix allows.</summary>
public enum KeyPermission
{
    /// <summary>Reading the keys (get, list, watch).</summary>
    Read,
    /// <summary>Reading and writing them (put, delete, compare-and-swap).</summary>
    ReadWrite,
}

/// <summary>A role's grant on the keys that start with <paramref name="Prefix"/>.</summary>
/// <param name="Prefix">The key prefix ("" for every key).</param>
/// <param name="Permission">What it allows.</param>
public sealed record AuthPermissionInfo(string Prefix, KeyPermission Permission);

/// <summary>A user as the cluster knows it.</summary>
/// <param name="Name">The user name.</param>
/// <param name="Roles">Its roles.</param>
/// <param name="HasPassword">False for a user that can only sign in with a client certificate.</param>
public sealed record AuthUserInfo(string Name, IReadOnlyList<string> Roles, bool HasPassword);

/// <summary>A role and its grants (the built-in <c>root</c> has none listed: it may do everything).</summary>
/// <param name="Name">The role name.</param>
/// <param name="Permissions">Its grants.</param>
public sealed record AuthRoleInfo(string Name, IReadOnlyList<AuthPermissionInfo> Permissions);

/// <summary>The auth state of a cluster as one member has applied it.</summary>
/// <param name="Enabled">Whether calls need a user.</param>
/// <param name="Revision">Bumped by every auth change; tokens made before the current revision are refused.</param>
/// <param name="Users">The users.</param>
/// <param name="Roles">The roles, <c>root</c> first.</param>
public sealed record AuthStatus(bool Enabled, long Revision, IReadOnlyList<AuthUserInfo> Users, IReadOnlyList<AuthRoleInfo> Roles);
