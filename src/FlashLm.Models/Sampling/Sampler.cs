using FlashLm.Kernels;

namespace FlashLm.Models.Sampling;

/// <summary>A source of uniform random floats in [0, 1); injected so sampling is deterministic and testable.</summary>
public interface IRandomSource
{
    float NextFloat();
}

/// <summary>llama2.c's xorshift* generator: the same seed gives run.c's sequence.</summary>
public sealed class XorShiftRandom(ulong seed) : IRandomSource
{
    private ulong _state = seed;

    public uint NextUInt()
    {
        _state ^= _state >> 12;
        _state ^= _state << 25;
        _state ^= _state >> 27;
        return (uint)((_state * 0x2545F4914F6CDD1DUL) >> 32);
    }

    public float NextFloat() => (NextUInt() >> 8) / 16777216.0f;
}

/// <summary>Sampling settings. Temperature 0 is greedy; top-p and top-k of 0 (or top-p 1) are off.</summary>
public sealed record SamplingOptions(float Temperature = 1.0f, float TopP = 0.9f, int TopK = 0, ulong Seed = 0)
{
    public static SamplingOptions Greedy { get; } = new(0f, 0f, 0, 0);

    public void Validate()
    {
        if (!(Temperature >= 0) || float.IsInfinity(Temperature)) throw new ArgumentException($"temperature must be >= 0, got {Temperature}");
        if (!(TopP >= 0 && TopP <= 1)) throw new ArgumentException($"top-p must be in [0, 1], got {TopP}");
        if (TopK < 0) throw new ArgumentException($"top-k must be >= 0, got {TopK}");
    }
}

/// <summary>
/// Picks the next token from logits: greedy, or temperature with optional top-k then top-p (nucleus),
/// following run.c's rules (its top-p cut-off, descending sort and cumulative threshold) so that with
/// top-k off and <see cref="XorShiftRandom"/> the choices equal run.c's. Buffers are allocated once.
/// </summary>
public sealed class Sampler
{
    private readonly SamplingOptions _options;
    private readonly IRandomSource _random;
    private readonly (float Prob, int Index)[] _candidates;
    private static readonly Comparison<(float Prob, int Index)> Descending = (a, b) => b.Prob.CompareTo(a.Prob);

    public Sampler(int vocabSize, SamplingOptions options, IRandomSource random)
    {
        options.Validate();
        _options = options;
        _random = random;
        _candidates = new (float, int)[vocabSize];
    }

    /// <summary>Chooses a token; may overwrite <paramref name="logits"/> (they become probabilities).</summary>
    public int Sample(Span<float> logits)
    {
        if (_options.Temperature == 0.0f) return ArgMax(logits);
        for (int i = 0; i < logits.Length; i++) logits[i] /= _options.Temperature;
        if (_options.TopK > 0 && _options.TopK < logits.Length) KeepTopK(logits, _options.TopK);
        Norms.Softmax(logits);
        float coin = _random.NextFloat();
        float topp = _options.TopP;
        return topp <= 0 || topp >= 1 ? SampleMultinomial(logits, coin) : SampleTopP(logits, topp, coin);
    }

    public static int ArgMax(ReadOnlySpan<float> v)
    {
        int best = 0;
        for (int i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i;
        return best;
    }

    private void KeepTopK(Span<float> logits, int k)
    {
        for (int i = 0; i < logits.Length; i++) _candidates[i] = (logits[i], i);
        var c = _candidates.AsSpan(0, logits.Length);
        c.Sort(Descending);
        float kth = c[k - 1].Prob;
        // Ties with the k-th logit stay, so the result does not depend on sort order.
        for (int i = 0; i < logits.Length; i++) if (logits[i] < kth) logits[i] = float.NegativeInfinity;
    }

    private static int SampleMultinomial(ReadOnlySpan<float> probs, float coin)
    {
        float cdf = 0.0f;
        for (int i = 0; i < probs.Length; i++)
        {
            cdf += probs[i];
            if (coin < cdf) return i;
        }
        return probs.Length - 1;
    }

    private int SampleTopP(ReadOnlySpan<float> probs, float topp, float coin)
    {
        // Tokens below (1 - topp) / (n - 1) cannot be in the nucleus; dropping them first is run.c's shortcut.
        float cutoff = (1.0f - topp) / (probs.Length - 1);
        int n0 = 0;
        for (int i = 0; i < probs.Length; i++)
            if (probs[i] >= cutoff) _candidates[n0++] = (probs[i], i);
        var c = _candidates.AsSpan(0, n0);
        c.Sort(Descending);
        float cumulative = 0.0f;
        int last = n0 - 1;
        for (int i = 0; i < n0; i++)
        {
            cumulative += c[i].Prob;
            if (cumulative > topp)
            {
                last = i;
                break;
            }
        }
        float r = coin * cumulative;
        float cdf = 0.0f;
        for (int i = 0; i <= last; i++)
        {
            cdf += c[i].Prob;
            if (r < cdf) return c[i].Index;
        }
        return c[last].Index;
    }
}
