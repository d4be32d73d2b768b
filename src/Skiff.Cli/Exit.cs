namespace Skiff.Cli;

/// <summary>The exit codes of <c>skiff</c>, one per kind of failure, so scripts can branch on them. The README's CLI
/// section and <c>skiff --help</c> carry the same table.</summary>
internal static class Exit
{
    public const int Ok = 0;
    /// <summary>An error nobody expected; the message still comes on one line.</summary>
    public const int Internal = 1;
    /// <summary>Bad command line or bad input: unknown command, missing argument, invalid key, address or value.</summary>
    public const int Usage = 2;
    /// <summary>No member of the cluster answered at the given endpoints (or a watch's member went away).</summary>
    public const int Unreachable = 3;
    /// <summary>Members answered but the cluster could not commit or confirm in time (no quorum, no leader, timeout).</summary>
    public const int NoQuorum = 4;
    /// <summary>The key (for <c>get</c>) or the member (for <c>member remove</c>, <c>transfer-leader</c>) does not exist.</summary>
    public const int NotFound = 5;
    /// <summary><c>cas</c>: the key did not hold the expected value; nothing changed.</summary>
    public const int CasFailed = 6;
    /// <summary><c>serve</c>: the node could not start (port in use, data directory locked or corrupt, join failed).</summary>
    public const int ServeFailed = 7;
    /// <summary><c>serve</c>: the node stopped itself after a fatal storage error (fail-stop); the log says why.</summary>
    public const int FailStop = 8;
    /// <summary>The members refused the call: no client certificate they trust, no valid user or token, or the user
    /// lacks the permission (PermissionDenied, Unauthenticated).</summary>
    public const int PermissionDenied = 9;
    /// <summary>Interrupted (Ctrl-C) before the command finished; <c>serve</c> and <c>watch</c> exit 0 instead.</summary>
    public const int Interrupted = 130;

    public const string Table = """
        exit codes:
          0    success
          1    unexpected error
          2    bad usage or input (unknown command, invalid key, address or value)
          3    cluster unreachable (no member answered at --endpoints)
          4    no quorum, no leader, timeout, overloaded, or a member's disk is full
          5    not found (get of an absent key; unknown member id)
          6    cas: the key did not hold the expected value
          7    serve: the node could not start (port in use, data dir locked, join failed, empty data dir
               without --join or --new-cluster); any command: the member belongs to another cluster
          8    serve: the node stopped itself after a fatal storage error (fail-stop)
          9    permission denied (no client certificate the members trust: --cert, --key; with auth enabled,
               a wrong or missing --user, or a user without the permission)
          130  interrupted
        """;

    /// <summary>The exit code for an error kind.</summary>
    public static int Of(ErrorKind kind) => kind switch
    {
        ErrorKind.InvalidKey or ErrorKind.ValueTooLarge or ErrorKind.InvalidAddress or ErrorKind.InvalidArgument
            or ErrorKind.SerializeFailed or ErrorKind.DeserializeFailed => Usage,
        ErrorKind.ClientConnectFailed or ErrorKind.PeerConnectFailed or ErrorKind.StreamClosed => Unreachable,
        ErrorKind.NoQuorum or ErrorKind.Timeout or ErrorKind.LeaderElectionTimeout or ErrorKind.NotLeader
            or ErrorKind.SessionExpired or ErrorKind.Overloaded or ErrorKind.DiskFull => NoQuorum,
        ErrorKind.PeerNotFound => NotFound,
        ErrorKind.PermissionDenied or ErrorKind.Unauthenticated => PermissionDenied,
        ErrorKind.RpcBindFailed or ErrorKind.DataDirectoryLocked or ErrorKind.DataDirectoryCreateFailed
            or ErrorKind.StorageCorrupted or ErrorKind.StorageError or ErrorKind.ClusterJoinFailed
            or ErrorKind.ClusterInitFailed or ErrorKind.ClusterMismatch => ServeFailed,
        _ => Internal,
    };
}

/// <summary>An expected failure of a command: printed as one line on stderr, exits with <see cref="Code"/>.</summary>
internal sealed class CliException(int code, string message) : Exception(message)
{
    public int Code { get; } = code;
}
