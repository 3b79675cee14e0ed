using System.Diagnostics;
using Akka.Actor;
using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Kernels;
using FlashLm.Models;
using FlashLm.Runtime.Cache;
using FlashLm.Runtime.Predict;
using FlashLm.Runtime.Session;

namespace FlashLm.Runtime.Compute;

/// <summary>
/// Layer compute: attention from the DRAM-resident weights, and the FFN over exactly the cached rows of
/// the active set (any row order: the FFN output is a sum over neurons). The hidden state is the
/// session's <see cref="InferenceState"/>, passed by reference; this actor is its only writer while a
/// step runs.
/// </summary>
internal static class LayerCompute
{
    /// <summary>The forward path: embed (at layer 0) and run attention for <paramref name="Layer"/>, then hand the FFN input to
    /// the route's predictor; the layer ends with <see cref="LayerDone"/> to the session.</summary>
    public sealed record RunLayer(LayerPath.Route Route, int Layer, int TokenId);

    /// <summary>The forward path: the cache manager hands compute a ready lease for the route's session.</summary>
    /// <param name="AcquireSent">When the rows were asked for (Stopwatch ticks): the wait ends when compute has them.</param>
    public sealed record RunLeasedFfn(LayerPath.Route Route, CacheManager.Lease Lease, LayerPath.Tally Tally, long AcquireSent);

    /// <summary>The forward path: the layer's FFN is in the residual; what its steps measured, and when its FFN ended (Stopwatch ticks).</summary>
    public sealed record LayerDone(int Layer, LayerPath.Tally Tally, long FfnEnd);

    /// <summary>Final norm and LM head; answers <see cref="HeadDone"/>.</summary>
    public sealed record RunHead(InferenceState State);

    public sealed record HeadDone(float[] Logits, long Ticks);

    /// <param name="hook">Test hook called before each step ("attend", "ffn", "head"), e.g. to slow compute down.</param>
    /// <param name="streamed">When set, each layer's attention weights are read from flash before its attention runs.</param>
    internal static Props Props(ITransformer model, SparseFfnSpec ffn, Action<string>? hook = null, StreamedAttention? streamed = null,
        MessageCount? messages = null) =>
        Akka.Actor.Props.Create(() => new Actor(model, ffn, hook, streamed, messages));

    private sealed class Actor : StageActor
    {
        // Sessions whose layers run on the forward path, watched: a lease handed over for a session that stopped is only
        // released (its hidden state may already belong to the next turn).
        private readonly HashSet<IActorRef> _live = new();

        public Actor(ITransformer model, SparseFfnSpec ffn, Action<string>? hook, StreamedAttention? streamed, MessageCount? messages)
            : base("compute", messages)
        {
            Receive<RunLayer>(r =>
            {
                var route = r.Route;
                if (_live.Add(route.Session)) Context.Watch(route.Session);
                long io = 0, bytes = 0;
                int reads = 0;
                if (streamed is not null)
                {
                    long t0 = Stopwatch.GetTimestamp();
                    try
                    {
                        (bytes, reads) = streamed.Load(r.Layer);
                    }
                    catch (Exception e)
                    {
                        var cause = e is AggregateException { InnerExceptions.Count: 1 } agg ? agg.InnerException! : e;
                        route.Session.Tell(new Status.Failure(new IOException($"layer {r.Layer}: reading its attention weights failed: {cause.Message}", cause)));
                        return;
                    }
                    io = Stopwatch.GetTimestamp() - t0;
                }
                long t = Stopwatch.GetTimestamp();
                hook?.Invoke("attend");
                int pos = (int)route.Position;
                if (r.Layer == 0 && r.TokenId >= 0) model.Embed(route.State, r.TokenId, pos); // -1: a later stage's input, already in X
                model.Attend(route.State, r.Layer, pos);
                long end = Stopwatch.GetTimestamp();
                var tally = new LayerPath.Tally(ComputeTicks: end - t, AttnIoTicks: io, AttnBytes: bytes, AttnReads: reads);
                route.Predictor.Tell(new Predictor.PredictFor(route, r.Layer, tally, end));
            });
            Receive<RunLeasedFfn>(f =>
            {
                long t = Stopwatch.GetTimestamp();
                var route = f.Route;
                var lease = f.Lease;
                if (!_live.Contains(route.Session))
                {
                    route.Cache.Tell(new CacheManager.Release(lease, route.Session));
                    return;
                }
                hook?.Invoke("ffn");
                ffn.Accumulate(route.State, lease);
                if (lease.Last) model.AddFfnOutput(route.State);
                long end = Stopwatch.GetTimestamp();
                var tally = f.Tally with { ComputeTicks = f.Tally.ComputeTicks + end - t, WaitTicks = f.Tally.WaitTicks + t - f.AcquireSent };
                route.Cache.Tell(new CacheManager.Release(lease, route.Session));
                if (!lease.Last)
                    route.Cache.Tell(new CacheManager.AcquireFor(route, lease.Layer, lease.Remaining, tally, Stopwatch.GetTimestamp(), First: false));
                else route.Session.Tell(new LayerDone(lease.Layer, tally, end));
            });
            Receive<Terminated>(t => _live.Remove(t.ActorRef));
            Receive<RunHead>(h =>
            {
                long t = Stopwatch.GetTimestamp();
                hook?.Invoke("head");
                var logits = model.Head(h.State);
                Sender.Tell(new HeadDone(logits, Stopwatch.GetTimestamp() - t));
            });
        }

