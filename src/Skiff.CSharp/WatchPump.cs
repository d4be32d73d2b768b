using System.Threading.Channels;
using Skiff.Net.Runtime;

namespace Skiff;

/// <summary>Moves a runtime watch stream into a subscriber's channel, turning its end into a clear StreamClosed.</summary>
internal static class WatchPump
{
    /// <summary>A small bounded buffer: when the application stops reading, the pump stops too, the node's own
    /// bounded queue for this watcher fills, and the node drops the watcher with StreamClosed instead of buffering
    /// without limit.</summary>
    public static Channel<Change> CreateBuffer() =>
        Channel.CreateBounded<Change>(new BoundedChannelOptions(256)
        {
            SingleReader = true,
            SingleWriter = true,
            FullMode = BoundedChannelFullMode.Wait,
        });

    public static async Task Run(IAsyncEnumerable<Change> events, ChannelWriter<Change> changes, CancellationToken token)
    {
        try
        {
            await foreach (var e in events.WithCancellation(token).ConfigureAwait(false))
                await changes.WriteAsync(e, token).ConfigureAwait(false);
            changes.TryComplete(new SkiffException(ErrorKind.StreamClosed, "the watch ended"));
        }
        catch (OperationCanceledException)
        {
            changes.TryComplete(new SkiffException(ErrorKind.StreamClosed, "the watch was closed"));
        }
        catch (Exception e)
        {
            changes.TryComplete(e);
        }
    }
}
