using System.Diagnostics;
using System.Numerics.Tensors;
using Akka.Actor;
using FlashLm.Models;
using FlashLm.Runtime.Cache;
using FlashLm.Runtime.Session;

namespace FlashLm.Runtime.Predict;

/// <summary>
/// The predictor: given a layer's FFN input, names the neurons to read for that layer and (lookahead)
/// starts the reads for the next layer. Predictors are swappable behind <see cref="IActivePredictor"/>;
/// the messages stay the same.
/// </summary>
internal static class Predictor
{
    /// <summary>The forward path: name the active neurons of <paramref name="Layer"/> from the route's FFN input and ask the
    /// route's cache manager for their rows on the session's behalf (no answer to the sender).</summary>
    /// <param name="Sent">When compute handed the FFN input over (Stopwatch ticks): the prediction time starts there.</param>
    public sealed record PredictFor(LayerPath.Route Route, int Layer, LayerPath.Tally Tally, long Sent);

    /// <summary>How a prediction compares with the exact active set: false positives cost reads, false negatives cost quality.</summary>
    public sealed record PredictionQuality(int Predicted, int TrulyActive, int FalsePositive, int FalseNegative);

    /// <summary>A new generation starts: forget the previous sequence's sets.</summary>
    public sealed record Reset;

    /// <param name="current">Names the neurons compute uses for a layer, from that layer's FFN input.</param>
    /// <param name="lookahead">Whether to start reads for layer N+1 while layer N computes.</param>
    /// <param name="ahead">Names layer N+1's neurons from layer N's FFN input (a lookahead predictor); null: prefetch
    /// what layer N+1 used for the previous token (the window's own temporal locality).</param>
    /// <param name="reference">The exact active set (the oracle), consulted only to measure the predictor.</param>
    /// <param name="hook">Test hook called before each prediction with its layer (e.g. to throw).</param>
    public static Props Props(IActivePredictor current, IActorRef cacheManager, bool lookahead, IActivePredictor? ahead = null, IActivePredictor? reference = null,
        Action<int>? hook = null) => Props(current, cacheManager, lookahead, ahead, reference, hook, null);

    internal static Props Props(IActivePredictor current, IActorRef cacheManager, bool lookahead, IActivePredictor? ahead, IActivePredictor? reference,
        Action<int>? hook, MessageCount? messages) =>
        Akka.Actor.Props.Create(() => new Actor(current, cacheManager, lookahead, ahead, reference, hook, messages));

    private sealed class Actor : StageActor
    {
        // Per session: the previous token's set of each layer, for lookahead (sessions must not see each other's).
        private readonly Dictionary<IActorRef, int[][]> _last = new();
        // Per session: the lookahead guess made for each layer during the layer before, until that layer's own set is named.
        private readonly Dictionary<IActorRef, int[]?[]> _guess = new();

        public Actor(IActivePredictor current, IActorRef cache, bool lookahead, IActivePredictor? ahead, IActivePredictor? reference, Action<int>? hook,
            MessageCount? messages) : base("predictor", messages)
        {
            int[][] Last(IActorRef session)
            {
                if (!_last.TryGetValue(session, out var last))
                {
                    _last[session] = last = new int[current.Layers][];
                    Context.Watch(session);
                }
                return last;
            }
            int[]?[] Guesses(IActorRef session)
            {
                if (!_guess.TryGetValue(session, out var g)) _guess[session] = g = new int[current.Layers][];
                return g;
            }
            Receive<Reset>(_ =>
            {
                Array.Clear(Last(Sender));
                Array.Clear(Guesses(Sender));
            });
            Receive<Terminated>(t =>
            {
                _last.Remove(t.ActorRef);
                _guess.Remove(t.ActorRef);
            });
            // Names the layer's set for the session (lookahead first, so the next layer's reads start before this layer's compute),
            // and scores the guess made for this layer during the layer before against the set it turned out to be.
            (int[] Set, PredictionQuality? Quality, PredictionQuality? Guess) Name(IActorRef session, int layer, float[] ffnInput, long position)
            {
                hook?.Invoke(layer);
                var last = Last(session);
                var guesses = Guesses(session);
                int next = layer + 1;
                if (lookahead && next < last.Length)
                {
                    var prefetch = ahead is not null ? ahead.Active(next, ffnInput, position) : last[next];
                    guesses[next] = prefetch;
                    if (prefetch is { Length: > 0 }) cache.Tell(new CacheManager.Prefetch(next, prefetch, position, session));
                }
                var set = current.Active(layer, ffnInput, position);
                last[layer] = set;
                var guess = guesses[layer] is { } g ? Compare(g, set) : null;
                guesses[layer] = null;
                return (set, reference is null ? null : Compare(set, reference.Active(layer, ffnInput)), guess);
            }
            Receive<PredictFor>(p =>
            {
                var route = p.Route;
                var (set, quality, guess) = Name(route.Session, p.Layer, route.State.Xb, route.Position);
                long now = Stopwatch.GetTimestamp();
                var tally = p.Tally with { PredictTicks = p.Tally.PredictTicks + now - p.Sent, Quality = quality, Guess = guess };
                route.Cache.Tell(new CacheManager.AcquireFor(route, p.Layer, set, tally, now));
            });
        }

