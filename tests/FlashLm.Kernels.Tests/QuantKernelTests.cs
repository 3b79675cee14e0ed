using FlashLm.Formats;
using FlashLm.Kernels;
using Xunit;
using static FlashLm.Tests.QuantTestData;

namespace FlashLm.Tests;

/// <summary>
/// QuantKernels on every weight type and path: Dot against a double-precision reference (dequantized weights times
/// dequantized input), each SIMD path against the scalar path, MatVec against Dot row by row, Axpy against
/// dequantize-then-add, and the argument checks.
/// </summary>
public class QuantKernelTests
{
    public static TheoryData<DType> Weights() => new(WeightTypes);

    public static TheoryData<DType> QuantWeights() => new(WeightTypes.Where(DTypeInfo.IsQuantized));

    // Relative to sum |w x|: float accumulation over a few thousand terms.
    private const double Tolerance = 2e-5;

    private static void AssertClose(double expected, double actual, double absSum, string what)
    {
        double tol = Tolerance * absSum + 1e-30;
        Assert.True(Math.Abs(expected - actual) <= tol, $"{what}: expected {expected}, got {actual} (|diff| {Math.Abs(expected - actual)} > {tol})");
    }

    private static void DotMatchesReference(SimdPath path, DType t)
    {
        foreach (int n in new[] { 256, 4096, 3 * DTypeInfo.BlockElements(t) * (DTypeInfo.IsQuantized(t) ? 1 : 32) }) // an odd block count: the V512 tails
            for (int seed = 0; seed < 3; seed++)
            {
                var w = RandomRow(t, n, 100 * seed + (int)t);
                var xq = Quantize(t, RandomInput(n, seed + 7));
                var (want, abs) = Reference(t, w, xq, n);
                float got = QuantKernels.Dot(path, t, w, xq, n);
                AssertClose(want, got, abs, $"{t} {path} n={n} seed={seed}");
                if (path != SimdPath.Scalar)
                    AssertClose(QuantKernels.Dot(SimdPath.Scalar, t, w, xq, n), got, abs, $"{t} {path} vs scalar n={n} seed={seed}");
            }
    }

    [Theory]
    [MemberData(nameof(Weights))]
    public void Scalar_dot_matches_a_double_reference(DType t) => DotMatchesReference(SimdPath.Scalar, t);

    [SimdTheory(SimdPath.V256)]
    [MemberData(nameof(Weights))]
    public void V256_dot_matches_the_reference_and_the_scalar_path(DType t) => DotMatchesReference(SimdPath.V256, t);

    [SimdTheory(SimdPath.V512)]
    [MemberData(nameof(Weights))]
    public void V512_dot_matches_the_reference_and_the_scalar_path(DType t) => DotMatchesReference(SimdPath.V512, t);

    private static IEnumerable<SimdPath> Paths() => Enum.GetValues<SimdPath>().Where(QuantKernels.IsSupported);

    [Theory]
    [MemberData(nameof(QuantWeights))]
    public void Edge_blocks_give_the_reference_on_every_path(DType t)
    {
        const int n = 512;
        var xs = new[] { RandomInput(n, 3), new float[n], Enumerable.Repeat(1000f, n).ToArray() /* Q8_1 stores 32 x amax as F16: larger overflows (as in ggml) */, Enumerable.Range(0, n).Select(i => i % 2 == 0 ? -1f : 1f).ToArray() };
        var rows = new List<(string, byte[])>
        {
            ("all-zero bytes", new byte[DTypeInfo.ByteCount(t, n)]),
            ("max quants", FilledRow(t, n, 0xFF, 0.5f)),
            ("min quants", FilledRow(t, n, 0x00, 0.5f)),
            ("max quants, negative scale", FilledRow(t, n, 0xFF, -2f)),
            ("0x80 quants, 65504 scale", FilledRow(t, n, 0x80, 65504f)),
            ("0x7F quants, subnormal scale", FilledRow(t, n, 0x7F, 5.9604645e-8f)),
            ("d = 0", FilledRow(t, n, 0xA5, 0f)),
        };
        foreach (var x in xs)
        {
            var xq = Quantize(t, x);
            foreach (var (name, w) in rows)
            {
                var (want, abs) = Reference(t, w, xq, n);
                foreach (var p in Paths())
                    AssertClose(want, QuantKernels.Dot(p, t, w, xq, n), abs, $"{t} {name} {p}");
            }
        }
        Assert.Equal(0f, QuantKernels.Dot(SimdPath.Scalar, t, rows[0].Item2, Quantize(t, xs[0]), n));
    }

