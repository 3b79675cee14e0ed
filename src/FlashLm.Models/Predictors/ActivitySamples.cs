using FlashLm.Formats;

namespace FlashLm.Models.Predictors;

/// <summary>
/// Training data for predictors: per layer and position, the FFN input x and the true pre-activations g
/// (gate . x for SwiGLU, up . x + b for ReLU), from which the exact active set follows as the oracle computes it.
/// Positions are split by sequence into a training part and a held-out part.
/// </summary>
public sealed class ActivitySamples
{
    private readonly float[][] _inputs;  // (layers) (positions, dim)
    private readonly float[][] _pre;     // (layers) (positions, neurons)

    public ModelConfig Config { get; }
    public PredictorHead Head { get; }
    /// <summary>
    /// Per layer: the activity threshold t. SwiGLU: active iff |silu(g)| &gt;= t. ReLU / FATReLU Llama: active iff gate . x &gt; t.
    /// OPT: 0 (active iff up . x + b &gt; 0).
    /// </summary>
    public float[] ActivityThresholds { get; }
    /// <summary>Per layer: the gate (SwiGLU) or up (ReLU) projection, (neurons, dim) F32, for the SVD initialisation.</summary>
    public float[][] Weights { get; }
    /// <summary>Per layer: the up bias (ReLU) or zeros.</summary>
    public float[][] Biases { get; }
    public int Positions { get; }
    public int[] Train { get; }
    public int[] HeldOut { get; }

    internal ActivitySamples(ModelConfig config, PredictorHead head, float[] thresholds, float[][] weights, float[][] biases,
        float[][] inputs, float[][] pre, int positions, int[] train, int[] heldOut)
    {
        Config = config;
        Head = head;
        ActivityThresholds = thresholds;
        Weights = weights;
        Biases = biases;
        _inputs = inputs;
        _pre = pre;
        Positions = positions;
        Train = train;
        HeldOut = heldOut;
    }

    /// <summary>The head that mirrors <paramref name="c"/>'s activity rule: the pre-activation itself for ReLU (OPT, ReLU / FATReLU Llama), |silu| for SwiGLU.</summary>
    public static PredictorHead HeadFor(ModelConfig c) =>
        c.Architecture == Architecture.Opt || c.ReluGated ? PredictorHead.Relu : PredictorHead.SiluMagnitude;

    /// <summary>Layer <paramref name="layer"/>'s FFN input at <paramref name="position"/> (dim).</summary>
    public ReadOnlySpan<float> Input(int layer, int position) => _inputs[layer].AsSpan(position * Config.Dim, Config.Dim);

    /// <summary>Layer <paramref name="layer"/>'s true pre-activations at <paramref name="position"/> (neurons).</summary>
    public ReadOnlySpan<float> PreActivation(int layer, int position) => _pre[layer].AsSpan(position * Config.HiddenDim, Config.HiddenDim);

    /// <summary>The model's activity rule, exactly as the oracle applies it.</summary>
    public bool IsActive(int layer, float g) => Kernels.Norms.GateActive(
        Head == PredictorHead.Relu ? FfnActivation.Relu : FfnActivation.Silu, g, ActivityThresholds[layer]);