        // A step that throws fails the session that asked for it (its hidden state is its own) and nothing else: compute
        // holds no state between steps, so the next step of any session runs as if nothing happened (StageActor).
        protected override string Describe(object message) => message switch
        {
            RunLayer r => $"attention of layer {r.Layer} at position {r.Route.Position}",
            RunLeasedFfn f => $"the FFN of layer {f.Lease.Layer}",
            RunHead => "the LM head",
            _ => message.GetType().Name,
        };

        // Forward-path steps fail the session they ran for (the sender is another stage).
        protected override IActorRef SessionOf(object message) => message switch
        {
            RunLayer r => r.Route.Session,
            RunLeasedFfn f => f.Route.Session,
            _ => Sender,
        };
    }
}

/// <summary>
/// How to run the FFN over bundle rows: the bundle geometry, the gated FFN's activation and thresholds (Llama: SwiGLU, or
/// ReLU / FATReLU) or biases (OPT's ReLU). F32/F16 bundles run
/// <see cref="SparseFfn"/> on floats; quantized bundles quantize the FFN input once per call (per gate/up activation type)
/// and run the dots and the down accumulation on the blocks.
/// </summary>
internal sealed class SparseFfnSpec
{
    private readonly bool _f16, _swiglu;
    private readonly long _gate, _up, _down;
    private readonly float[]? _thresholds;      // (layers) gated FFN (Llama); null: SwiGLU dense / the model's own ReLU threshold
    private readonly FfnActivation _activation;
    private readonly float _defaultThreshold;  // a layer's threshold when none is given (ModelConfig.DefaultThreshold)
    private readonly float[][]? _upBias, _downBias; // (layers, hidden), (layers, dim) ReLU

    private readonly long _bundleBytes;
    private readonly float[][] _partials; // per core but the first: its share of the output (dim), summed at the end

    // Mixture of experts: each layer's router (in DRAM), the neurons per expert (neuron n is expert n / _expertNeurons's), and
    // the experts used per token. Null for a dense FFN.
    private readonly Matrix[]? _routers;
    private readonly int _expertNeurons, _expertsUsed;

    // Quantized bundles: the geometry, and the FFN input quantized for the gate and up types. Filled at the start of each
    // Accumulate and only read during it (compute runs one step at a time), so interleaved sessions never see each other's.
    private readonly QuantBundle? _quant;
    private readonly byte[] _xqGate = [], _xqUp = [];
    private readonly bool _sameActivation;

    /// <summary>Below this many bundle bytes in a batch the FFN runs on one thread (fork/join costs more).</summary>
    public const long ParallelBytes = 1L << 20;