    [Theory]
    [InlineData(DType.Q4_0, 7, 64)]
    [InlineData(DType.Q8_0, 300, 512)]   // above the parallel threshold
    [InlineData(DType.Q4_K, 5, 256)]
    [InlineData(DType.Q6_K, 520, 512)]   // above the parallel threshold
    [InlineData(DType.Q5_K, 64, 1024)]
    [InlineData(DType.Q5_1, 33, 96)]
    [InlineData(DType.F16, 9, 40)]
    [InlineData(DType.BF16, 9, 40)]
    [InlineData(DType.F32, 300, 512)]
    public void MatVec_equals_Dot_row_by_row_on_every_path(DType t, int rows, int cols)
    {
        var w = RandomRow(t, rows * cols, 9);
        var xq = Quantize(t, RandomInput(cols, 10));
        long rb = DTypeInfo.ByteCount(t, cols);
        foreach (var p in Paths())
        {
            var y = new float[rows];
            QuantKernels.MatVec(p, t, w, rows, cols, xq, y);
            for (int r = 0; r < rows; r++)
                Assert.Equal(QuantKernels.Dot(p, t, w.AsSpan((int)(r * rb), (int)rb), xq, cols), y[r]);
        }
    }

    [Theory]
    [MemberData(nameof(Weights))]
    public void Axpy_adds_a_times_the_dequantized_row(DType t)
    {
        const int n = 2048;
        var w = RandomRow(t, n, 21);
        var wf = ToF32(t, w, n);
        var y0 = RandomInput(n, 22);
        const float a = -0.375f;
        foreach (var p in Paths())
        {
            var y = (float[])y0.Clone();
            QuantKernels.Axpy(p, t, a, w, y);
            for (int i = 0; i < n; i++)
            {
                float want = y0[i] + a * wf[i];
                if (DTypeInfo.IsQuantized(t) || p == SimdPath.Scalar) Assert.True(want == y[i], $"{t} {p} element {i}: {want} vs {y[i]}"); // same products, no FMA
                else Assert.True(Math.Abs(want - y[i]) <= 1e-6f * (Math.Abs(y0[i]) + Math.Abs(a * wf[i])), $"{t} {p} element {i}: {want} vs {y[i]}");
            }
        }
    }

    [Fact]
    public void Dot_and_MatVec_reject_inconsistent_lengths()
    {
        var w = RandomRow(DType.Q4_K, 512, 1);
        var xq = Quantize(DType.Q4_K, RandomInput(512, 2));
        Assert.Throws<ArgumentException>(() => QuantKernels.Dot(DType.Q4_K, w, xq, 256));            // row too long for n
        Assert.Throws<ArgumentException>(() => QuantKernels.Dot(DType.Q4_K, w, xq.AsSpan(1), 512));  // xq too short
        Assert.Throws<ArgumentException>(() => QuantKernels.Dot(DType.Q4_0, new byte[18], new byte[34], 31)); // not whole blocks
        Assert.Throws<ArgumentException>(() => QuantKernels.MatVec(DType.Q4_K, w, 3, 256, xq.AsSpan(0, 292), new float[3]));
        Assert.Throws<ArgumentException>(() => QuantKernels.MatVec(DType.Q4_K, w, 2, 256, xq.AsSpan(0, 292), new float[3]));
        Assert.Throws<ArgumentException>(() => QuantKernels.Axpy(DType.Q4_K, 1f, w, new float[256]));
        Assert.Throws<ArgumentException>(() => QuantKernels.ActivationBytes(DType.Q8_K, 256)); // an activation type is not a weight type
        Assert.Equal(2 * 292, QuantKernels.ActivationBytes(DType.Q4_K, 512));
        Assert.Equal(16 * 34, QuantKernels.ActivationBytes(DType.Q4_0, 512));
        Assert.Equal(16 * 36, QuantKernels.ActivationBytes(DType.Q5_1, 512));
        Assert.Equal(512 * 4, QuantKernels.ActivationBytes(DType.F16, 512));
    }

