using System.IO.Hashing;
using System.Text;

namespace FlashLm.Formats.Synth;

/// <summary>
/// Seeded random weights for a model shape, generated on demand element by element (a counter-based
/// hash, so any chunk of any tensor can be produced independently and writers can stream).
/// Scales keep activations finite and logits peaked: projections ~ U(-a, a) with std 1/sqrt(fan_in),
/// norms 1 +- 0.1, biases small, embeddings std 1 and the LM head std 3/sqrt(dim).
/// </summary>
public sealed class SyntheticWeights(ModelConfig config, ulong seed)
{
    public ModelConfig Config { get; } = config;

    /// <summary>The tensors of the architecture in canonical order, stored as <paramref name="dtype"/> (norms and biases stay F32).</summary>
    public IReadOnlyList<TensorSpec> Specs(DType dtype) =>
        TensorNames.Expected(Config)
            .Select(t => new TensorSpec(t.Name, t.Shape.Length == 1 ? DType.F32 : dtype, t.Shape))
            .ToList();

    /// <summary>Elements per parallel slice: below this, one thread fills the chunk.</summary>
    private const int ParallelSlice = 1 << 16;

    /// <summary>
    /// A <see cref="TensorFiller"/> producing this model's values. Every element depends only on (seed, name,
    /// index), so large chunks are filled by all cores in slices with identical results.
    /// </summary>
    public unsafe void Fill(TensorSpec spec, long firstElement, Span<float> chunk)
    {
        ulong key = seed ^ XxHash64.HashToUInt64(Encoding.UTF8.GetBytes(spec.Name));
        var (center, halfWidth) = Distribution(spec);
        if (chunk.Length < 2 * ParallelSlice || Environment.ProcessorCount == 1)
        {
            FillRange(key, center, halfWidth, firstElement, chunk);
            return;
        }
        int slices = (chunk.Length + ParallelSlice - 1) / ParallelSlice, length = chunk.Length;
        fixed (float* p = chunk)
        {
            // The chunk is pinned for the duration of the loop, which ends before this frame does.
            var at = (nint)p;
            Parallel.For(0, slices, i =>
            {
                int start = i * ParallelSlice, n = Math.Min(ParallelSlice, length - start);
                FillRange(key, center, halfWidth, firstElement + start, new Span<float>((float*)at + start, n));
            });
        }
    }

    private static void FillRange(ulong key, double center, double halfWidth, long firstElement, Span<float> chunk)
    {
        for (int i = 0; i < chunk.Length; i++)
        {
            ulong h = SplitMix(key + (ulong)(firstElement + i) * 0x9E3779B97F4A7C15UL);
            double u = (h >> 11) * (1.0 / (1UL << 53)) * 2 - 1; // uniform in [-1, 1)
            chunk[i] = (float)(center + halfWidth * u);
        }
    }

    private (double Center, double HalfWidth) Distribution(TensorSpec spec)
    {
        const double sqrt3 = 1.7320508075688772; // U(-a, a) has std a / sqrt(3)
        string n = spec.Name;
        if (spec.Shape.Length == 1)
            return n.EndsWith(".bias", StringComparison.Ordinal) ? (0, 0.02 * sqrt3) : (1, 0.1 * sqrt3);
        if (n == TensorNames.TokenEmbedding || n == TensorNames.PositionEmbedding) return (0, sqrt3 * (n == TensorNames.PositionEmbedding ? 0.1 : 1.0));
        if (n == TensorNames.Output) return (0, sqrt3 * 3 / Math.Sqrt(Config.Dim));
        return (0, sqrt3 / Math.Sqrt(spec.Shape[^1]));
    }

    private static ulong SplitMix(ulong z)
    {
        z += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
