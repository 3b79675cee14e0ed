using FlashLm.Formats;
using FlashLm.Models.Llama;
using FlashLm.Models.Sampling;

namespace FlashLm.Models.Sparsity;

/// <summary>Per-layer activation thresholds and what they achieved on the calibration tokens.</summary>
/// <param name="Frequencies">Per layer and neuron: the share of the calibration positions at which the neuron passed its layer's
/// threshold (what hot-neuron pinning ranks neurons by).</param>
public sealed record Calibration(float[] Thresholds, double TargetSparsity, double[] MeasuredSparsity, int Positions, float[][] Frequencies);

/// <summary>
/// Training-free activation sparsity for Llama models (as TEAL / CATS): runs the dense model over calibration tokens,
/// collects each layer's activity scores and sets each layer's threshold at the quantile that leaves the target fraction of
/// neurons inactive. SwiGLU: the score is |silu(gate . x)|, inactive below the threshold. ReLU / FATReLU: the score is
/// gate . x, inactive at or below the threshold, which is never below the model's own (0 for ReLU, FATReLU's t): a target
/// under the model's natural sparsity leaves it at its natural sparsity, and a target above it makes the model a FATReLU
/// model with the calibrated t (per layer). That is how a ReLU model reaches 90 %.
/// </summary>
public static class Calibrator
{
    /// <summary>Calibration tokens: the text file's tokens, or text the model samples itself (seeded) when none is given.</summary>
    public static List<int[]> Sequences(ModelSource source, string? text, int maxTokens, ulong seed = 42)
    {
        if (maxTokens < 2) throw new ArgumentOutOfRangeException(nameof(maxTokens), maxTokens, "calibration needs at least 2 tokens");
        var c = source.Config;
        int window = Math.Min(c.ContextLength, 256);
        var sequences = new List<int[]>();
        if (text is not null)
        {
            var ids = source.Tokenizer.Encode(text, addBos: true);
            if (ids.Length < 2) throw new ArgumentException("the calibration text encodes to fewer than 2 tokens");
            for (int at = 0; at < ids.Length && at < maxTokens; at += window)
            {
                var seq = ids.Skip(at).Take(Math.Min(window, maxTokens - at)).ToArray();
                if (at > 0) seq = [source.Tokenizer.BosId, .. seq.Take(window - 1)];
                sequences.Add(seq);
            }
            return sequences;
        }
        // Self-generated text: sample from BOS at temperature 1 (seeded), one window at a time.
        var model = Transformers.Create(source);
        var sampler = new Sampler(c.VocabSize, new SamplingOptions(1.0f, 0.95f, 0, seed), new XorShiftRandom(seed));
        int total = 0;
        while (total < maxTokens)
        {
            int len = Math.Min(window, maxTokens - total);
            var state = model.CreateState(len);
            var seq = new int[len];
            seq[0] = source.Tokenizer.BosId;
            for (int pos = 0; pos + 1 < len; pos++)
                seq[pos + 1] = sampler.Sample(model.Forward(state, seq[pos], pos));
            sequences.Add(seq);
            total += len;
        }
        return sequences;
    }

    /// <summary>Thresholds for <paramref name="targetSparsity"/> (fraction of neurons inactive) on a Llama model.</summary>
    public static Calibration Calibrate(ModelSource source, IReadOnlyList<int[]> sequences, double targetSparsity)
    {
        var c = source.Config;
        if (c.Architecture != Architecture.Llama)
            throw new NotSupportedException($"{source.Path}: thresholds apply to gated (Llama) models; OPT's ReLU FFN is sparse by itself");
        if (c.MoE)
            throw new NotSupportedException($"{source.Path}: a mixture of experts is sparse by its router; thresholds inside the experts are not built (record the experts' frequencies instead)");
        if (!(targetSparsity >= 0 && targetSparsity < 1)) throw new ArgumentException($"sparsity {targetSparsity} is outside [0, 1)");
        bool relu = c.ReluGated;
        var ffn = new DenseSwiGlu(source);
        var samples = new List<float>[c.Layers];
        for (int l = 0; l < c.Layers; l++) samples[l] = new List<float>();
        ffn.ObserveGate = (layer, gate) =>
        {
            if (relu) samples[layer].AddRange(gate);
            else foreach (var g in gate) samples[layer].Add(MathF.Abs(Kernels.Norms.Silu(g)));
        };
        int positions = Run(new LlamaModel(source, ffn), sequences);
        var thresholds = new float[c.Layers];
        var measured = new double[c.Layers];
        var frequencies = new float[c.Layers][];
        for (int l = 0; l < c.Layers; l++)
        {
            var observed = samples[l].ToArray();
            var v = (float[])observed.Clone();
            Array.Sort(v);
            int k = (int)Math.Floor(targetSparsity * v.Length);
            // The samples are position-major (one gate vector per position): neuron n's value at position p is [p * hidden + n].
            var counts = new int[c.HiddenDim];
            if (relu)
            {
                // Inactive iff g <= t: the k-th smallest score leaves k of them out (ties aside); never below the model's own.
                thresholds[l] = Math.Max(c.DefaultThreshold, k == 0 ? float.NegativeInfinity : v[Math.Min(k, v.Length) - 1]);
                measured[l] = (double)v.Count(x => !Kernels.Norms.GateActive(c.Activation, x, thresholds[l])) / v.Length;
                for (int i = 0; i < observed.Length; i++)
                    if (Kernels.Norms.GateActive(c.Activation, observed[i], thresholds[l])) counts[i % c.HiddenDim]++;
            }
            else
            {
                thresholds[l] = targetSparsity == 0 ? 0f : v[Math.Min(k, v.Length - 1)];
                measured[l] = (double)v.Count(x => x < thresholds[l]) / v.Length;
                // Here the samples are already |silu(g)|, so active is sample >= t.
                for (int i = 0; i < observed.Length; i++)
                    if (observed[i] >= thresholds[l]) counts[i % c.HiddenDim]++;
            }
            frequencies[l] = counts.Select(x => (float)x / positions).ToArray();
        }
        return new Calibration(thresholds, targetSparsity, measured, positions, frequencies);
    }