        protected override string Describe(object message) => message is PredictFor f ? $"predicting layer {f.Layer}" : message.GetType().Name;

        // A forward-path prediction fails the session it was for (the sender is compute).
        protected override IActorRef SessionOf(object message) => message is PredictFor forward ? forward.Route.Session : Sender;

        /// <summary>Both sets ascending.</summary>
        private static PredictionQuality Compare(int[] predicted, int[] truth)
        {
            int i = 0, j = 0, both = 0;
            while (i < predicted.Length && j < truth.Length)
            {
                if (predicted[i] == truth[j])
                {
                    both++;
                    i++;
                    j++;
                }
                else if (predicted[i] < truth[j]) i++;
                else j++;
            }
            return new PredictionQuality(predicted.Length, truth.Length, predicted.Length - both, truth.Length - both);
        }
    }
}

/// <summary>Names a layer's active neurons from its FFN input.</summary>
internal interface IActivePredictor
{
    int Layers { get; }

    /// <summary>Active neuron ids of <paramref name="layer"/>, ascending.</summary>
    int[] Active(int layer, float[] ffnInput);

    /// <summary>As above, for the token at <paramref name="position"/> (what the predictor actor calls; only replayed
    /// traces need the position).</summary>
    int[] Active(int layer, float[] ffnInput, long position) => Active(layer, ffnInput);
}

/// <summary>Every neuron is active: the dense FFN streamed from flash (the paper's baseline rungs).</summary>
internal sealed class AllNeurons(int layers, int neurons) : IActivePredictor
{
    private readonly int[] _all = Enumerable.Range(0, neurons).ToArray();

    public int Layers => layers;

    public int[] Active(int layer, float[] ffnInput) => _all;
}

/// <summary>
/// The oracle: the exact active set from its own copy of the gate (SwiGLU: |silu(gate . x)| &gt;= threshold; ReLU / FATReLU
/// Llama: gate . x &gt; threshold, by <see cref="Kernels.Norms.GateActive"/>) or up projection (OPT's ReLU: up . x + b &gt; 0). Its weights are held outside the DRAM budget and it saves
/// nothing in a real deployment: it exists to test the pipeline and to measure trained predictors.
/// </summary>
internal sealed class OraclePredictor : IActivePredictor
{
    private readonly Matrix[] _weights;      // (layers) gate or up: (hidden, dim)
    private readonly float[][]? _biases;     // ReLU: up bias (hidden)
    private readonly float[]? _thresholds;   // gated (Llama): per layer
    private readonly FlashLm.Formats.FfnActivation _activation;
    private readonly float _defaultThreshold; // gated, when no per-layer thresholds are given
    private readonly float[] _scores;        // (hidden) scratch
    private readonly List<int> _set;

    public int Layers => _weights.Length;

    /// <summary>The selection's weights, per layer (gate rows, or up rows for OPT), in the layout's type.</summary>
    internal Matrix[] Weights => _weights;

    /// <summary>Bytes of the oracle's own weights (not counted in the DRAM budget).</summary>
    public long Bytes => _weights.Sum(w => w.Bytes) + (_biases?.Sum(b => b.Length * 4L) ?? 0);

