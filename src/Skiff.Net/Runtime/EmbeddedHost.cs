using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Skiff.Net.Runtime;

/// <summary>The lifetime of the node's internal web host: it does nothing. The default (ConsoleLifetime) registers
/// SIGINT, SIGQUIT and SIGTERM handlers that cancel the signal's default action and a ProcessExit handler: inside an
/// application that embeds a node it took the process's signals away from the application. The node is started and
/// stopped by <see cref="SkiffServer.StartAsync"/> and <see cref="SkiffServer.ShutdownAsync"/> only.</summary>
internal sealed class EmbeddedHostLifetime : IHostLifetime
{
    public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}

/// <summary>The node's internal web host: Kestrel serving the client and peer gRPC services on one HTTP/2 port.</summary>
internal static class EmbeddedHost
{
    private const string GrpcStatus = "grpc-status";
    private const string ResourceExhausted = "8";

    /// <summary>Starts serving <paramref name="node"/>'s services on its address.</summary>
    /// <exception cref="SkiffException">RpcBindFailed when the address cannot be listened on.</exception>
    public static async Task<WebApplication> StartAsync(SkiffServerOptions options, SkiffServer node)
    {
        // An empty builder: no configuration sources (the application's appsettings.json, ASPNETCORE_* variables and
        // command line must not add endpoints or settings to the node's server), no logging providers, and no
        // ConsoleLifetime: the host process, not the node, owns SIGTERM, SIGINT and Ctrl-C.
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions { Args = Array.Empty<string>() });
        builder.Services.AddSingleton<IHostLifetime, EmbeddedHostLifetime>();
        builder.WebHost.UseKestrelCore();
        // This server's own setting (not the process's): Kestrel runs a connection's reads and writes on the thread
        // that completed the socket operation instead of queueing them to its I/O queues, two thread-pool hops less
        // per message. Safe here because no handler of this server blocks: they hand requests to the node's loop
        // and await (measured with Skiff.Bench writepath, docs/benchmarks.md "Write path").
        builder.WebHost.UseSockets(o => o.UnsafePreferInlineScheduling = true);
        builder.Services.AddRoutingCore();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Listen(options.Bind, options.Port, l =>
            {
                l.Protocols = HttpProtocols.Http2;
                if (node.Tls is { } tls) l.UseHttps(tls.ServerOptions());
            });
            k.Limits.Http2.MaxStreamsPerConnection = 4096;
            k.Limits.Http2.InitialConnectionWindowSize = 4 << 20;
            k.Limits.Http2.InitialStreamWindowSize = 2 << 20;
        });
        builder.WebHost.UseShutdownTimeout(TimeSpan.FromSeconds(1));
        builder.Services.AddGrpc(o =>
        {
            // Peer messages (append batches, snapshot chunks) may be larger than one client request.
            o.MaxReceiveMessageSize = 64 << 20;
            o.MaxSendMessageSize = 64 << 20;
        }).AddServiceOptions<ClientService>(o =>
        {
            // No client request may be larger than a compare-and-swap at the value limit: gRPC refuses a larger
            // message before reading it (ResourceExhausted; TagOversizedRequests tags it ValueTooLarge).
            o.MaxReceiveMessageSize = RequestLimits.MaxRequestBytes(options.MaxValueBytes);
            o.Interceptors.Add<ClientCertificateCheck>();
            o.Interceptors.Add<ClusterCheck>();
            o.Interceptors.Add<global::Skiff.Net.Runtime.Auth.AuthCheck>();
        });
        builder.Services.AddSingleton(node);
        var app = builder.Build();
        app.UseRouting();
        app.Use(TagOversizedRequests);
        app.MapGrpcService<ClientService>();
        app.MapGrpcService<PeerService>();
        try
        {
            await app.StartAsync().ConfigureAwait(false);
            return app;
        }
        catch (Exception e) when (e is IOException || e.InnerException is IOException || e is System.Net.Sockets.SocketException)
        {
            await app.DisposeAsync().ConfigureAwait(false);
            throw new SkiffException(ErrorKind.RpcBindFailed, $"cannot listen on {options.Bind}:{options.Port}: {e.Message}", e);
        }
    }

    /// <summary>Stops serving: calls in flight get up to two seconds to finish.</summary>
    public static async Task StopAsync(WebApplication app)
    {
        try
        {
            using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(2));
            await app.StopAsync(deadline.Token).ConfigureAwait(false);
        }
        catch (Exception) { } // stopping is best effort: the node is going away either way
        await app.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>Middleware: a client request larger than the client service's MaxReceiveMessageSize is refused by
    /// gRPC itself (ResourceExhausted) before any Skiff code runs, so it carries no <c>skiff-error</c> trailer;
    /// this adds <see cref="ErrorKind.ValueTooLarge"/> so that every client, not only the .NET library, sees the same
    /// typed error for every over-limit request. Errors are trailers-only responses (status in the headers).</summary>
    public static async Task TagOversizedRequests(HttpContext context, RequestDelegate next)
    {
        await next(context).ConfigureAwait(false);
        var response = context.Response;
        if (response.HasStarted) return;
        if (response.Headers.TryGetValue(GrpcStatus, out var status) && status == ResourceExhausted
            && !response.Headers.ContainsKey(ErrorMapping.KindTrailer))
            response.Headers[ErrorMapping.KindTrailer] = nameof(ErrorKind.ValueTooLarge);
    }
}
