using System.Net;

namespace Skiff;

/// <summary>Builds a <see cref="SkiffNode"/> fluently, as skiff-rs's <c>Builder</c> does:
/// <c>new Builder().SetDir("/tmp/node2").Bind(IPAddress.Parse("127.0.0.2")).JoinCluster(peers).Build()</c>.</summary>
public sealed class Builder
{
    private readonly SkiffOptions _options = new();

    /// <summary>The data directory (default /tmp/skiff).</summary>
    public Builder SetDir(string directory)
    {
        _options.DataDirectory = directory;
        return this;
    }

    /// <summary>The address to listen on (default 127.0.0.1).</summary>
    public Builder Bind(IPAddress address)
    {
        _options.Address = address;
        return this;
    }

    /// <summary>The port to listen on (default 9400).</summary>
    public Builder Port(int port)
    {
        _options.Port = port;
        return this;
    }

    /// <summary>Members to join through on start.</summary>
    public Builder JoinCluster(IEnumerable<IPAddress> peers)
    {
        ArgumentNullException.ThrowIfNull(peers);
        _options.JoinCluster = peers.ToArray();
        return this;
    }

    /// <summary>Members to join through on start, by host name or IP address (<c>host</c> or <c>host:port</c>).</summary>
    public Builder JoinCluster(IEnumerable<string> endpoints)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        _options.JoinEndpoints = endpoints.ToArray();
        return this;
    }

    /// <summary>Where the other members and clients reach this node (<c>host:port</c>, default the bound address and
    /// port); see <see cref="SkiffOptions.AdvertiseAddress"/>.</summary>
    public Builder WithAdvertiseAddress(string address)
    {
        ArgumentNullException.ThrowIfNull(address);
        _options.AdvertiseAddress = address;
        return this;
    }

    /// <summary>Whether this node may found a new cluster when its data directory holds none; see
    /// <see cref="SkiffOptions.NewCluster"/> (default: it does when it is given no members to join).</summary>
    public Builder NewCluster(bool found = true)
    {
        _options.NewCluster = found;
        return this;
    }

    /// <summary>Serves TLS and authenticates the other members with mutual TLS; see <see cref="TlsOptions"/>.</summary>
    public Builder WithTls(TlsOptions tls)
    {
        ArgumentNullException.ThrowIfNull(tls);
        _options.Tls = tls;
        return this;
    }

    /// <summary>The deadline of a call that is given none (default 5 s).</summary>
    public Builder WithTimeout(TimeSpan timeout)
    {
        _options.RequestTimeout = timeout;
        return this;
    }

    /// <summary>How long the cluster keeps a client session without writes (default 10 minutes); see
    /// <see cref="SkiffOptions.SessionTimeout"/>.</summary>
    public Builder WithSessionTimeout(TimeSpan timeout)
    {
        _options.SessionTimeout = timeout;
        return this;
    }

    /// <summary>The serializer for typed values (default System.Text.Json).</summary>
    public Builder WithSerializer(ISkiffSerializer serializer)
    {
        _options.Serializer = serializer;
        return this;
    }

    /// <summary>The largest value accepted, in bytes (default 1 MiB).</summary>
    public Builder WithMaxValueBytes(int bytes)
    {
        _options.MaxValueBytes = bytes;
        return this;
    }

    /// <summary>The memory budget of the state machine's data, in bytes (default 64 MiB; see
    /// <see cref="SkiffOptions.StateMachineMemoryBytes"/>).</summary>
    public Builder WithStateMachineMemory(long bytes)
    {
        _options.StateMachineMemoryBytes = bytes;
        return this;
    }

    /// <summary>The most watches the node serves at once (default 1024; one more is refused with
    /// <see cref="ErrorKind.Overloaded"/>).</summary>
    public Builder WithMaxWatchers(int watchers)
    {
        _options.MaxWatchers = watchers;
        return this;
    }

    /// <summary>The most keys one listing page holds, whatever a client asks for (default 10,000).</summary>
    public Builder WithMaxListPage(int keys)
    {
        _options.MaxListPage = keys;
        return this;
    }

    /// <summary>Where the node logs: elections and membership at Information, a fail-stop at Critical (default:
    /// nowhere). The node never writes to the console itself.</summary>
    public Builder WithLoggerFactory(Microsoft.Extensions.Logging.ILoggerFactory loggerFactory)
    {
        ArgumentNullException.ThrowIfNull(loggerFactory);
        _options.LoggerFactory = loggerFactory;
        return this;
    }

    /// <summary>Lets the node raise the thread pool's minimum worker threads when it starts (default: it does not
    /// touch this process-wide setting). See <see cref="SkiffOptions.MinThreadPoolThreads"/>.</summary>
    public Builder WithMinThreadPoolThreads(int threads)
    {
        _options.MinThreadPoolThreads = threads;
        return this;
    }

    /// <summary>Checks the settings, opens storage and returns the node, not yet started.</summary>
    /// <exception cref="SkiffException">For a bad setting, an unusable or locked data directory.</exception>
    public SkiffNode Build() => SkiffNode.Create(_options);
}