    /// <summary>
    /// Per-layer, per-neuron activation frequencies under given <paramref name="thresholds"/> (a neuron is active when
    /// |silu(gate . x)| &gt;= its layer's threshold, or for ReLU gate . x &gt; it, as the runtime selects): the share of the positions of
    /// <paramref name="sequences"/> at which each neuron was active. For a layout that already has thresholds.
    /// </summary>
    public static float[][] Frequencies(ModelSource source, IReadOnlyList<int[]> sequences, IReadOnlyList<float> thresholds)
    {
        var c = source.Config;
        if (c.Architecture != Architecture.Llama)
            throw new NotSupportedException($"{source.Path}: activation frequencies are recorded for gated (Llama) models");
        if (c.MoE)
            throw new NotSupportedException($"{source.Path}: a mixture of experts has no thresholds inside its experts; record how often each expert is chosen (ExpertFrequencies)");
        if (thresholds.Count != c.Layers) throw new ArgumentException($"need one threshold per layer ({c.Layers}), got {thresholds.Count}");
        var ffn = new DenseSwiGlu(source);
        var counts = new int[c.Layers][];
        for (int l = 0; l < c.Layers; l++) counts[l] = new int[c.HiddenDim];
        ffn.ObserveGate = (layer, gate) =>
        {
            float t = thresholds[layer];
            var row = counts[layer];
            for (int n = 0; n < gate.Length; n++)
                if (Kernels.Norms.GateActive(c.Activation, gate[n], t)) row[n]++;
        };
        int positions = Run(new LlamaModel(source, ffn), sequences);
        if (positions == 0) throw new ArgumentException("no calibration positions");
        return counts.Select(row => row.Select(x => (float)x / positions).ToArray()).ToArray();
    }

    /// <summary>
    /// Mixture of experts: per layer, per neuron of the flash layout's order (expert e's neuron i is e x hidden_dim + i), the share
    /// of the positions of <paramref name="sequences"/> at which the router chose the neuron's expert (the dense MoE model, so
    /// the choice is exact). Every neuron of an expert gets the expert's frequency: hot-neuron pinning then pins whole experts.
    /// </summary>
    public static float[][] ExpertFrequencies(ModelSource source, IReadOnlyList<int[]> sequences)
    {
        var c = source.Config;
        if (!c.MoE) throw new NotSupportedException($"{source.Path}: expert frequencies are recorded for mixture-of-experts models");
        var ffn = new DenseMoe(source);
        var counts = new int[c.Layers][];
        for (int l = 0; l < c.Layers; l++) counts[l] = new int[c.Experts];
        ffn.ObserveRouting = (layer, chosen, _) =>
        {
            foreach (var e in chosen.Span) counts[layer][e]++;
        };
        int positions = Run(new LlamaModel(source, ffn), sequences);
        if (positions == 0) throw new ArgumentException("no calibration positions");
        return counts.Select(row =>
        {
            var f = new float[c.FfnNeurons];
            for (int e = 0; e < c.Experts; e++) Array.Fill(f, (float)row[e] / positions, e * c.HiddenDim, c.HiddenDim);
            return f;
        }).ToArray();
    }

    /// <summary>Runs <paramref name="model"/> over every sequence (each from position 0, its own KV cache); returns the positions run.</summary>
    private static int Run(LlamaModel model, IReadOnlyList<int[]> sequences)
    {
        int positions = 0;
        foreach (var seq in sequences)
        {
            var state = model.CreateState(seq.Length);
            for (int pos = 0; pos < seq.Length; pos++) model.Forward(state, seq[pos], pos);
            positions += seq.Length;
        }
        return positions;
    }
}
