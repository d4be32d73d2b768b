using Skiff.Core;

namespace Skiff.Net.Storage;

/// <summary>
/// The replicated auth state (users, roles, the auth switch; see Skiff.Core.Auth) and its persistence: one record
/// under a reserved key of the FASTER store, rewritten by every auth change as part of that change's apply.
/// <para>Why one record in the store, written at once, rather than a side file or the checkpoint-time writes of
/// <see cref="SessionTableStore"/>: the store is what checkpoints, snapshot streams and installs already carry, so
/// a restarted member (checkpoint, then log replay re-applying later changes) and a member that catches up by
/// snapshot both find exactly the auth state of the index they reached, with no second file to keep in step. Auth
/// changes are rare and the record small (users and roles), so rewriting it whole on each is cheap. Reserved keys
/// are never listed, read or watched by clients, and the key-index rebuild skips them.</para>
/// Not thread-safe for writes (the state machine serialises applies under its lock); <see cref="State"/> may be
/// read from any thread (an immutable value, replaced whole).
/// </summary>
internal sealed class AuthStore
{
    /// <summary>The key the record is kept under.</summary>
    public const string Key = KvStateMachine.ReservedPrefix + "auth";

    private readonly FasterKvStore _store;
    private volatile AuthState _state;

    private AuthStore(FasterKvStore store, AuthState state)
    {
        _store = store;
        _state = state;
    }

    /// <summary>The auth state as of the last applied entry.</summary>
    public AuthState State => _state;

    /// <summary>Reads the record from <paramref name="store"/> (none: auth never configured).</summary>
    /// <param name="store">The store.</param>
    /// <param name="dir">The store's directory, for errors.</param>
    public static AuthStore Load(FasterKvStore store, string dir)
    {
        var record = store.Read(Key);
        if (record is null) return new AuthStore(store, Auth.empty);
        var decoded = AuthCodec.decodeState(record);
        if (decoded.IsError)
            throw new SkiffException(ErrorKind.StorageCorrupted, $"the auth state in {dir} is damaged: {decoded.ErrorValue}");
        return new AuthStore(store, decoded.ResultValue);
    }

    /// <summary>Applies an auth change: on success the new state is stored and in force, and the result names its
    /// revision; a refusal changes nothing.</summary>
    public LogResult Apply(AuthCommand command)
    {
        var next = Auth.apply(_state, command);
        if (next.IsError) return LogResult.NewAuthRefused(next.ErrorValue);
        _store.Upsert(Key, AuthCodec.encodeState(next.ResultValue));
        _state = next.ResultValue;
        return LogResult.NewAuthApplied(next.ResultValue.Revision);
    }
}
