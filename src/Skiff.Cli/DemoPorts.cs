using System.Net;
using System.Net.Sockets;

namespace Skiff.Cli;

/// <summary>The port the demo's three nodes listen on, one per loopback address 127.0.0.1-3.</summary>
internal static class DemoPorts
{
    /// <summary>9400 if free on all three addresses, else a port that is; or the one asked for.</summary>
    public static int Pick(int requested)
    {
        var addresses = new[] { "127.0.0.1", "127.0.0.2", "127.0.0.3" }.Select(IPAddress.Parse).ToArray();
        bool Free(int p) => addresses.All(a => IsFree(a, p));
        foreach (var a in addresses)
            if (!IsFree(a, 0))
                throw new CliException(Exit.ServeFailed,
                    $"cannot listen on {a}: the demo needs 127.0.0.1-3 (on macOS: sudo ifconfig lo0 alias {a} up)");
        if (requested != 0)
        {
            if (requested is < 1 or > 65535) throw new CliException(Exit.Usage, $"--port {requested} is not between 1 and 65535");
            if (!Free(requested)) throw new CliException(Exit.ServeFailed, $"port {requested} is in use on 127.0.0.1-3");
            return requested;
        }
        if (Free(9400)) return 9400;
        for (var i = 0; i < 50; i++)
        {
            var probe = new TcpListener(IPAddress.Loopback, 0);
            probe.Start();
            var p = ((IPEndPoint)probe.LocalEndpoint).Port;
            probe.Stop();
            if (Free(p)) return p;
        }
        throw new CliException(Exit.ServeFailed, "found no port free on 127.0.0.1-3");
    }

    private static bool IsFree(IPAddress address, int port)
    {
        try
        {
            var l = new TcpListener(address, port);
            l.Start();
            l.Stop();
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