    /// <summary>
    /// Runs the dense model (thresholded for Llama, so later layers see what the sparse model computes)
    /// over <paramref name="sequences"/> and records every layer's FFN input and pre-activations.
    /// </summary>
    /// <param name="thresholds">Llama per-layer activity thresholds (from <see cref="Sparsity.Calibrator"/>; a ReLU / FATReLU model may
    /// pass null for its own threshold); ignored for OPT.</param>
    /// <param name="heldOutFraction">Share of the sequences kept out of training (by sequence; by position when there is a single sequence).</param>
    public static ActivitySamples Collect(ModelSource source, IReadOnlyList<int[]> sequences, IReadOnlyList<float>? thresholds, double heldOutFraction = 0.2)
    {
        var c = source.Config;
        if (sequences.Count == 0 || sequences.Any(s => s.Length == 0)) throw new ArgumentException("need at least one non-empty sequence");
        if (!(heldOutFraction > 0 && heldOutFraction < 1)) throw new ArgumentException($"held-out fraction {heldOutFraction} is outside (0, 1)");
        bool swiglu = c.Architecture == Architecture.Llama; // gated: gate rows in the weights (SwiGLU, or ReLU / FATReLU)
        var head = HeadFor(c);
        var t = new float[c.Layers];
        if (swiglu)
        {
            thresholds ??= c.ReluGated ? Enumerable.Repeat(c.DefaultThreshold, c.Layers).ToArray() : null;
            if (thresholds is null || thresholds.Count != c.Layers)
                throw new ArgumentException($"a SwiGLU model needs {c.Layers} activity thresholds (calibrate first)");
            for (int l = 0; l < c.Layers; l++) t[l] = thresholds[l];
        }
        var weights = new float[c.Layers][];
        var biases = new float[c.Layers][];
        var matrices = new Matrix[c.Layers];
        for (int l = 0; l < c.Layers; l++)
        {
            matrices[l] = Matrix.Load(source, TensorNames.Block(l, swiglu ? TensorNames.FfnGate : TensorNames.FfnUp));
            weights[l] = new float[c.HiddenDim * c.Dim];
            for (int r = 0; r < c.HiddenDim; r++) matrices[l].CopyRow(r, weights[l].AsSpan(r * c.Dim, c.Dim));
            biases[l] = swiglu ? new float[c.HiddenDim] : source.ReadF32(TensorNames.Block(l, TensorNames.FfnUpBias));
        }

        int positions = sequences.Sum(s => s.Length);
        var inputs = new float[c.Layers][];
        var pre = new float[c.Layers][];
        for (int l = 0; l < c.Layers; l++)
        {
            inputs[l] = new float[(long)positions * c.Dim];
            pre[l] = new float[(long)positions * c.HiddenDim];
        }
        IFeedForward dense = swiglu ? new Llama.DenseSwiGlu(source, t) : new Opt.DenseRelu(source);
        var recorder = new FfnInputRecorder(dense, c.Dim, inputs);
        var model = Transformers.Create(source, recorder);
        var g = new float[c.HiddenDim];
        foreach (var seq in sequences)
        {
            var state = model.CreateState(seq.Length);
            for (int pos = 0; pos < seq.Length; pos++) model.Forward(state, seq[pos], pos);
        }
        for (int l = 0; l < c.Layers; l++)
            for (int p = 0; p < positions; p++)
            {
                matrices[l].Multiply(inputs[l], p * c.Dim, g, 0);
                System.Numerics.Tensors.TensorPrimitives.Add(g, biases[l], pre[l].AsSpan(p * c.HiddenDim, c.HiddenDim));
            }

        // Split by sequence: the last sequences are held out.
        var train = new List<int>();
        var held = new List<int>();
        int heldSequences = sequences.Count >= 2 ? Math.Clamp((int)Math.Round(sequences.Count * heldOutFraction), 1, sequences.Count - 1) : 0;
        int start = 0;
        for (int s = 0; s < sequences.Count; s++)
        {
            int len = sequences[s].Length;
            for (int p = 0; p < len; p++)
            {
                bool isHeld = heldSequences > 0 ? s >= sequences.Count - heldSequences : p >= len * (1 - heldOutFraction);
                (isHeld ? held : train).Add(start + p);
            }
            start += len;
        }
        if (train.Count == 0 || held.Count == 0) throw new ArgumentException("too few positions to split into training and held-out parts");
        return new ActivitySamples(c, head, t, weights, biases, inputs, pre, positions, train.ToArray(), held.ToArray());
    }
}

/// <summary>Wraps an FFN and copies each call's input (the FFN input x, dim) into per-layer position slots.</summary>
public sealed class FfnInputRecorder(IFeedForward inner, int dim, float[][] destination) : IFeedForward
{
    private readonly int[] _next = new int[destination.Length]; // (layers) next position slot

    public long Bytes => inner.Bytes;

    public void Compute(int layer, float[] input, float[] output, InferenceState state)
    {
        input.AsSpan(0, dim).CopyTo(destination[layer].AsSpan(_next[layer]++ * dim, dim));
        inner.Compute(layer, input, output, state);
    }
}
