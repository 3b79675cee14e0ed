using System.Globalization;
using Akka.Actor;
using Akka.Cluster.Hosting;
using Akka.Cluster.Hosting.SBR;
using Akka.Cluster.Sharding;
using Akka.Configuration;
using Akka.Hosting;
using Akka.Remote.Hosting;
using FlashLm.Formats;
using FlashLm.Runtime;
using FlashLm.Runtime.Config;
using FlashLm.Server;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace FlashLm.Cluster;

/// <summary>What `flashlm node` opens: a flash layout, the HOCON profiles and key=value overrides (flashlm.layers,
/// flashlm.cluster.*), the positions per conversation (0: the model's context) and whether to serve HTTP (flashlm.server.listen).</summary>
public sealed record NodeOptions(string LayoutFolder, IReadOnlyList<string> ConfigFiles, IReadOnlyList<string> Overrides, int Positions = 0, bool Http = false);

/// <summary>
/// One node of a FlashLm cluster (Akka.Cluster over Akka.Remote, configured with Akka.Hosting): its own runtime over its own
/// copy of the layout, and
/// <list type="bullet">
/// <item>holding all layers (role "sessions"): a share of the conversations, sharded across such nodes (Cluster.Sharding;
/// <see cref="ConversationEntity"/>); its HTTP endpoint serves any conversation, wherever it is held;</item>
/// <item>holding a range (flashlm.layers = FROM-TO, role "layers-FROM-TO"): a stage of a pipeline across nodes
/// (<see cref="StageWorker"/>); the node holding layer 0 drives generation and serves HTTP.</item>
/// </list>
/// </summary>
public sealed class ClusterNode : IAsyncDisposable
{
    /// <summary>The sessions role: nodes holding every layer, among which conversations are sharded.</summary>
    public const string SessionsRole = "sessions";

    /// <summary>This node's parts, shared by its actors.</summary>
    internal sealed class Local(FlashRuntime runtime, ClusterSettings settings, string address)
    {
        public FlashRuntime Runtime { get; } = runtime;
        public ClusterSettings Settings { get; } = settings;
        public string Address { get; } = address;
        public SessionPool Pool { get; } = new(runtime);
    }

    /// <summary>The shard region's key in the actor registry.</summary>
    internal sealed class ConversationRegion;

    /// <summary>Conversations to shards: a conversation id's hash, over a fixed number of shards.</summary>
    internal sealed class Extractor(int shards) : HashCodeMessageExtractor(shards)
    {
        public override string? EntityId(object message) => message switch
        {
            Turn t => t.Conversation,
            TurnCancel c => c.Conversation,
            _ => null,
        };
    }

    private readonly IHost _host;
    private readonly FlashRuntime _runtime;
    private readonly OpenAiServer? _server;

    private ClusterNode(IHost host, FlashRuntime runtime, ActorSystem system, string address, OpenAiServer? server)
    {
        _host = host;
        _runtime = runtime;
        System = system;
        Address = address;
        _server = server;
    }

    /// <summary>This node's cluster address (akka.tcp://flashlm@HOST:PORT).</summary>
    public string Address { get; }

    /// <summary>The cluster's actor system.</summary>
    public ActorSystem System { get; }

    /// <summary>The HTTP address, when this node serves HTTP.</summary>
    public Uri? HttpAddress => _server?.Address;

    /// <summary>The layers this node holds.</summary>
    public LayerRange Layers => _runtime.Layers;

    /// <summary>The model's layer count.</summary>
    public int ModelLayers => _runtime.ModelLayers;

    /// <summary>This node's cluster role ("sessions" or "layers-FROM-TO").</summary>
    public string Role => RoleFor(_runtime.Layers, _runtime.ModelLayers);

    /// <summary>The cluster role of a node holding <paramref name="layers"/> of a model of <paramref name="modelLayers"/>.</summary>
    public static string RoleFor(LayerRange layers, int modelLayers) => layers.Count == modelLayers ? SessionsRole : $"layers-{layers.From}-{layers.To}";

    internal static bool TryParseLayersRole(string role, out LayerRange range)
    {
        range = default;
        if (!role.StartsWith("layers-", StringComparison.Ordinal)) return false;
        try
        {
            range = LayerRange.Parse(role["layers-".Length..]);
            return true;
        }
        catch (FormatException)
        {
            return false;
        }
    }

