using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using System.Threading.Channels;
using Akka.Actor;
using Akka.Cluster;
using FlashLm.Formats;
using FlashLm.Models.Sampling;
using FlashLm.Runtime;
using FlashLm.Runtime.Session;
using FlashLm.Server;

namespace FlashLm.Cluster;

/// <summary>
/// The OpenAI server's model on the node holding layer 0 of a pipeline across nodes: each position goes to this node's
/// <see cref="StageWorker"/> (the token), whose hidden state flows through the nodes holding the later layers; the node
/// holding the last layers samples and answers here. Prompt positions are sent ahead (up to <see cref="PrefillWindow"/> in
/// flight, so the stages work on consecutive positions at once); each generated token needs the one before. The output
/// equals one node's: the same layers in the same order on the same hidden state, the same sampler.
/// </summary>
internal sealed class PipelineModel(ClusterNode.Local node, ActorSystem system, IActorRef stage) : IServedModel
{
    /// <summary>Prompt positions in flight at once.</summary>
    public const int PrefillWindow = 8;

    private long _turns;
    // What the hops cost, over the generated tokens (for /metrics and the cluster command).
    private readonly object _gate = new();
    private long _tokens, _hops, _hopBytes;
    private double _tokenMs, _stageMs;

    public bool IsRunning => !system.WhenTerminated.IsCompleted && node.Runtime.StoppedBecause is null;
    public ITextTokenizer Tokenizer => node.Runtime.Tokenizer;
    public string? ChatTemplate => node.Runtime.ChatTemplate;
    public string Name => node.Runtime.Config.Name;
    public int Capacity => node.Runtime.Positions;
    public int MaxConcurrent => node.Runtime.Settings.MaxSessions;
    public RuntimeStats? Stats => node.Runtime.Stats;
    public int? ClusterMembers => Akka.Cluster.Cluster.Get(system).State.Members.Count(m => m.Status == MemberStatus.Up);

    public string ExtraMetrics()
    {
        lock (_gate)
        {
            var b = new StringBuilder();
            void Metric(string name, string type, string help, double value) =>
                b.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n')
                    .Append("# TYPE ").Append(name).Append(' ').Append(type).Append('\n')
                    .Append(name).Append(' ').Append(value.ToString("R", CultureInfo.InvariantCulture)).Append('\n');
            Metric("flashlm_pipeline_tokens_total", "counter", "Generated tokens through the pipeline across nodes.", _tokens);
            Metric("flashlm_pipeline_token_seconds_total", "counter", "From sending a position to the first stage to its token coming back.", _tokenMs / 1000);
            Metric("flashlm_pipeline_stage_seconds_total", "counter", "Of that, time the stages spent on their layers (and the head).", _stageMs / 1000);
            Metric("flashlm_pipeline_hops_total", "counter", "Messages between nodes for generated tokens (each stage to the next, the last back here).", _hops);
            Metric("flashlm_pipeline_hop_payload_bytes_total", "counter", "Serialized bytes of those messages (hidden states, tokens; without Akka.Remote's envelope).", _hopBytes);
            return b.ToString();
        }
    }

