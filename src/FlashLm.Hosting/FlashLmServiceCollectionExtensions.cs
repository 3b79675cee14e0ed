using Akka.Hosting;
using FlashLm.Runtime.Config;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace FlashLm.Hosting;

/// <summary>Registration of FlashLm in a generic host.</summary>
public static class FlashLmServiceCollectionExtensions
{
    /// <summary>
    /// Registers <see cref="IFlashLm"/> (a singleton) and the hosted service that opens the runtime at start and
    /// disposes it at stop. Options come from the configuration section "FlashLm" (when an IConfiguration is
    /// registered), then <paramref name="configure"/>. An <c>Akka.Actor.ActorSystem</c> in DI is used when its
    /// configuration has flashlm.io-dispatcher (see <see cref="WithFlashLm"/>); otherwise FlashLm creates its own.
    /// </summary>
    public static IServiceCollection AddFlashLm(this IServiceCollection services, Action<FlashLmOptions>? configure = null)
    {
        services.AddOptions<FlashLmOptions>();
        services.AddSingleton<IConfigureOptions<FlashLmOptions>>(sp => new ConfigureOptions<FlashLmOptions>(o =>
        {
            var section = sp.GetService<IConfiguration>()?.GetSection(FlashLmOptions.Section);
            if (section is not null && section.Exists()) Bind(section, o);
        }));
        if (configure is not null) services.Configure(configure);
        services.AddLogging();
        services.TryAddSingleton<FlashLmService>();
        services.TryAddSingleton<IFlashLm>(sp => sp.GetRequiredService<FlashLmService>());
        services.AddSingleton<IHostedService>(sp => sp.GetRequiredService<FlashLmService>());
        return services;
    }

    /// <summary>Binds <paramref name="section"/> (ModelPath, LayoutCacheFolder, DramBudget, Positions, MaxSessions, ActorSystemName, ConfigFiles, Settings) onto <paramref name="options"/>.</summary>
    public static void Bind(IConfiguration section, FlashLmOptions options) => section.Bind(options);

    /// <summary>
    /// Adds FlashLm's reference configuration (including flashlm.io-dispatcher, the blocking flash-read dispatcher)
    /// beneath an Akka.Hosting actor system's configuration, so FlashLm can run its actors in the host's system.
    /// </summary>
    public static AkkaConfigurationBuilder WithFlashLm(this AkkaConfigurationBuilder builder) =>
        builder.AddHocon(RuntimeSettings.Reference, HoconAddMode.Append);
}