    /// <summary>Opens the runtime, joins the cluster and (when asked) listens for HTTP.</summary>
    public static async Task<ClusterNode> StartAsync(NodeOptions options, CancellationToken cancellation = default)
    {
        var config = RuntimeSettings.Compose(options.ConfigFiles, options.Overrides);
        var settings = RuntimeSettings.Cluster(config);
        var server = options.Http ? RuntimeSettings.Server(config) : null;
        var runtimeSettings = RuntimeSettings.From(config);
        var runtime = FlashRuntime.Open(options.LayoutFolder, config, Math.Max(0, options.Positions)); // 0: the model's context
        IHost? host = null;
        try
        {
            if (server is not null && runtime.Layers.From != 0)
                throw new SettingsException("flashlm.server.listen", $"a node holding layers {runtime.Layers} is a middle stage; the node holding layer 0 serves HTTP");
            string role = RoleFor(runtime.Layers, runtime.ModelLayers);
            int port = settings.Port;
            if (port == 0)
            {
                // Akka.Remote needs the port before the system starts (its address is in the seeds of the others).
                using var probe = new global::System.Net.Sockets.TcpListener(global::System.Net.IPAddress.Parse(settings.Hostname == "localhost" ? "127.0.0.1" : settings.Hostname), 0);
                probe.Start();
                port = ((global::System.Net.IPEndPoint)probe.LocalEndpoint).Port;
                probe.Stop();
            }
            string address = $"akka.tcp://flashlm@{settings.Hostname}:{port}";
            Local? local = null;
            var builder = Host.CreateApplicationBuilder();
            builder.Logging.ClearProviders();
            builder.Services.AddAkka("flashlm", b =>
            {
                b.AddHocon(ConfigurationFactory.ParseString(AkkaHocon(settings)), HoconAddMode.Prepend);
                b.WithRemoting(settings.Hostname, port);
                b.WithClustering(new ClusterOptions
                {
                    Roles = [role],
                    SeedNodes = settings.Seeds.Length > 0 ? settings.Seeds : [address],
                    SplitBrainResolver = new KeepMajorityOption(),
                });
                if (role == SessionsRole)
                    b.WithShardRegion<ConversationRegion>("conversation", (_, _) => id => Props.Create(() => new ConversationEntity(local!, id)), new Extractor(settings.Shards),
                        new ShardOptions { Role = SessionsRole, ShouldPassivateIdleEntities = false }); // the entity passivates itself, never mid-turn
                else
                    b.WithActors((system, registry) => registry.Register<StageWorker>(system.ActorOf(Props.Create(() => new StageWorker(local!)), StageWorker.Name)));
            });
            local = new Local(runtime, settings, address);
            host = builder.Build();
            await host.StartAsync(cancellation).ConfigureAwait(false);
            var system = host.Services.GetRequiredService<ActorSystem>();
            var up = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            Akka.Cluster.Cluster.Get(system).RegisterOnMemberUp(() => up.TrySetResult());
            try
            {
                await up.Task.WaitAsync(settings.StartTimeout, cancellation).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                throw new InvalidOperationException($"{address} did not join the cluster (seeds {string.Join(", ", settings.Seeds)}) within {settings.StartTimeout.TotalSeconds:0} s (flashlm.cluster.start-timeout)");
            }
            OpenAiServer? http = null;
            if (server is not null)
            {
                var registry = host.Services.GetRequiredService<ActorRegistry>();
                IServedModel model = role == SessionsRole
                    ? new ShardedModel(local, system, await registry.GetAsync<ConversationRegion>(cancellation).ConfigureAwait(false))
                    : runtime.Layers.From == 0
                        ? new PipelineModel(local, system, await registry.GetAsync<StageWorker>(cancellation).ConfigureAwait(false))
                        : throw new SettingsException("flashlm.server.listen", $"a node holding layers {runtime.Layers} is a middle stage; the node holding layer 0 serves HTTP");
                http = await OpenAiServer.StartAsync(server, model, cancellation).ConfigureAwait(false);
            }
            return new ClusterNode(host, runtime, system, address, http);
        }
        catch
        {
            if (host is not null)
            {
                try
                {
                    await host.StopAsync(CancellationToken.None).ConfigureAwait(false);
                }
                catch (Exception)
                {
                    // already failing
                }
                host.Dispose();
            }
            await runtime.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Akka's part of the configuration: the binary serializer for cluster messages, failure detection and downing.</summary>
    private static string AkkaHocon(ClusterSettings s)
    {
        string Seconds(TimeSpan t) => t.TotalSeconds.ToString("0.###", CultureInfo.InvariantCulture) + "s";
        return $$"""
            akka {
              loglevel = WARNING
              stdout-loglevel = OFF
              loggers = ["FlashLm.Runtime.Config.StderrLogger, FlashLm.Runtime"]
              log-dead-letters = off
              log-dead-letters-during-shutdown = off
              actor {
                serializers.flashlm = "FlashLm.Cluster.ClusterSerializer, FlashLm.Cluster"
                serialization-bindings { "FlashLm.Cluster.IClusterMessage, FlashLm.Cluster" = flashlm }
              }
              remote.dot-netty.tcp {
                maximum-frame-size = 16MiB
                # One message per token per hop: batching writes only delays them (measured: docs/serving.md).
                batching.enabled = false
              }
              cluster {
                failure-detector.acceptable-heartbeat-pause = {{Seconds(s.FailureDetection)}}
                split-brain-resolver.stable-after = {{Seconds(s.DownAfter)}}
                down-removal-margin = {{Seconds(s.DownAfter)}}
                log-info = off
              }
            }
            """;
    }

    /// <summary>Leaves the cluster, stops listening and closes the runtime.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_server is not null) await _server.DisposeAsync().ConfigureAwait(false);
        try
        {
            var leave = Akka.Cluster.Cluster.Get(System).LeaveAsync();
            await leave.WaitAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        }
        catch (Exception)
        {
            // leaving is a courtesy: the others take an unreachable node out anyway
        }
        await _host.StopAsync(CancellationToken.None).ConfigureAwait(false);
        _host.Dispose();
        await _runtime.DisposeAsync().ConfigureAwait(false);
    }
}
