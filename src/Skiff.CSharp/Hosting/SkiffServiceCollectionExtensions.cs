using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Skiff.Hosting;

/// <summary>Registers a Skiff node with Microsoft.Extensions.DependencyInjection.</summary>
public static class SkiffServiceCollectionExtensions
{
    /// <summary>Adds a <see cref="SkiffNode"/> (also as <see cref="IKeyValueStore"/>) that starts and stops with the
    /// host, logging through the container's <see cref="ILoggerFactory"/>.</summary>
    /// <example><code>builder.Services.AddSkiff(o => { o.DataDirectory = "/var/lib/app/skiff"; o.Port = 9400; });</code></example>
    public static IServiceCollection AddSkiff(this IServiceCollection services, Action<SkiffOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configure);
        services.TryAddSingleton(provider =>
        {
            var options = new SkiffOptions
            {
                LoggerFactory = provider.GetService<ILoggerFactory>() ?? NullLoggerFactory.Instance,
            };
            configure(options);
            return SkiffNode.Create(options);
        });
        services.TryAddSingleton<IKeyValueStore>(provider => provider.GetRequiredService<SkiffNode>());
        services.AddSingleton<IHostedService, SkiffHostedService>();
        return services;
    }
}
