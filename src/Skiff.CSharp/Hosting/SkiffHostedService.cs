using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Skiff.Hosting;

/// <summary>Runs a <see cref="SkiffNode"/> for the lifetime of a generic host: started with the host, shut down with it.</summary>
public sealed class SkiffHostedService : IHostedService
{
    private readonly SkiffNode _node;
    private readonly ILogger<SkiffHostedService> _logger;

    /// <summary>Wraps the node the container holds.</summary>
    public SkiffHostedService(SkiffNode node, ILogger<SkiffHostedService> logger)
    {
        _node = node ?? throw new ArgumentNullException(nameof(node));
        _logger = logger ?? throw new ArgumentNullException(nameof(logger));
    }

    /// <inheritdoc />
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        await _node.StartAsync(cancellationToken).ConfigureAwait(false);
        _logger.LogInformation("Skiff node {NodeId} serving on {Address}:{Port}, reached at {Advertised}", _node.Id, _node.Address, _node.Port,
            _node.AdvertisedAddress);
    }

    /// <inheritdoc />
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await _node.ShutdownAsync().WaitAsync(cancellationToken).ConfigureAwait(false);
        _logger.LogInformation("Skiff node {NodeId} stopped", _node.Id);
    }
}
