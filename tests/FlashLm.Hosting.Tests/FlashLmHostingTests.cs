using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Formats.Synth;
using FlashLm.Hosting;
using FlashLm.Models.Sampling;
using FlashLm.Runtime;
using FlashLm.Runtime.Config;
using FlashLm.Runtime.Io;
using Akka.Actor;
using Akka.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Xunit;

namespace FlashLm.Tests.Hosting;

/// <summary>NativeAccounting is process-wide: the leak check must not overlap other tests' runtimes.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class NativeMemoryCollection
{
    public const string Name = "native memory (not parallel)";
}

/// <summary>FlashLm in a generic host: start, generate, stop, and options from configuration.</summary>
[Collection(NativeMemoryCollection.Name)]
public class FlashLmHostingTests
{
    private static readonly SamplingOptions Sampling = new(0.8f, 0.9f, 0, 1234);
    private const int Positions = 64;

    private static string WriteTiny(TempDir dir)
    {
        var path = dir.File("tiny.gguf");
        SyntheticModel.WriteGguf(path, SyntheticShapes.Get("tiny"), DType.F32, seed: 77);
        return path;
    }

    private static async Task<int[]> Tokens<T>(IAsyncEnumerable<T> events, Func<T, int> token)
    {
        var list = new List<int>();
        await foreach (var e in events) list.Add(token(e));
        return list.ToArray();
    }

    [Fact]
    public async Task Host_generates_what_the_runtime_alone_generates_and_stopping_frees_all_native_memory()
    {
        using var dir = new TempDir();
        var model = WriteTiny(dir);
        var cache = dir.Sub("layouts");
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Services.AddFlashLm(o =>
        {
            o.ModelPath = model;
            o.LayoutCacheFolder = cache;
            o.Positions = Positions;
        });
        long before = NativeAccounting.Bytes;
        string layout;
        int[] hosted;
        string text;
        IFlashLm lm;
        using (var host = builder.Build())
        {
            lm = host.Services.GetRequiredService<IFlashLm>();
            Assert.Throws<InvalidOperationException>(() => lm.Stats);
            await host.StartAsync();
            Assert.True(lm.IsRunning);
            layout = lm.LayoutFolder;
            Assert.StartsWith(cache, layout);
            Assert.True(FlashLayoutModel.IsLayoutFolder(layout));
            var events = new List<FlashLmToken>();
            await foreach (var t in lm.GenerateAsync("hello there", 16, Sampling)) events.Add(t);
            hosted = events.Select(e => e.Token).ToArray();
            text = string.Concat(events.Where(e => !e.FromPrompt).Select(e => e.Text));
            Assert.Equal(16, hosted.Length); // one event per position, prompt included
            Assert.Equal(Enumerable.Range(0, 16), events.Select(e => e.Position));
            Assert.Equal(16, lm.Stats.Positions);
            Assert.True(NativeAccounting.Bytes > before);
            await host.StopAsync();
        }
        Assert.Equal(before, NativeAccounting.Bytes);
        Assert.False(lm.IsRunning);
        Assert.Throws<ObjectDisposedException>(() => lm.GenerateAsync("hello", 8, Sampling));
        await Assert.ThrowsAsync<ObjectDisposedException>(() => lm.CreateSessionAsync());
        Assert.Throws<ObjectDisposedException>(() => lm.Stats);

        // The same layout, seed and prompt without the host.
        using var runtime = FlashRuntime.Open(layout, RuntimeSettings.Compose([], []), Positions);
        var alone = await Tokens(runtime.Generate("hello there", 16, Sampling), e => e.Token);
        Assert.Equal(alone, hosted);
        Assert.Contains(hosted, t => t != hosted[0]);
        // The text is the pieces joined (the tiny vocabulary's pieces are plain ASCII or single bytes).
        Assert.NotEmpty(text);
    }