    /// <param name="routers">Mixture of experts: each layer's router ((experts, dim), in DRAM); the layout's neuron n belongs to expert
    /// n / hidden_dim, and each neuron's output is weighted by its expert's routing weight (0: not chosen, not computed).</param>
    public SparseFfnSpec(FfnLayout layout, ModelConfig config, float[]? thresholds, float[][]? upBias, float[][]? downBias, Matrix[]? routers = null)
    {
        if (config.MoE != routers is not null || (routers is not null && routers.Length != config.Layers))
            throw new ArgumentException(config.MoE ? $"a mixture-of-experts FFN needs a router per layer ({config.Layers})" : "routers given for a dense FFN");
        _routers = routers;
        _expertNeurons = config.HiddenDim;
        _expertsUsed = config.ExpertsUsed;
        var arch = config.Architecture;
        _activation = config.Activation;
        _defaultThreshold = config.DefaultThreshold;
        _bundleBytes = layout.BundleBytes;
        _partials = Enumerable.Range(0, Partials).Select(_ => new float[layout.Dim]).ToArray();
        _swiglu = arch == Architecture.Llama;
        var gate = layout.Part(FlashLayoutRules.Gate);
        var up = layout.Part(FlashLayoutRules.Up)!;
        var down = layout.Part(FlashLayoutRules.Down)!;
        _gate = gate?.Offset ?? -1;
        _up = up.Offset;
        _down = down.Offset;
        if (layout.Quantized)
        {
            _quant = new QuantBundle(layout.Dim, gate?.DType ?? up.DType, _gate, (int)(gate?.Bytes ?? 0), up.DType, _up, (int)up.Bytes,
                down.DType, _down, (int)down.Bytes);
            var q = _quant.Value;
            _sameActivation = DTypeInfo.ActivationType(q.GateType) == DTypeInfo.ActivationType(q.UpType);
            _xqUp = new byte[QuantKernels.ActivationBytes(q.UpType, layout.Dim)];
            _xqGate = _swiglu && !_sameActivation ? new byte[QuantKernels.ActivationBytes(q.GateType, layout.Dim)] : _xqUp;
        }
        else _f16 = layout.DType == DType.F16;
        _thresholds = thresholds;
        _upBias = upBias;
        _downBias = downBias;
    }

    /// <summary>Bytes of DRAM this holds (OPT biases, MoE routers); its scratch is <see cref="ScratchBytes"/>.</summary>
    public long Bytes => (_upBias?.Sum(b => b.Length * 4L) ?? 0) + (_downBias?.Sum(b => b.Length * 4L) ?? 0) + (_routers?.Sum(r => r.Bytes) ?? 0);

    /// <summary>
    /// Mixture of experts: the routing of <paramref name="layer"/> for FFN input <paramref name="x"/> into <paramref name="weights"/>
    /// (experts): each chosen expert's renormalised weight, 0 for the others (<see cref="FlashLm.Models.Llama.DenseMoe.Route"/>).
    /// </summary>
    public void Route(int layer, float[] x, float[] weights)
    {
        Span<int> chosen = stackalloc int[_expertsUsed];
        Span<float> w = stackalloc float[_expertsUsed];
        FlashLm.Models.Llama.DenseMoe.Route(_routers![layer], x, weights, chosen, w);
        Array.Clear(weights);
        for (int i = 0; i < chosen.Length; i++) weights[chosen[i]] = w[i];
    }

    /// <summary>Scratch the FFN holds: one partial output (dim floats) per core but the first, and the quantized input.</summary>
    public static long ScratchBytes(FfnLayout layout)
    {
        long xq = 0;
        if (layout.Quantized)
        {
            var up = layout.Part(FlashLayoutRules.Up)!.DType;
            xq = QuantKernels.ActivationBytes(up, layout.Dim);
            if (layout.Part(FlashLayoutRules.Gate) is { } gate && DTypeInfo.ActivationType(gate.DType) != DTypeInfo.ActivationType(up))
                xq += QuantKernels.ActivationBytes(gate.DType, layout.Dim);
        }
        return Partials * 4L * layout.Dim + xq;
    }

    private static int Partials => Math.Max(0, Environment.ProcessorCount - 1);

    public void Accumulate(InferenceState s, CacheManager.Lease lease)
    {
        // A layer's first lease routes (its FFN input is final by then); the weights stay in the session's state for its other leases.
        if (_routers is not null && lease.First) Route(lease.Layer, s.Xb, s.Router);
        Accumulate(s.Xb, s.Xb2, lease.Layer, lease.First, lease.Addresses, lease.Neurons, _routers is null ? null : s.Router);
    }

