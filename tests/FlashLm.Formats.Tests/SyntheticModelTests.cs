using FlashLm.Formats;
using FlashLm.Formats.Synth;
using Xunit;

namespace FlashLm.Tests;

/// <summary>Sizes of the named shapes and determinism of the synthetic weights (no large files are written).</summary>
public sealed class SyntheticModelTests
{
    [Theory]
    // Published parameter counts: TinyLlama 1.1B, Llama-2-7B 6.74B, OPT-125m 125M (+ its 2050-row position table), OPT-6.7B 6.66B.
    [InlineData("llama-1b", 1.100e9)]
    [InlineData("llama-7b", 6.738e9)]
    [InlineData("opt-125m", 0.1253e9)]
    [InlineData("opt-6.7b", 6.658e9)]
    public void Named_shapes_have_their_real_models_parameter_counts(string shape, double parameters)
    {
        var c = SyntheticShapes.Get(shape);
        long f16 = SyntheticModel.TensorBytes(c, DType.F16);
        long f32 = SyntheticModel.TensorBytes(c, DType.F32);
        // F16 stores matrices in 2 bytes; the 1-D norms and biases stay F32 and are a tiny fraction.
        Assert.InRange(f16 / 2.0, parameters * 0.995, parameters * 1.005);
        Assert.InRange(f32 / 4.0, parameters * 0.995, parameters * 1.005);
    }

    [Fact]
    public void Weights_depend_only_on_seed_name_and_index_whatever_the_chunking()
    {
        var c = SyntheticShapes.Get("llama-1b");
        var spec = new SyntheticWeights(c, 3).Specs(DType.F16).First(s => s.Name == TensorNames.TokenEmbedding);
        var whole = new float[1 << 18]; // large enough to be filled in parallel slices
        new SyntheticWeights(c, 3).Fill(spec, 1000, whole);
        var pieces = new float[whole.Length];
        for (int at = 0; at < whole.Length; at += 777)
            new SyntheticWeights(c, 3).Fill(spec, 1000 + at, pieces.AsSpan(at, Math.Min(777, whole.Length - at)));
        Assert.Equal(whole, pieces);
        var other = new float[1024];
        new SyntheticWeights(c, 4).Fill(spec, 1000, other);
        Assert.NotEqual(whole.AsSpan(0, 1024).ToArray(), other);
        // Embeddings are U(-sqrt3, sqrt3): unit variance, zero mean.
        double mean = whole.Average(v => (double)v), variance = whole.Average(v => (v - mean) * (v - mean));
        Assert.InRange(mean, -0.01, 0.01);
        Assert.InRange(variance, 0.98, 1.02);
    }
}