    public async IAsyncEnumerable<TokenEvent> GenerateAsync(string? conversation, int[] tokens, int maxPositions, SamplingOptions sampling,
        IReadOnlyList<int> stopTokens, Action<ServedBy>? served, [EnumeratorCancellation] CancellationToken cancellation)
    {
        // A pipeline conversation lives for one request (its KV cache is spread over the stages).
        string id = $"{node.Address}/{Interlocked.Increment(ref _turns)}-{Guid.NewGuid():N}"; // unique across restarts of this node
        long turn = 1;
        var channel = Channel.CreateUnbounded<StageResult>(new UnboundedChannelOptions { SingleReader = true });
        var failed = new TaskCompletionSource<Exception>(TaskCreationOptions.RunContinuationsAsynchronously);
        var receiver = system.ActorOf(Props.Create(() => new PipelineReceiver(channel.Writer, node.Runtime.ModelLayers)));
        served?.Invoke(new ServedBy(node.Address, 0));
        var serializer = system.Serialization.FindSerializerForType(typeof(StageStep));
        int stages = 0;
        long? hopBytes = null; // payload bytes of one generated token's hops
        try
        {
            StageStep Step(int position, int token, bool needToken) =>
                new(id, turn, position, token, null, position < tokens.Length - 1, needToken, sampling, receiver, [], 0, 0, 0);
            async Task<StageResult> Next(int position)
            {
                StageResult r;
                try
                {
                    r = await channel.Reader.ReadAsync(cancellation).AsTask().WaitAsync(node.Settings.StepTimeout, cancellation).ConfigureAwait(false);
                }
                catch (TimeoutException)
                {
                    throw new ClusterException($"position {position} got no answer from the pipeline's stages within {node.Settings.StepTimeout.TotalSeconds:0} s (flashlm.cluster.step-timeout)");
                }
                catch (ChannelClosedException e) when (e.InnerException is not null)
                {
                    throw e.InnerException;
                }
                if (r.Error is not null) throw new ClusterException(r.Error);
                if (r.Position != position) throw new ClusterException($"the pipeline answered position {r.Position} where {position} was due (a protocol error)");
                return r;
            }
            // The prompt: every position but the last is sent ahead, a window at a time.
            int sent = 0, answered = 0, last = tokens.Length - 1;
            while (answered < last)
            {
                while (sent < last && sent - answered < PrefillWindow)
                {
                    stage.Tell(Step(sent, tokens[sent], needToken: false), receiver);
                    sent++;
                }
                await Next(answered).ConfigureAwait(false);
                answered++;
            }
            int pos = last, token = tokens[last];
            var tokenizer = node.Runtime.Tokenizer;
            while (pos < maxPositions)
            {
                long start = Stopwatch.GetTimestamp();
                stage.Tell(Step(pos, token, needToken: true), receiver);
                var r = await Next(pos).ConfigureAwait(false);
                double ms = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
                stages = r.StageMs.Length;
                lock (_gate)
                {
                    _tokens++;
                    _tokenMs += ms;
                    _stageMs += r.StageMs.Sum();
                    // Each stage hands on to the next over the network and the last answers here (no hop when it is one node).
                    if (stages > 1)
                    {
                        // The messages' sizes do not change within a request: serialized once, at its first token.
                        hopBytes ??= (stages - 1) * serializer.ToBinary(new StageStep(id, turn, pos, -1, new float[node.Runtime.Config.Dim], false, true, sampling, receiver,
                            new double[stages / 2], 0, 0, 0)).Length + serializer.ToBinary(r).Length;
                        _hops += stages;
                        _hopBytes += hopBytes.Value;
                    }
                }
                int next = r.Token;
                if (next == tokenizer.BosId) yield break;
                var stats = new TokenStats
                {
                    TokenIndex = pos, BytesRead = r.BytesRead, NeuronsActive = r.Active, NeuronsWindowHit = r.Hits, TotalMs = ms, ComputeMs = r.StageMs.Sum(),
                };
                yield return new TokenEvent(pos, next, tokenizer.Piece(token, next), false, stats);
                token = next;
                pos++;
            }
        }
        finally
        {
            stage.Tell(new StageRelease(id), receiver);
            receiver.Tell(PoisonPill.Instance);
        }
    }
}

/// <summary>
/// Receives the pipeline's answers for one request; fails it when a node holding some of the layers becomes unreachable or
/// leaves (naming the node and its layers), instead of waiting for the step timeout.
/// </summary>
internal sealed class PipelineReceiver : ReceiveActor
{
    public PipelineReceiver(ChannelWriter<StageResult> output, int modelLayers)
    {
        Receive<StageResult>(r => output.TryWrite(r));
        void Lost(Member m, string how)
        {
            foreach (var role in m.Roles)
                if (ClusterNode.TryParseLayersRole(role, out var range))
                {
                    output.TryComplete(new ClusterException($"node {m.Address} holding layers {range} of {modelLayers} {how} during the generation; the request fails (no other node holds those layers)"));
                    Context.Stop(Self);
                }
        }
        Receive<ClusterEvent.UnreachableMember>(m => Lost(m.Member, "became unreachable"));
        Receive<ClusterEvent.MemberRemoved>(m => Lost(m.Member, "left the cluster"));
        Receive<ClusterEvent.MemberExited>(m => Lost(m.Member, "left the cluster"));
        ReceiveAny(_ => { });
    }

    protected override void PreStart() =>
        Akka.Cluster.Cluster.Get(Context.System).Subscribe(Self, ClusterEvent.SubscriptionInitialStateMode.InitialStateAsSnapshot,
            typeof(ClusterEvent.IMemberEvent), typeof(ClusterEvent.IReachabilityEvent));

    protected override void PostStop() => Akka.Cluster.Cluster.Get(Context.System).Unsubscribe(Self);
}
