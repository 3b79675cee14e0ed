using FlashLm.Formats;
using FlashLm.Models.Llama;
using FlashLm.Models.Opt;
using FlashLm.Models.Sampling;

namespace FlashLm.Models.Sparsity;

/// <summary>Quality of one model variant on a token sequence, teacher-forced.</summary>
/// <param name="Agreement">Fraction of positions whose greedy token equals the reference variant's.</param>
public sealed record EvalResult(string Variant, double Perplexity, double Agreement, int Positions, double ActiveFraction);

/// <summary>
/// Teacher-forced evaluation: every variant sees the same (dense model's) tokens; at each position it is
/// scored on the next token (perplexity) and its greedy choice is compared with a reference variant's.
/// </summary>
public static class Evaluator
{
    /// <summary>A variant: a name and a factory for its model (built over the same source).</summary>
    public sealed record Variant(string Name, Func<ModelSource, (ITransformer Model, Func<double> ActiveFraction)> Build);

    /// <summary>Plain dense model.</summary>
    public static Variant Dense() => new("dense", s => (Transformers.Create(s), () => 1.0));

    /// <summary>Dense model with SwiGLU thresholds (the sparsity alone); ReLU models are already sparse.</summary>
    public static Variant Thresholded(float[]? thresholds) => Masked("dense-thresholded", thresholds, null);

    /// <summary>
    /// Thresholded model whose neurons outside <paramref name="mask"/>'s prediction are zeroed: what a predictor
    /// costs in quality (false negatives drop active neurons; false positives cost only reads).
    /// </summary>
    public static Variant Masked(string name, float[]? thresholds, Func<NeuronMask>? mask) => new(name, s =>
    {
        long active = 0, total = 0;
        var user = mask?.Invoke();
        NeuronMask count = (layer, x, a) =>
        {
            user?.Invoke(layer, x, a);
            foreach (var v in a) if (v != 0) active++;
            total += a.Length;
        };
        ITransformer model;
        if (s.Config.Architecture == Architecture.Llama)
            model = new LlamaModel(s, new DenseSwiGlu(s, thresholds) { Mask = count });
        else
            model = new OptModel(s, new DenseRelu(s) { Mask = count });
        return (model, () => total == 0 ? 0 : (double)active / total);
    });

    /// <summary>Evaluates every variant on <paramref name="sequences"/>; agreement is against <paramref name="referenceIndex"/>'s greedy tokens.</summary>
    public static List<EvalResult> Run(ModelSource source, IReadOnlyList<int[]> sequences, IReadOnlyList<Variant> variants, int referenceIndex = 0,
        Func<int, int>? agreementReference = null)
    {
        var argmax = new List<int[]>(); // per variant: greedy token at each position (all sequences concatenated)
        var results = new List<EvalResult>();
        foreach (var v in variants)
        {
            var (model, activeFraction) = v.Build(source);
            double nll = 0;
            int n = 0;
            var picks = new List<int>();
            foreach (var seq in sequences)
            {
                var state = model.CreateState(seq.Length);
                for (int pos = 0; pos + 1 < seq.Length; pos++)
                {
                    var logits = model.Forward(state, seq[pos], pos);
                    picks.Add(Sampler.ArgMax(logits));
                    nll -= LogSoftmax(logits, seq[pos + 1]);
                    n++;
                }
            }
            argmax.Add(picks.ToArray());
            results.Add(new EvalResult(v.Name, Math.Exp(nll / Math.Max(1, n)), 0, n, activeFraction()));
        }
        for (int i = 0; i < results.Count; i++)
        {
            var reference = argmax[agreementReference?.Invoke(i) ?? referenceIndex];
            int same = 0;
            for (int p = 0; p < reference.Length; p++) if (argmax[i][p] == reference[p]) same++;
            results[i] = results[i] with { Agreement = reference.Length == 0 ? 1 : (double)same / reference.Length };
        }
        return results;
    }

    private static double LogSoftmax(float[] logits, int target)
    {
        float max = logits.Max();
        double sum = 0;
        foreach (var l in logits) sum += Math.Exp(l - max);
        return logits[target] - max - Math.Log(sum);
    }
}
