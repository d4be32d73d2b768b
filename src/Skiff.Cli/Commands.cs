using System.CommandLine;
using System.Text;

namespace Skiff.Cli;

/// <summary>The command tree of <c>skiff</c>.</summary>
internal static class Commands
{
    public static readonly Option<string> Endpoints = new("--endpoints", "-e")
    {
        Description = "Members to talk to, as HOST[:PORT],… (a host name or IP address; port 9400 when not given)",
        DefaultValueFactory = _ => "127.0.0.1:9400",
        Recursive = true,
    };

    public static readonly Option<string> Output = new("--output", "-o")
    {
        Description = "table (for people) or json (one document, or one line per change for watch)",
        DefaultValueFactory = _ => "table",
        Recursive = true,
    };

    public static readonly Option<double> Timeout = new("--timeout")
    {
        Description = "Seconds each call may take",
        DefaultValueFactory = _ => 5.0,
        Recursive = true,
    };

    // TLS for the client commands, named as etcdctl's.
    public static readonly Option<string?> CaCert = new("--cacert") { Description = "Talk TLS: the CA (PEM) that signed the members' certificates", Recursive = true };
    public static readonly Option<string?> Cert = new("--cert") { Description = "Client certificate (PEM) for members that require one", Recursive = true };
    public static readonly Option<string?> Key = new("--key") { Description = "Private key (PEM) of --cert", Recursive = true };

    // Auth for the client commands: a password in the option (NAME:PASSWORD) or in SKIFF_PASSWORD, never a prompt.
    public static readonly Option<string?> User = new("--user")
    {
        Description = "Sign in as NAME[:PASSWORD] (password from SKIFF_PASSWORD when not given here)",
        Recursive = true,
    };

