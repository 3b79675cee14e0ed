using System.Numerics.Tensors;
using FlashLm.Kernels;

namespace FlashLm.Models.Predictors;

/// <summary>Which FFN input a layer's predictor reads.</summary>
public enum PredictorKind
{
    /// <summary>Layer l's predictor reads layer l's FFN input (checks the set just before the FFN runs).</summary>
    SameLayer,

    /// <summary>
    /// Layer l's predictor reads layer l-1's FFN input, so layer l's reads can start while layer l-1 computes.
    /// Layer 0 has no earlier FFN input: its predictor reads layer 0's own input.
    /// </summary>
    Lookahead,
}

/// <summary>How the predicted pre-activation turns into an activity score (mirrors the model's activity rule).</summary>
public enum PredictorHead
{
    /// <summary>ReLU FFN: score = g (OPT: active iff up . x + b &gt; 0; ReLU / FATReLU Llama: active iff gate . x &gt; the layer's threshold).</summary>
    Relu,

    /// <summary>SwiGLU FFN (Llama): score = |silu(g)| (neuron active iff |silu(gate . x)| &gt;= the layer's threshold).</summary>
    SiluMagnitude,
}

/// <summary>One layer's weights. A: (rank, dim), B: (neurons, rank), Bias: (neurons), all F32 row-major.</summary>
public sealed record LowRankLayer(int Rank, float[] A, float[] B, float[] Bias, float DecisionThreshold, float ActivityThreshold);

/// <summary>
/// The paper's low-rank sparsity predictor: per layer, g^ = B (A x) + bias approximates the neuron
/// pre-activations g (gate . x for SwiGLU, up . x + b for ReLU) through a rank-r bottleneck.
/// </summary>
/// <remarks>
/// <para>Classification head. A logit linear in x cannot express SwiGLU's activity rule |silu(g)| &gt;= t: for a
/// small t the active set is {g &gt;= g+} plus a band of negative g around silu's minimum (g = -1.28). So
/// the low-rank path predicts g itself and the head applies the model's own rule to it: score = |silu(g^)|
/// (SwiGLU) or g^ (ReLU). The training logit is z = k (score - t), with t the model's activity threshold
/// (0 for ReLU) and k a fixed per-layer scale, so sigmoid(z) is the probability of "active" and the loss is
/// the paper's balanced binary cross-entropy. At inference a neuron is predicted active iff
/// score &gt;= <see cref="LowRankLayer.DecisionThreshold"/>, which is equivalent to sigmoid(z) &gt; p_l for the
/// matching p_l; it is picked after training as the largest value that still reaches the target recall.</para>
/// <para>Not thread-safe: it owns its scratch buffers (one instance per predictor actor). Calls allocate nothing.</para>
/// </remarks>
public sealed class LowRankPredictor
{
    private readonly LowRankLayer[] _layers;
    private readonly float[] _hidden;  // (max rank) scratch
    private readonly float[] _scores;  // (neurons) scratch
    private readonly float[] _scratch; // (neurons) scratch for the silu head

    public PredictorKind Kind { get; }
    public PredictorHead Head { get; }
    public int Dim { get; }
    public int Neurons { get; }
    public int Layers => _layers.Length;
    public IReadOnlyList<LowRankLayer> LayerWeights => _layers;

    public LowRankPredictor(PredictorKind kind, PredictorHead head, int dim, int neurons, IReadOnlyList<LowRankLayer> layers)
    {
        if (dim <= 0 || neurons <= 0 || layers.Count == 0) throw new ArgumentException("a predictor needs dim > 0, neurons > 0 and at least one layer");
        for (int l = 0; l < layers.Count; l++)
        {
            var w = layers[l];
            if (w.Rank <= 0 || w.A.Length != w.Rank * dim || w.B.Length != neurons * w.Rank || w.Bias.Length != neurons)
                throw new ArgumentException($"layer {l}: weights do not match rank {w.Rank}, dim {dim}, neurons {neurons}");
        }
        Kind = kind;
        Head = head;
        Dim = dim;
        Neurons = neurons;
        _layers = layers.ToArray();
        _hidden = new float[_layers.Max(w => w.Rank)];
        _scores = new float[neurons];
        _scratch = new float[neurons];
    }

    /// <summary>The FFN input layer <paramref name="layer"/>'s predictor reads (lookahead: the previous layer's).</summary>
    public int InputLayer(int layer) => Kind == PredictorKind.Lookahead && layer > 0 ? layer - 1 : layer;

    /// <summary>DRAM held by the weights (F32), scratch excluded.</summary>
    public long Bytes => _layers.Sum(w => 4L * (w.A.Length + w.B.Length + w.Bias.Length));

    /// <summary>Bytes of one layer's weights.</summary>
    public long LayerBytes(int layer) => 4L * (_layers[layer].A.Length + _layers[layer].B.Length + _layers[layer].Bias.Length);

    /// <summary>scores (neurons) = head(B (A x) + bias) for x (dim) = the FFN input of <see cref="InputLayer"/>.</summary>
    public void Scores(int layer, ReadOnlySpan<float> x, Span<float> scores)
    {
        var w = _layers[layer];
        if (x.Length != Dim) throw new ArgumentException($"input has {x.Length} values, expected dim = {Dim}");
        if (scores.Length != Neurons) throw new ArgumentException($"scores has {scores.Length} values, expected {Neurons}");
        var h = _hidden.AsSpan(0, w.Rank);
        MatVec.F32(w.A, x, h);
        MatVec.F32(w.B, h, scores);
        TensorPrimitives.Add(scores, w.Bias, scores);
        if (Head == PredictorHead.SiluMagnitude)
        {
            var s = _scratch.AsSpan();
            TensorPrimitives.Sigmoid(scores, s);
            TensorPrimitives.Multiply(scores, s, scores);
            TensorPrimitives.Abs(scores, scores);
        }
    }

    /// <summary>
    /// Writes the predicted active neuron ids of <paramref name="layer"/>, ascending, into <paramref name="result"/>
    /// (at least <see cref="Neurons"/> long) and returns how many there are.
    /// </summary>
    public int Active(int layer, ReadOnlySpan<float> x, Span<int> result)
    {
        if (result.Length < Neurons) throw new ArgumentException($"result has room for {result.Length} ids, need {Neurons}");
        var scores = _scores.AsSpan();
        Scores(layer, x, scores);
        float t = _layers[layer].DecisionThreshold;
        int n = 0;
        for (int i = 0; i < scores.Length; i++)
            if (scores[i] >= t) result[n++] = i;
        return n;
    }

    /// <summary>A copy with other decision thresholds (one per layer).</summary>
    public LowRankPredictor WithDecisionThresholds(IReadOnlyList<float> thresholds)
    {
        if (thresholds.Count != Layers) throw new ArgumentException($"{thresholds.Count} thresholds for {Layers} layers");
        return new LowRankPredictor(Kind, Head, Dim, Neurons, _layers.Select((w, l) => w with { DecisionThreshold = thresholds[l] }).ToArray());
    }
}