    [Fact]
    public async Task A_chat_session_keeps_its_context_and_stop_cancels_it()
    {
        using var dir = new TempDir();
        var model = WriteTiny(dir);
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Services.AddFlashLm(o => { o.ModelPath = model; o.LayoutCacheFolder = dir.Sub("layouts"); o.Positions = Positions; });
        long before = NativeAccounting.Bytes;
        using (var host = builder.Build())
        {
            await host.StartAsync();
            var lm = host.Services.GetRequiredService<IFlashLm>();
            var session = await lm.CreateSessionAsync();
            await foreach (var _ in session.GenerateAsync("hello", 8, Sampling)) { }
            int afterFirst = session.Position;
            Assert.True(afterFirst > 0);
            await foreach (var _ in session.GenerateAsync(" again", 8, Sampling)) { }
            Assert.True(session.Position > afterFirst);
            Assert.Equal(1, lm.Stats.OpenSessions);
            await host.StopAsync(); // the session is still open: stopping must not wait for it nor leak
        }
        Assert.Equal(before, NativeAccounting.Bytes);
    }

    [Fact]
    public void Options_bind_from_the_FlashLm_configuration_section_and_code_wins()
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["FlashLm:ModelPath"] = "/models/m.gguf",
            ["FlashLm:DramBudget"] = "48MiB",
            ["FlashLm:Positions"] = "128",
            ["FlashLm:MaxSessions"] = "3",
            ["FlashLm:Settings:window"] = "2",
            ["FlashLm:Settings:flashlm.predictor"] = "all",
            ["FlashLm:ConfigFiles:0"] = "a.conf",
            ["Other:Positions"] = "9",
        }).Build();
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(config);
        services.AddFlashLm(o => o.Positions = 96);
        using var provider = services.BuildServiceProvider();
        var o = provider.GetRequiredService<IOptions<FlashLmOptions>>().Value;
        Assert.Equal("/models/m.gguf", o.ModelPath);
        Assert.Equal("48MiB", o.DramBudget);
        Assert.Equal(96, o.Positions);
        Assert.Equal(3, o.MaxSessions);
        Assert.Equal(["a.conf"], o.ConfigFiles);
        Assert.Equal("2", o.Settings["window"]);

        // The overrides compose into runtime settings (typed properties over the Settings dictionary).
        var settings = RuntimeSettings.From(RuntimeSettings.Compose([], o.Overrides()));
        Assert.Equal(48L << 20, settings.DramBudget);
        Assert.Equal(3, settings.MaxSessions);
        Assert.Equal(2, settings.Window);
        Assert.Equal(PredictorKind.All, settings.Predictor);
    }

    [Fact]
    public async Task Starting_without_a_model_says_what_is_missing()
    {
        var services = new ServiceCollection();
        services.AddFlashLm();
        using var provider = services.BuildServiceProvider();
        var hosted = provider.GetServices<IHostedService>().Single();
        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => hosted.StartAsync(CancellationToken.None));
        Assert.Contains("ModelPath", e.Message);
        Assert.Same(provider.GetRequiredService<IFlashLm>(), hosted);
    }

    [Fact]
    public async Task An_Akka_Hosting_actor_system_with_the_flashlm_dispatcher_runs_the_pipeline()
    {
        using var dir = new TempDir();
        var model = WriteTiny(dir);
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Services.AddAkka("host-system", b => b.WithFlashLm());
        builder.Services.AddFlashLm(o => { o.ModelPath = model; o.LayoutCacheFolder = dir.Sub("layouts"); o.Positions = Positions; });
        long before = NativeAccounting.Bytes;
        using (var host = builder.Build())
        {
            await host.StartAsync();
            var system = host.Services.GetRequiredService<ActorSystem>();
            var lm = host.Services.GetRequiredService<IFlashLm>();
            var identity = await system.ActorSelection("/user/flashlm-*/compute").Ask<ActorIdentity>(new Identify(1), TimeSpan.FromSeconds(10));
            Assert.NotNull(identity.Subject);
            Assert.Equal(16, (await Tokens(lm.GenerateAsync("hello there", 16, Sampling), t => t.Token)).Length);
            await host.StopAsync();
        }
        Assert.Equal(before, NativeAccounting.Bytes);
    }
}
