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

    /// <summary>Marks a call that came from a client while auth was off: forwarded with no token (a leader that
    /// has applied an auth enable since refuses it, rather than it passing as one of the member's own calls).</summary>
    public const string Anonymous = "";

    /// <summary>The token of the client call this flow serves; null outside any client call (the embedding
    /// application's own calls, the member's own session), which forward with a member token.</summary>
    public static string? Token => Current.Value;

    /// <summary>Sets the token for the rest of the current async flow (call from an async method, so the value
    /// does not leak to its caller).</summary>
    public static void Set(string token) => Current.Value = token;
}
