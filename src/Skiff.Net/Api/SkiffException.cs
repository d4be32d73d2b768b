namespace Skiff;

/// <summary>What went wrong, as a stable code callers can branch on. The message carries the details.</summary>
public enum ErrorKind
{
    /// <summary>Joining an existing cluster failed.</summary>
    ClusterJoinFailed,
    /// <summary>Initialising a new cluster failed.</summary>
    ClusterInitFailed,
    /// <summary>An address could not be parsed or resolved.</summary>
    InvalidAddress,
    /// <summary>The RPC server could not bind its address.</summary>
    RpcBindFailed,
    /// <summary>The data directory could not be created.</summary>
    DataDirectoryCreateFailed,
    /// <summary>Reading or writing durable storage failed (I/O error, read-only or full disk).</summary>
    StorageError,
    /// <summary>A client could not connect to the cluster.</summary>
    ClientConnectFailed,
    /// <summary>A remote call failed.</summary>
    RpcCallFailed,
    /// <summary>Bytes could not be decoded.</summary>
    DeserializeFailed,
    /// <summary>A value could not be encoded.</summary>
    SerializeFailed,
    /// <summary>A write to the key-value store was not accepted.</summary>
    InsertFailed,
    /// <summary>The cluster configuration is missing.</summary>
    MissingClusterConfig,
    /// <summary>The named peer is not a member of the cluster.</summary>
    PeerNotFound,
    /// <summary>A peer could not be reached.</summary>
    PeerConnectFailed,
    /// <summary>A stream was closed before it finished.</summary>
    StreamClosed,
    /// <summary>No leader was elected in time.</summary>
    LeaderElectionTimeout,
    /// <summary>The operation needs the leader and this node is not it.</summary>
    NotLeader,
    /// <summary>The operation did not finish in time.</summary>
    Timeout,
    /// <summary>A key is empty, too long or contains characters that are not allowed.</summary>
    InvalidKey,
    /// <summary>A value is larger than the configured limit.</summary>
    ValueTooLarge,
    /// <summary>The data directory is already open, by this or another process.</summary>
    DataDirectoryLocked,
    /// <summary>Durable data failed validation (checksum mismatch or impossible structure) somewhere other than
    /// a torn tail; the message names the file.</summary>
    StorageCorrupted,
    /// <summary>Not enough members of the cluster are reachable to make progress.</summary>
    NoQuorum,

    /// <summary>An argument is out of range (a negative timeout, an empty peer list, a bad size limit).</summary>
    InvalidArgument,

    /// <summary>The client session of a write no longer exists (it was idle longer than its timeout, or closed),
    /// and the write had been sent before: whether that earlier attempt took effect is unknown
    /// (<see cref="WriteOutcome.Unknown"/>). Read the key to find out.</summary>
    SessionExpired,

    /// <summary>Refused before proposing: nothing was applied; retry later. The leader's bounded queues are full
    /// (too many uncommitted bytes, or too many reads waiting).</summary>
    Overloaded,

    /// <summary>The member answering belongs to another cluster than the one this client (or joining node) first
    /// talked to: a member whose data directory was lost and that founded a new cluster, or a wrong address. Nothing
    /// was done. Point the client at the right members.</summary>
    ClusterMismatch,

    /// <summary>The caller may not make this call: no client certificate signed by the members' trusted CA when they
    /// require one, or (peer traffic) a certificate that does not name the member it claims to be. Nothing was done.</summary>
    PermissionDenied,

    /// <summary>Refused before proposing: the disk under a member's data directory has less free space than the
    /// member keeps in reserve, so it takes no new writes (reads and watches go on). Nothing was applied. The member
    /// takes writes again by itself once space is freed; no restart is needed.</summary>
    DiskFull,

    /// <summary>With auth enabled: the call carries no identity the member accepts (no token, a token that is
    /// malformed, expired, or made before the latest auth change, a wrong user name or password). Authenticate
    /// again; nothing was done. Kept apart from <see cref="PermissionDenied"/> (a known user lacking a permission)
    /// because a client fixes the two differently: this one by a fresh token, that one not at all.</summary>
    Unauthenticated,
}

/// <summary>What an error says about the write that failed.</summary>
public enum WriteOutcome
{
    /// <summary>The write surely did not take effect, and never will: it was refused before it was proposed
    /// (invalid input, no leader, overloaded), or its log entry was replaced. Retrying it is safe.</summary>
    NotApplied,
    /// <summary>The write may have taken effect, or may still take effect: it was proposed, or sent to a member
    /// that may have proposed it, and no answer came before the deadline. Read to find out.</summary>
    Unknown,
}

/// <summary>The one exception type Skiff's public API throws; <see cref="Kind"/> says what went wrong and, for a
/// write, <see cref="Outcome"/> whether it may have taken effect.</summary>
public class SkiffException : Exception
{
    /// <summary>What went wrong.</summary>
    public ErrorKind Kind { get; }

    /// <summary>For a write (insert, remove, compare-and-swap, membership change): whether it surely did not take
    /// effect, or may have. Reads change nothing; for them this is <see cref="WriteOutcome.NotApplied"/> unless the
    /// error is of a kind that could hide a write (a timeout, a broken call).</summary>
    public WriteOutcome Outcome { get; }

    /// <summary>True when the write may have taken effect (<see cref="WriteOutcome.Unknown"/>).</summary>
    public bool MayHaveApplied => Outcome == WriteOutcome.Unknown;

    /// <summary>The details alone, without the kind that <see cref="Exception.Message"/> starts with.</summary>
    public string Detail { get; }

    /// <summary>Creates an exception of the given kind.</summary>
    /// <param name="kind">What went wrong.</param>
    /// <param name="message">Details for a human: what, where, and what to do if anything.</param>
    /// <param name="inner">The underlying cause, if any.</param>
    /// <param name="outcome">What the error says about a write; by default <see cref="WriteOutcome.Unknown"/> for the
    /// kinds that can come after a write was proposed (Timeout, RpcCallFailed, StreamClosed, StorageError,
    /// SessionExpired) and <see cref="WriteOutcome.NotApplied"/> for every other kind.</param>
    public SkiffException(ErrorKind kind, string message, Exception? inner = null, WriteOutcome? outcome = null)
        : base($"{kind}: {message}", inner)
    {
        Kind = kind;
        Detail = message;
        Outcome = outcome ?? DefaultOutcome(kind);
    }

    private static WriteOutcome DefaultOutcome(ErrorKind kind) => kind switch
    {
        ErrorKind.Timeout or ErrorKind.RpcCallFailed or ErrorKind.StreamClosed or ErrorKind.StorageError
            or ErrorKind.SessionExpired => WriteOutcome.Unknown,
        _ => WriteOutcome.NotApplied,
    };
}
