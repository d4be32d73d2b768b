using Microsoft.AspNetCore.Http;
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

/// <summary>Pieces of the node's internal web host.</summary>
internal static class EmbeddedHost
{
    private const string GrpcStatus = "grpc-status";
    private const string ResourceExhausted = "8";

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
