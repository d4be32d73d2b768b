/// Users, roles and the auth switch, as replicated state (etcd's auth store): a pure model every member applies in
/// log order, so every member enforces the same rules, and a member that catches up by snapshot gets them with the
/// data. Passwords never enter it, only their slow hashes (made on the member that received the request).
namespace Skiff.Core

open System

/// What a role grants on the keys that start with `Prefix` (ordinal): reading them, and with `Write` also writing.
type Permission = { Prefix: string; Write: bool }

/// A PBKDF2-SHA256 password hash with its salt and iteration count (so the count can rise without breaking old hashes).
type PasswordHash = { Iterations: int; Salt: byte[]; Hash: byte[] }

/// A user: an optional password (none: the user can only authenticate with a client certificate naming it) and roles.
type User = { Name: string; Password: PasswordHash option; Roles: Set<string> }

/// Everything auth: whether it is enforced, the revision every change bumps (tokens name the revision they were
/// made at), the key tokens are signed with, the users and the roles (the built-in `root` is not stored).
type AuthState = { Enabled: bool; Revision: int64; SigningKey: byte[]; Users: Map<string, User>; Roles: Map<string, Permission list> }

/// A change to the auth state, as carried by a log entry.
[<RequireQualifiedAccess>]
type AuthCommand =
    | UserAdd of name: string * password: PasswordHash option
    | UserDelete of name: string
    | UserChangePassword of name: string * password: PasswordHash option
    | UserGrantRole of user: string * role: string
    | UserRevokeRole of user: string * role: string
    | RoleAdd of name: string
    | RoleDelete of name: string
    | RoleGrantPermission of role: string * permission: Permission
    | RoleRevokePermission of role: string * prefix: string
    /// Turns enforcement on, with a fresh token signing key (made on the member that received the request).
    | Enable of signingKey: byte[]
    | Disable

/// What a user may do with a key or a prefix.
[<RequireQualifiedAccess>]
type Access =
    | Read
    | Write

module Auth =
    /// The built-in role that may do everything: membership, leadership transfer, auth changes, every key.
    [<Literal>]
    let RootRole = "root"

    /// The built-in user etcd also insists on before auth can be enabled.
    [<Literal>]
    let RootUser = "root"

    /// No users, no roles, auth off.
    let empty = { Enabled = false; Revision = 0L; SigningKey = [||]; Users = Map.empty; Roles = Map.empty }

    let private isRoot (user: User) = user.Roles.Contains RootRole

    let private roleExists (state: AuthState) role = role = RootRole || state.Roles.ContainsKey role

    /// Whether some user holds the root role (enabling auth, and keeping it enabled, needs one).
    let hasRootUser (state: AuthState) = state.Users |> Map.exists (fun _ u -> isRoot u)

    let private withUser state (user: User) = { state with Users = state.Users.Add(user.Name, user) }

    let private changeUser state name (f: User -> Result<User, string>) =
        match state.Users.TryFind name with
        | None -> Error(sprintf "user '%s' does not exist" name)
        | Some u -> f u |> Result.map (withUser state)

    /// Applies a command: the new state (revision bumped), or why it is refused (nothing changes then). Refusals are
    /// decided here, in log order, so two concurrent changes that exclude each other are settled the same way on
    /// every member.
    let apply (state: AuthState) (command: AuthCommand) : Result<AuthState, string> =
        let next =
            match command with
            | AuthCommand.UserAdd(name, password) ->
                if state.Users.ContainsKey name then
                    Error(sprintf "user '%s' already exists" name)
                else
                    Ok(withUser state { Name = name; Password = password; Roles = Set.empty })
            | AuthCommand.UserDelete name ->
                match state.Users.TryFind name with
                | None -> Error(sprintf "user '%s' does not exist" name)
                | Some _ -> Ok { state with Users = state.Users.Remove name }
            | AuthCommand.UserChangePassword(name, password) -> changeUser state name (fun u -> Ok { u with Password = password })
            | AuthCommand.UserGrantRole(name, role) ->
                if not (roleExists state role) then
                    Error(sprintf "role '%s' does not exist" role)
                else
                    changeUser state name (fun u -> Ok { u with Roles = u.Roles.Add role })
            | AuthCommand.UserRevokeRole(name, role) ->
                changeUser state name (fun u ->
                    if u.Roles.Contains role then
                        Ok { u with Roles = u.Roles.Remove role }
                    else
                        Error(sprintf "user '%s' does not have role '%s'" name role))
            | AuthCommand.RoleAdd name ->
                if roleExists state name then
                    Error(sprintf "role '%s' already exists" name)
                else
                    Ok { state with Roles = state.Roles.Add(name, []) }
            | AuthCommand.RoleDelete name ->
                if name = RootRole then
                    Error "the root role is built in and cannot be deleted"
                elif not (state.Roles.ContainsKey name) then
                    Error(sprintf "role '%s' does not exist" name)
                else
                    let users = state.Users |> Map.map (fun _ u -> { u with Roles = u.Roles.Remove name })
                    Ok { state with Roles = state.Roles.Remove name; Users = users }
            | AuthCommand.RoleGrantPermission(role, permission) ->
                if role = RootRole then
                    Error "the root role already has every permission"
                else
                    match state.Roles.TryFind role with
                    | None -> Error(sprintf "role '%s' does not exist" role)
                    | Some perms ->
                        let kept = perms |> List.filter (fun p -> p.Prefix <> permission.Prefix)
                        Ok { state with Roles = state.Roles.Add(role, kept @ [ permission ]) }
            | AuthCommand.RoleRevokePermission(role, prefix) ->
                match state.Roles.TryFind role with
                | None -> Error(sprintf "role '%s' does not exist" role)
                | Some perms when perms |> List.exists (fun p -> p.Prefix = prefix) ->
                    Ok { state with Roles = state.Roles.Add(role, perms |> List.filter (fun p -> p.Prefix <> prefix)) }
                | Some _ -> Error(sprintf "role '%s' has no permission on prefix '%s'" role prefix)
            | AuthCommand.Enable key ->
                if not (hasRootUser state) then
                    Error
                        "auth cannot be enabled before a user with the root role exists (skiff user add root; skiff user grant-role root root)"
                elif key.Length < 32 then
                    Error "the token signing key is too short"
                else
                    Ok { state with Enabled = true; SigningKey = key }
            | AuthCommand.Disable -> Ok { state with Enabled = false }
        match next with
        | Ok s when s.Enabled && not (hasRootUser s) ->
            Error "while auth is enabled, at least one user must keep the root role (disable auth first)"
        | Ok s -> Ok { s with Revision = state.Revision + 1L }
        | Error e -> Error e

    /// Whether `user` may access every key that starts with `prefix` (a single key is the prefix of itself and
    /// its extensions): some role of the user grants a prefix of `prefix`, with write access when writing. Root may
    /// do everything; an unknown user nothing.
    let allows (state: AuthState) (user: string) (access: Access) (prefix: string) =
        match state.Users.TryFind user with
        | None -> false
        | Some u when isRoot u -> true
        | Some u ->
            u.Roles
            |> Seq.exists (fun role ->
                match state.Roles.TryFind role with
                | None -> false
                | Some perms ->
                    perms
                    |> List.exists (fun p -> prefix.StartsWith(p.Prefix, StringComparison.Ordinal) && (access = Access.Read || p.Write)))

    /// Whether `user` exists and holds the root role.
    let isRootUser (state: AuthState) (user: string) =
        match state.Users.TryFind user with
        | Some u -> isRoot u
        | None -> false