    public static RootCommand Build()
    {
        Output.AcceptOnlyFromAmong("table", "json");
        var root = new RootCommand(
            "skiff: run Skiff nodes and talk to a Skiff cluster (an embedded Raft key-value store).\n" +
            "Try 'skiff demo' for a three-node cluster that loses its leader and recovers.\n\n" + Exit.Table)
        {
            Endpoints, Output, Timeout, CaCert, Cert, Key, User,
        };
        root.Add(Serve.Command());
        root.Add(DemoCommand());

        var key = new Argument<string>("KEY") { Description = "The key" };
        var value = new Argument<string?>("VALUE") { Description = "The value as UTF-8 text; read from stdin (raw bytes) if omitted", Arity = ArgumentArity.ZeroOrOne };
        var put = new Command("put", "Set KEY to VALUE") { key, value };
        put.SetAction((p, ct) => Run(p, ct, async (c, o, t) =>
        {
            var bytes = p.GetValue(value) is { } v ? Encoding.UTF8.GetBytes(v) : ReadStdin();
            await c.InsertBytesAsync(p.GetValue(key)!, bytes, t);
            o.Done("OK", new { key = p.GetValue(key), ok = true });
            return Exit.Ok;
        }));
        root.Add(put);

        var getKey = new Argument<string>("KEY") { Description = "The key" };
        var get = new Command("get", "Print the value of KEY (linearizable); exit 5 if absent") { getKey };
        get.SetAction((p, ct) => Run(p, ct, async (c, o, t) =>
        {
            var k = p.GetValue(getKey)!;
            var bytes = await c.GetBytesAsync(k, ReadConsistency.Linearizable, t);
            if (bytes is null) throw new CliException(Exit.NotFound, $"key '{k}' not found");
            o.Value(k, bytes);
            return Exit.Ok;
        }));
        root.Add(get);

        var delKey = new Argument<string>("KEY") { Description = "The key" };
        var del = new Command("del", "Remove KEY (removing an absent key is not an error)") { delKey };
        del.SetAction((p, ct) => Run(p, ct, async (c, o, t) =>
        {
            await c.RemoveAsync(p.GetValue(delKey)!, t);
            o.Done("OK", new { key = p.GetValue(delKey), ok = true });
            return Exit.Ok;
        }));
        root.Add(del);

        var casKey = new Argument<string>("KEY") { Description = "The key" };
        var expected = new Argument<string>("EXPECTED") { Description = "The value KEY must hold now" };
        var next = new Argument<string>("NEW") { Description = "The value to set" };
        var absent = new Option<bool>("--absent") { Description = "EXPECTED is ignored: KEY must not exist (create-if-absent)" };
        var cas = new Command("cas", "Set KEY to NEW only if it holds EXPECTED; exit 6 if it does not") { casKey, expected, next, absent };
        cas.SetAction((p, ct) => Run(p, ct, async (c, o, t) =>
        {
            var k = p.GetValue(casKey)!;
            // Explicitly null for --absent: a null byte[] would convert to an empty, non-null ReadOnlyMemory.
            ReadOnlyMemory<byte>? was = null;
            if (!p.GetValue(absent)) was = Encoding.UTF8.GetBytes(p.GetValue(expected)!);
            var swapped = await c.CompareAndSwapBytesAsync(k, was, Encoding.UTF8.GetBytes(p.GetValue(next)!), t);
            o.Done(swapped ? "OK" : "NOT SWAPPED", new { key = k, swapped });
            if (!swapped) Console.Error.WriteLine($"skiff: '{k}' does not hold the expected value; nothing changed");
            return swapped ? Exit.Ok : Exit.CasFailed;
        }));
        root.Add(cas);

        var prefix = new Argument<string>("PREFIX") { Description = "Only keys starting with this", Arity = ArgumentArity.ZeroOrOne, DefaultValueFactory = _ => "" };
        var ls = new Command("ls", "List keys (under PREFIX)") { prefix };
        var (limit, startAfter) = PagingOptions(ls, "keys");
        ls.SetAction((p, ct) => Run(p, ct, async (c, o, t) =>
        {
            var under = p.GetValue(prefix) ?? "";
            if (p.GetValue(limit) is { } n) o.Page(await c.ListKeysAsync(under, PageLimit(n), p.GetValue(startAfter), t), "keys");
            else o.Lines(await c.ListKeysAsync(under, t), "keys");
            return Exit.Ok;
        }));
        root.Add(ls);

        var prefixes = new Command("prefixes", "List the directory parts of the stored keys");
        var (prefixLimit, prefixStart) = PagingOptions(prefixes, "prefixes");
        prefixes.SetAction((p, ct) => Run(p, ct, async (c, o, t) =>
        {
            if (p.GetValue(prefixLimit) is { } n) o.Page(await c.GetPrefixesAsync(PageLimit(n), p.GetValue(prefixStart), t), "prefixes");
            else o.Lines(await c.GetPrefixesAsync(t), "prefixes");
            return Exit.Ok;
        }));
        root.Add(prefixes);

        root.Add(WatchCommand());
        root.Add(Cluster.MembersCommand());
        root.Add(Cluster.MemberCommand());
        root.Add(Cluster.TransferCommand());
        root.Add(Cluster.StatusCommand());
        root.Add(AuthCommands.UserCommand());
        root.Add(AuthCommands.RoleCommand());
        root.Add(AuthCommands.AuthCommand());
        return root;
    }

    /// <summary>Adds <c>--limit N</c> (one page of at most N, a member serving 10,000 at most) and <c>--start-after
    /// ITEM</c> (the page after ITEM; a page that is not the last names it) to a listing command. Without
    /// <c>--limit</c> the command lists everything, page after page.</summary>
    private static (Option<int?> Limit, Option<string?> StartAfter) PagingOptions(Command command, string what)
    {
        var limit = new Option<int?>("--limit") { Description = $"List one page of at most N {what} (and name where the next page starts)" };
        var startAfter = new Option<string?>("--start-after") { Description = $"With --limit: the page of {what} after this one" };
        command.Add(limit);
        command.Add(startAfter);
        return (limit, startAfter);
    }

    private static int PageLimit(int n) => n >= 1 ? n : throw new CliException(Exit.Usage, $"--limit must be at least 1, not {n}");

    private static Command WatchCommand()
    {
        var prefix = new Argument<string>("PREFIX") { Description = "Watch keys starting with this ('' for all)" };
        var from = new Option<long>("--from") { Description = "Replay committed changes from this log index first" };
        var count = new Option<int>("--count") { Description = "Exit after this many changes (default: until Ctrl-C)" };
        var watch = new Command("watch", "Print committed changes under PREFIX as they happen, until Ctrl-C") { prefix, from, count };
        watch.SetAction((p, ct) => Run(p, ct, async (c, o, t) =>
        {
            var limit = p.GetValue(count);
            await using var sub = await c.WatchAsync(p.GetValue(prefix) ?? "", p.GetValue(from), t);
            o.Ready($"watching '{sub.Prefix}'");
            var seen = 0;
            try
            {
                while (limit <= 0 || seen < limit)
                {
                    var change = await sub.RecvChangeAsync(ct);
                    o.Change(change);
                    seen++;
                }
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                return Exit.Ok; // Ctrl-C is how a watch ends.
            }
            return Exit.Ok;
        }, streaming: true));
        return watch;
    }

