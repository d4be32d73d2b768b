namespace Skiff.Net.Runtime.Auth;

/// <summary>
/// The identity a forwarded call carries to the leader. The member a client called checks the call first
/// (<see cref="AuthCheck"/>) and records here, for the rest of that call's async flow, the token its forwarded
/// attempts send: the client's own token, or for a client identified by its certificate a token the member signs
/// for that user. The leader then checks the forwarded call like any other: forwarding grants nothing.
/// </summary>
internal static class AuthForwarding
{
    private static readonly AsyncLocal<string?> Current = new();
    private static readonly AsyncLocal<string?> CurrentUser = new();
    private static readonly AsyncLocal<bool> CurrentViaMember = new();

    /// <summary>Marks a call that came from a client while auth was off: forwarded with no token (a leader that
    /// has applied an auth enable since refuses it, rather than it passing as one of the member's own calls).</summary>
    public const string Anonymous = "";

    /// <summary>The token of the client call this flow serves; null outside any client call (the embedding
    /// application's own calls, the member's own session), which forward with a member token.</summary>
    public static string? Token => Current.Value;

    /// <summary>The user the member identified for the client call this flow serves (null with auth off, for an
    /// open call, or outside any client call): the owner of a session the call opens.</summary>
    public static string? User => CurrentUser.Value;

    /// <summary>Whether the call this flow serves was forwarded by a member (it carried a valid member token
    /// beside the client's): such a call may use a member's own session.</summary>
    public static bool ViaMember => CurrentViaMember.Value;

    /// <summary>Sets the token for the rest of the current async flow (call from an async method, so the value
    /// does not leak to its caller).</summary>
    public static void Set(string token) => Current.Value = token;

    /// <summary>Sets the token, the identified user and whether a member forwarded the call, for the rest of the
    /// current async flow.</summary>
    public static void Set(string? token, string? user, bool viaMember)
    {
        Current.Value = token;
        CurrentUser.Value = user;
        CurrentViaMember.Value = viaMember;
    }

    /// <summary>Forgets any client call for the rest of the current async flow: what runs in it is the member's
    /// own work (its own session), forwarded with a member token, not as the client that happened to start it.</summary>
    public static void Clear() => Set(null, null, false);
}
