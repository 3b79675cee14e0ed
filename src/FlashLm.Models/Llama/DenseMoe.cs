using FlashLm.Formats;
using FlashLm.Kernels;

namespace FlashLm.Models.Llama;

/// <summary>
/// Dense mixture-of-experts FFN (Mixtral, Qwen3-MoE), every expert in DRAM: the router's logits over the experts, their
/// softmax, the top k by probability (ties: the lower expert first), those k probabilities renormalised to sum to one
/// (Mixtral and Qwen3-MoE both do; llama.cpp's build_moe_ffn with softmax gating and weight normalisation), and the sum of
/// the chosen experts' SwiGLU FFNs, each weighted by its share. The reference the flash MoE path is compared with.
/// </summary>
public sealed class DenseMoe : IFeedForward
{
    private readonly Matrix[] _router;             // per layer: (experts, dim)
    private readonly Matrix[][] _gate, _up, _down; // per layer, per expert: (hidden, dim), (hidden, dim), (dim, hidden)
    private readonly int _used;

    public DenseMoe(ModelSource source)
    {
        var c = source.Config;
        if (!c.MoE) throw new ArgumentException($"{source.Path}: not a mixture-of-experts model");
        _used = c.ExpertsUsed;
        _router = new Matrix[c.Layers];
        _gate = new Matrix[c.Layers][];
        _up = new Matrix[c.Layers][];
        _down = new Matrix[c.Layers][];
        for (int l = 0; l < c.Layers; l++)
        {
            _router[l] = Matrix.Load(source, TensorNames.Block(l, TensorNames.FfnRouter));
            _gate[l] = Experts(source, l, TensorNames.FfnGateExperts, c.Experts);
            _up[l] = Experts(source, l, TensorNames.FfnUpExperts, c.Experts);
            _down[l] = Experts(source, l, TensorNames.FfnDownExperts, c.Experts);
        }
    }

    private static Matrix[] Experts(ModelSource source, int layer, string part, int experts)
    {
        string name = TensorNames.Block(layer, part);
        var m = new Matrix[experts];
        for (int e = 0; e < experts; e++) m[e] = new Matrix(source.ReadSlab(name, e));
        return m;
    }

    /// <summary>Called with each layer's chosen experts and their weights (statistics, tests).</summary>
    public Action<int, ReadOnlyMemory<int>, ReadOnlyMemory<float>>? ObserveRouting { get; set; }

    public long Bytes =>
        _router.Sum(m => m.Bytes) + new[] { _gate, _up, _down }.Sum(part => part.Sum(layer => layer.Sum(m => m.Bytes)));

    public void Compute(int layer, float[] input, float[] output, InferenceState s)
    {
        Span<int> chosen = stackalloc int[_used];
        Span<float> weights = stackalloc float[_used];
        Route(_router[layer], input, s.Router, chosen, weights);
        if (ObserveRouting is { } observe) observe(layer, chosen.ToArray(), weights.ToArray());
        Array.Clear(output);
        for (int i = 0; i < chosen.Length; i++)
        {
            int e = chosen[i];
            Matrix.Multiply(input, 0, (_gate[layer][e], s.Hb, 0), (_up[layer][e], s.Hb2, 0));
            Norms.SwiGlu(s.Hb, s.Hb2);
            _down[layer][e].Multiply(s.Hb, s.ExpertOut);
            System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(s.ExpertOut, weights[i], output, output);
        }
    }

    /// <summary>
    /// The router: <paramref name="scores"/> (experts) = softmax(router x); the <paramref name="chosen"/>.Length experts of
    /// highest probability (ties: lower index first), in that order, and their probabilities renormalised to sum to one.
    /// </summary>
    public static void Route(Matrix router, float[] x, float[] scores, Span<int> chosen, Span<float> weights)
    {
        router.Multiply(x, scores);
        Norms.Softmax(scores);
        TopK(scores, chosen);
        float sum = 0;
        for (int i = 0; i < chosen.Length; i++) sum += weights[i] = scores[chosen[i]];
        for (int i = 0; i < chosen.Length; i++) weights[i] /= sum;
    }

    /// <summary>The indices of the <paramref name="chosen"/>.Length largest <paramref name="scores"/>, largest first (ties: lower index first).</summary>
    public static void TopK(ReadOnlySpan<float> scores, Span<int> chosen)
    {
        int k = chosen.Length, n = 0;
        for (int e = 0; e < scores.Length; e++)
        {
            // Insertion into the sorted top list; an equal score stays behind the earlier expert.
            int at = Math.Min(n, k);
            while (at > 0 && scores[e] > scores[chosen[at - 1]]) at--;
            if (at >= k) continue;
            for (int j = Math.Min(n, k - 1); j > at; j--) chosen[j] = chosen[j - 1];
            chosen[at] = e;
            if (n < k) n++;
        }
    }
}