    /// <param name="activation">The gated FFN's activation (Llama); <paramref name="defaultThreshold"/> applies when <paramref name="swigluThresholds"/> is null.</param>
    public OraclePredictor(Matrix[] weights, float[][]? reluBiases, float[]? swigluThresholds,
        FlashLm.Formats.FfnActivation activation = FlashLm.Formats.FfnActivation.Silu, float defaultThreshold = 0f)
    {
        _activation = activation;
        _defaultThreshold = defaultThreshold;
        _weights = weights;
        _biases = reluBiases;
        _thresholds = swigluThresholds;
        _scores = new float[weights[0].Rows];
        _set = new List<int>(weights[0].Rows);
    }

    public int[] Active(int layer, float[] x)
    {
        _weights[layer].Multiply(x, _scores);
        _set.Clear();
        if (_biases is not null)
        {
            TensorPrimitives.Add(_scores, _biases[layer], _scores);
            for (int i = 0; i < _scores.Length; i++) if (_scores[i] > 0) _set.Add(i);
        }
        else
        {
            float t = _thresholds?[layer] ?? _defaultThreshold;
            for (int i = 0; i < _scores.Length; i++)
                if (Kernels.Norms.GateActive(_activation, _scores[i], t)) _set.Add(i);
        }
        return _set.ToArray();
    }

    /// <summary>
    /// Right after <see cref="Active"/> for a layer: up to <paramref name="count"/> of that layer's inactive neurons, nearest the
    /// threshold first (the ones a predictor that approximates the score is likeliest to add by mistake).
    /// </summary>
    public int[] Near(int count)
    {
        var active = new bool[_scores.Length];
        foreach (var i in _set) active[i] = true;
        var ids = new int[_scores.Length - _set.Count];
        var keys = new float[ids.Length];
        int n = 0;
        for (int i = 0; i < _scores.Length; i++)
        {
            if (active[i]) continue;
            ids[n] = i;
            // The score the rule compares with the threshold: up . x + b (OPT), gate . x (ReLU / FATReLU), |silu(gate . x)| (SwiGLU).
            keys[n++] = -(_biases is not null || _activation != FlashLm.Formats.FfnActivation.Silu ? _scores[i] : MathF.Abs(Kernels.Norms.Silu(_scores[i])));
        }
        Array.Sort(keys, ids);
        return ids[..Math.Min(count, ids.Length)];
    }
}

/// <summary>
/// Mixture of experts: the router names the experts, exactly (it is the model's own top k, held in DRAM), and an expert is
/// a run of consecutive neurons in the flash layout (expert e's neuron i is neuron e x hidden + i), so the active set is
/// every neuron of the chosen experts. Applied to layer N's FFN input with layer N+1's router it is the pre-gated guess
/// of the experts layer N+1 will want (the residual stream changes little between layers), used as the lookahead.
/// </summary>
/// <param name="expertsNamed">How many of the router's best experts to name: the model's top k for the layer's own set; fewer
/// for a pre-gated guess that should be surer (flashlm.moe-prefetch-experts).</param>
internal sealed class RouterPredictor(Matrix[] routers, int expertNeurons, int expertsUsed, int expertsNamed = 0) : IActivePredictor
{
    private readonly int _named = expertsNamed is > 0 ? Math.Min(expertsNamed, expertsUsed) : expertsUsed;

    private readonly float[] _scores = new float[routers[0].Rows];
    private readonly int[] _chosen = new int[expertsUsed];
    private readonly float[] _weights = new float[expertsUsed];

    public int Layers => routers.Length;

    public int Experts => routers[0].Rows;

    public int ExpertsUsed => expertsUsed;

    /// <summary>How many experts this names per layer.</summary>
    public int ExpertsNamed => _named;

    public int[] Active(int layer, float[] ffnInput)
    {
        FlashLm.Models.Llama.DenseMoe.Route(routers[layer], ffnInput, _scores, _chosen, _weights);
        var experts = _chosen[.._named]; // best first: the surest of the top k
        Array.Sort(experts);
        var set = new int[experts.Length * expertNeurons];
        int k = 0;
        foreach (var e in experts)
            for (int i = 0; i < expertNeurons; i++) set[k++] = e * expertNeurons + i;
        return set;
    }
}
