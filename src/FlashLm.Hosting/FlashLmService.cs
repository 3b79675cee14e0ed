using System.Runtime.CompilerServices;
using Akka.Actor;
using Akka.Configuration;
using FlashLm.Formats;
using FlashLm.Models.Sampling;
using FlashLm.Runtime;
using FlashLm.Runtime.Config;
using FlashLm.Runtime.Session;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace FlashLm.Hosting;

/// <summary>
/// Owns the <see cref="FlashRuntime"/>: opens it when the host starts, disposes it (cancelling every session and
/// freeing its native memory) when the host stops. Registered as both <see cref="IFlashLm"/> and <see cref="IHostedService"/>.
/// </summary>
public sealed class FlashLmService : IFlashLm, IHostedService, IDisposable
{
    private readonly IOptions<FlashLmOptions> _options;
    private readonly IServiceProvider _services;
    private readonly ILogger<FlashLmService> _log;
    private FlashRuntime? _runtime;
    private ActorSystem? _ownSystem;
    private string? _layout;
    private volatile int _state; // 0 not started, 1 running, 2 stopped

    /// <summary>Created by DI.</summary>
    public FlashLmService(IOptions<FlashLmOptions> options, IServiceProvider services, ILogger<FlashLmService> log)
    {
        _options = options;
        _services = services;
        _log = log;
    }

    /// <inheritdoc />
    public bool IsRunning => _state == 1;

    /// <inheritdoc />
    public string LayoutFolder => Check()._layout!;

    /// <inheritdoc />
    public ITextTokenizer Tokenizer => Runtime.Tokenizer;

    /// <inheritdoc />
    public FlashRuntime Runtime => Check()._runtime!;

    /// <inheritdoc />
    public RuntimeStats Stats => Runtime.Stats;

    private FlashLmService Check()
    {
        ObjectDisposedException.ThrowIf(_state == 2, this);
        if (_state == 0) throw new InvalidOperationException("FlashLm is not started yet (the host starts it: IHost.StartAsync)");
        return this;
    }

    /// <inheritdoc />
    public async Task<IFlashLmSession> CreateSessionAsync(CancellationToken cancellation = default) =>
        new Session(await Runtime.CreateSessionAsync(cancellation).ConfigureAwait(false));

    /// <inheritdoc />
    public IAsyncEnumerable<FlashLmToken> GenerateAsync(string prompt, int maxPositions, SamplingOptions sampling, CancellationToken cancellation = default) =>
        Decode(Runtime.Generate(prompt, maxPositions, sampling, cancellation), cancellation);

    /// <summary>Resolves the model (converting it if needed), composes the configuration and opens the runtime.</summary>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_state == 2, this);
        if (_state == 1) return;
        var o = _options.Value;
        if (string.IsNullOrWhiteSpace(o.ModelPath))
            throw new InvalidOperationException("FlashLm: no model (set FlashLmOptions.ModelPath or the configuration key FlashLm:ModelPath)");
        // Conversion and loading are long and blocking: keep them off the caller's thread.
        await Task.Run(() => Open(o), cancellationToken).ConfigureAwait(false);
        _state = 1;
    }

    private void Open(FlashLmOptions o)
    {
        var layout = LayoutCache.Resolve(o.ModelPath!, o.LayoutCacheFolder);
        var config = RuntimeSettings.Compose(o.ConfigFiles, o.Overrides());
        var settings = RuntimeSettings.From(config);
        ActorSystem? system = o.UseHostActorSystem ? _services.GetService<ActorSystem>() : null;
        if (system is not null && !system.Settings.Config.HasPath("flashlm.io-dispatcher"))
        {
            // A running system's dispatchers come from the configuration it was built with; nothing can be added later.
            _log.LogWarning("FlashLm: the host's actor system '{Name}' has no flashlm.io-dispatcher (add it with AkkaConfigurationBuilder.WithFlashLm()); using an own actor system", system.Name);
            system = null;
        }
        if (system is null)
        {
            system = _ownSystem = ActorSystem.Create(o.ActorSystemName, ConfigurationFactory
                .ParseString($"flashlm.io-dispatcher.dedicated-thread-pool.thread-count = {settings.Loader.Threads}")
                .WithFallback(RuntimeSettings.WithReference(config)));
        }
        try
        {
            _runtime = FlashRuntime.Open(layout, config, Math.Max(0, o.Positions), system); // 0: the model's context
            _layout = layout;
        }
        catch
        {
            TerminateOwnSystem();
            throw;
        }
        _log.LogInformation("FlashLm: {Layout} open, {Positions} positions, DRAM plan {Planned} of {Budget}",
            layout, _runtime.Positions, FlashRuntime.Bytes(_runtime.Plan.Total), FlashRuntime.Bytes(_runtime.Plan.Budget));
    }

    /// <summary>Cancels every session and frees the runtime; the service cannot be started again.</summary>
    public Task StopAsync(CancellationToken cancellationToken)
    {
        Dispose();
        return Task.CompletedTask;
    }

    /// <summary>As <see cref="StopAsync"/>.</summary>
    public void Dispose()
    {
        if (_state == 2) return;
        _state = 2;
        _runtime?.Dispose();
        _runtime = null;
        TerminateOwnSystem();
    }

    private void TerminateOwnSystem()
    {
        _ownSystem?.Terminate().Wait(TimeSpan.FromSeconds(30));
        _ownSystem = null;
    }

    /// <summary>
    /// Joins UTF-8 pieces across tokens (a character may span several byte tokens): a token's Text holds only whole
    /// characters, the start of a split one waits for its remaining bytes (<see cref="Utf8Joiner"/>). A character cut
    /// off by the end of the turn is dropped, never printed half.
    /// </summary>
    internal static async IAsyncEnumerable<FlashLmToken> Decode(IAsyncEnumerable<TokenEvent> events, [EnumeratorCancellation] CancellationToken cancellation)
    {
        var text = new Utf8Joiner();
        await foreach (var e in events.WithCancellation(cancellation).ConfigureAwait(false))
            yield return new FlashLmToken(e.Position, e.Token, text.Push(e.Piece), e.FromPrompt, e.Stats);
    }

    private sealed class Session(FlashSession inner) : IFlashLmSession
    {
        public int Position => inner.Position;
        public int Capacity => inner.Capacity;

        public IAsyncEnumerable<FlashLmToken> GenerateAsync(string prompt, int maxPositions, SamplingOptions sampling, CancellationToken cancellation = default) =>
            Decode(inner.GenerateAsync(prompt, maxPositions, sampling, cancellation), cancellation);

        public void Dispose() => inner.Dispose();

        public ValueTask DisposeAsync() => inner.DisposeAsync();
    }
}