    /// <summary>
    /// Adds the FFN of the bundles at <paramref name="addresses"/> (neuron ids <paramref name="neurons"/>) of layer
    /// <paramref name="layer"/> for input <paramref name="x"/> (dim) into <paramref name="y"/> (dim), which is reset first
    /// (zero, or OPT's down bias) when <paramref name="first"/>.
    /// </summary>
    /// <param name="expertWeights">Mixture of experts: each expert's routing weight (<see cref="Route"/>); null for a dense FFN.</param>
    internal void Accumulate(float[] x, float[] y, int layer, bool first, nint[] addresses, int[] neurons, float[]? expertWeights = null)
    {
        if ((_routers is not null) != (expertWeights is not null))
            throw new ArgumentException(_routers is not null ? "a mixture-of-experts FFN needs its routing weights" : "routing weights for a dense FFN");
        if (expertWeights is not null)
        {
            // Only the chosen experts' neurons, in the order given: the work is split over cores by what is computed, so a lease of
            // every expert (predictor = all) sums exactly as one of the chosen ones alone.
            int kept = 0;
            for (int i = 0; i < neurons.Length; i++) if (expertWeights[neurons[i] / _expertNeurons] != 0) kept++;
            if (kept < neurons.Length)
            {
                var a = new nint[kept];
                var n = new int[kept];
                for (int i = 0, k = 0; i < neurons.Length; i++)
                    if (expertWeights[neurons[i] / _expertNeurons] != 0)
                        (a[k], n[k++]) = (addresses[i], neurons[i]);
                (addresses, neurons) = (a, n);
            }
        }
        if (first)
        {
            if (_downBias is not null) _downBias[layer].CopyTo(y, 0);
            else Array.Clear(y);
        }
        if (_quant is { } q)
        {
            QuantKernels.QuantizeActivation(q.UpType, x, _xqUp);
            if (!ReferenceEquals(_xqGate, _xqUp)) QuantKernels.QuantizeActivation(q.GateType, x, _xqGate);
        }
        int parts = (long)addresses.Length * _bundleBytes >= ParallelBytes ? _partials.Length + 1 : 1;
        if (parts == 1)
        {
            Run(layer, addresses, neurons, x, y, 0, addresses.Length, expertWeights);
            return;
        }
        // Split the neurons over cores: the first part adds into y, the others into their own buffers, summed after.
        Parallel.For(0, parts, p =>
        {
            int start = (int)((long)addresses.Length * p / parts), end = (int)((long)addresses.Length * (p + 1) / parts);
            if (p == 0) Run(layer, addresses, neurons, x, y, start, end, expertWeights);
            else
            {
                Array.Clear(_partials[p - 1]);
                Run(layer, addresses, neurons, x, _partials[p - 1], start, end, expertWeights);
            }
        });
        foreach (var partial in _partials) System.Numerics.Tensors.TensorPrimitives.Add(y, partial, y);
    }

    private unsafe void Run(int layer, nint[] addresses, int[] neurons, float[] x, float[] y, int start, int end, float[]? expertWeights)
    {
        if (expertWeights is not null)
        {
            // Mixture of experts: each neuron weighted by its expert's routing weight (Accumulate kept only the chosen experts' neurons).
            float t = _thresholds?[layer] ?? _defaultThreshold;
            for (int i = start; i < end; i++)
            {
                float w = expertWeights[neurons[i] / _expertNeurons];
                if (_quant is { } qm) SparseFfn.Gated((byte*)addresses[i], qm, _xqGate, _xqUp, _activation, t, y, w);
                else SparseFfn.Gated((byte*)addresses[i], _gate, _up, _down, _f16, x, _activation, t, y, w);
            }
            return;
        }
        if (_quant is { } q)
        {
            if (_swiglu)
            {
                float t = _thresholds?[layer] ?? _defaultThreshold;
                for (int i = start; i < end; i++)
                    SparseFfn.Gated((byte*)addresses[i], q, _xqGate, _xqUp, _activation, t, y);
            }
            else
            {
                var bias = _upBias![layer];
                for (int i = start; i < end; i++)
                    SparseFfn.Relu((byte*)addresses[i], q, _xqUp, bias[neurons[i]], y);
            }
            return;
        }
        if (_swiglu)
        {
            float t = _thresholds?[layer] ?? _defaultThreshold;
            for (int i = start; i < end; i++)
                SparseFfn.Gated((byte*)addresses[i], _gate, _up, _down, _f16, x, _activation, t, y);
        }
        else
        {
            var bias = _upBias![layer];
            for (int i = start; i < end; i++)
                SparseFfn.Relu((byte*)addresses[i], _up, _down, _f16, x, bias[neurons[i]], y);
        }
    }
}