    private static Command DemoCommand()
    {
        var port = new Option<int>("--port") { Description = "Port for the three nodes (default 9400 if free, else a free one)" };
        var demo = new Command("demo", "Start a 3-node cluster as child processes, kill its leader, watch it recover, clean up");
        demo.Add(port);
        demo.SetAction((p, ct) => Demo.RunAsync(p.GetValue(port), ct));
        return demo;
    }

    /// <summary>Runs a client command: parses the endpoints, connects lazily, and turns every expected failure into
    /// one line on stderr and its exit code.</summary>
    public static async Task<int> Run(ParseResult p, CancellationToken ct, Func<Client, Out, CancellationToken, Task<int>> body,
        bool streaming = false)
    {
        try
        {
            var endpoints = ParseEndpoints(p.GetValue(Endpoints) ?? "");
            var seconds = p.GetValue(Timeout);
            if (!(seconds > 0)) throw new CliException(Exit.Usage, $"--timeout must be positive, not {seconds}");
            await using var client = Client.ForEndpoints(endpoints).WithTimeout(TimeSpan.FromSeconds(seconds));
            if (p.GetValue(CaCert) is { } ca)
                client.WithTls(new ClientTlsOptions { CaFile = ca, CertFile = p.GetValue(Cert), KeyFile = p.GetValue(Key) });
            else if (p.GetValue(Cert) is not null || p.GetValue(Key) is not null)
                throw new CliException(Exit.Usage, "--cert and --key need --cacert (the CA that signed the members' certificates)");
            if (p.GetValue(User) is { } user)
            {
                var (name, password) = AuthCommands.Credentials(user);
                client.WithCredentials(name, password);
            }
            var o = new Out(p.GetValue(Output) == "json");
            return await body(client, o, ct);
        }
        catch (CliException e)
        {
            Console.Error.WriteLine($"skiff: {e.Message}");
            return e.Code;
        }
        catch (SkiffException e)
        {
            Console.Error.WriteLine($"skiff: {Describe(e)}");
            return Exit.Of(e.Kind);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            if (streaming) return Exit.Ok;
            Console.Error.WriteLine("skiff: interrupted");
            return Exit.Interrupted;
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"skiff: unexpected error: {e.GetType().Name}: {e.Message.ReplaceLineEndings(" ")}");
            return Exit.Internal;
        }
    }

    /// <summary>One line for an expected error: what it means, then the library's detail.</summary>
    public static string Describe(SkiffException e)
    {
        var detail = e.Message.ReplaceLineEndings(" ");
        return e.Kind switch
        {
            ErrorKind.ClientConnectFailed => $"cluster unreachable: {detail}",
            ErrorKind.NoQuorum or ErrorKind.Timeout or ErrorKind.LeaderElectionTimeout => $"no quorum or timeout: {detail}",
            _ => detail,
        };
    }

    /// <summary>The port of an endpoint that names none, as etcd's 2379.</summary>
    public const int DefaultPort = 9400;

    /// <summary><c>HOST[:PORT],…</c> into the members' <c>host:port</c> addresses; each may have a port of its own.</summary>
    public static string[] ParseEndpoints(string text)
    {
        var endpoints = new List<string>();
        foreach (var raw in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!Addresses.TryParseMember(raw, DefaultPort, out var endpoint, out var why))
                throw new CliException(Exit.Usage, $"'{raw}' is not an endpoint (HOST or HOST:PORT): {why}");
            endpoints.Add(endpoint);
        }
        if (endpoints.Count == 0) throw new CliException(Exit.Usage, "no endpoints given");
        return endpoints.ToArray();
    }

    private static byte[] ReadStdin()
    {
        if (!Console.IsInputRedirected)
            throw new CliException(Exit.Usage, "no VALUE given and stdin is a terminal; give VALUE or pipe it in");
        using var stdin = Console.OpenStandardInput();
        using var buffer = new MemoryStream();
        stdin.CopyTo(buffer);
        return buffer.ToArray();
    }
}