    [Fact]
    public void FLASHLM_SIMD_picks_a_path_and_names_the_choices_when_wrong()
    {
        Assert.Equal(QuantKernels.Widest, QuantKernels.PathFromSetting(null));
        Assert.Equal(QuantKernels.Widest, QuantKernels.PathFromSetting(" "));
        Assert.Equal(SimdPath.Scalar, QuantKernels.PathFromSetting("Scalar"));
        foreach (var p in new[] { SimdPath.V256, SimdPath.V512 })
        {
            if (QuantKernels.IsSupported(p)) Assert.Equal(p, QuantKernels.PathFromSetting(p.ToString().ToLowerInvariant()));
            else Assert.Throws<PlatformNotSupportedException>(() => QuantKernels.PathFromSetting(p.ToString()));
        }
        var e = Assert.Throws<ArgumentException>(() => QuantKernels.PathFromSetting("avx2"));
        Assert.Contains("scalar, v256, v512", e.Message);
    }

    [Fact]
    public void Paths_the_CPU_lacks_are_refused()
    {
        Assert.True(QuantKernels.IsSupported(SimdPath.Scalar));
        foreach (var p in Enum.GetValues<SimdPath>().Where(p => !QuantKernels.IsSupported(p)))
        {
            Assert.Throws<PlatformNotSupportedException>(() => QuantKernels.Path = p);
            Assert.Throws<PlatformNotSupportedException>(() => QuantKernels.Dot(p, DType.Q8_0, new byte[34], new byte[34], 32));
        }
        Assert.True(QuantKernels.IsSupported(QuantKernels.Path));
    }

    [Fact]
    public void QuantizeActivation_is_the_activation_types_reference_quantizer_on_every_path()
    {
        var r = new Random(4);
        var inputs = new List<float[]> { RandomInput(1024, 4), new float[512] };
        // ties: amax 127 gives d = 1, so k + 0.5 rounds away from zero (roundf, Q8_0/Q8_1) or to even (Q8_K)
        inputs.Add(Enumerable.Range(0, 512).Select(i => i % 32 == 0 ? 127f : (i % 2 == 0 ? 1 : -1) * ((i % 7) + 0.5f)).ToArray());
        inputs.Add(Enumerable.Range(0, 512).Select(i => i % 256 == 3 ? -127f : (i % 2 == 0 ? 1 : -1) * ((i % 9) + 0.5f)).ToArray());
        // equal magnitudes of both signs: Q8_K keeps the first; values just below a half
        inputs.Add(Enumerable.Range(0, 512).Select(i => i % 5 == 0 ? (i % 2 == 0 ? 3f : -3f) : (float)(r.NextDouble() * 6 - 3)).ToArray());
        inputs.Add(Enumerable.Range(0, 512).Select(i => i % 32 == 0 ? 127f : 0.49999997f * (i % 3 - 1)).ToArray());
        inputs.Add(Enumerable.Range(0, 512).Select(i => (float)(r.NextDouble() - 0.5) * 1e-30f).ToArray());
        inputs.Add(Enumerable.Range(0, 512).Select(i => (float)(r.NextDouble() - 0.5) * 1e30f).ToArray());
        foreach (var x in inputs)
            foreach (var t in WeightTypes)
            {
                var act = DTypeInfo.ActivationType(t);
                var want = new byte[DTypeInfo.ByteCount(act, x.Length)];
                Dequant.Quantize(act, x, want);
                foreach (var p in Paths())
                {
                    var got = new byte[want.Length];
                    QuantKernels.QuantizeActivation(p, t, x, got);
                    Assert.Equal(want, got);
                }
            }
    }
}
