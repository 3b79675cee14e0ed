using FlashLm.Kernels;
using Xunit;

namespace FlashLm.Tests;

/// <summary>Each kernel against a plain scalar reference.</summary>
public class KernelTests
{
    private static float[] Random(int n, int seed)
    {
        var r = new Random(seed);
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)(r.NextDouble() * 2 - 1);
        return a;
    }

    private static float[] ScalarMatVec(float[] w, float[] x, int rows)
    {
        int cols = x.Length;
        var y = new float[rows];
        for (int r = 0; r < rows; r++)
        {
            double s = 0;
            for (int c = 0; c < cols; c++) s += (double)w[r * cols + c] * x[c];
            y[r] = (float)s;
        }
        return y;
    }

    [Theory]
    [InlineData(7, 13)]
    [InlineData(64, 64)]
    [InlineData(600, 512)] // above the parallel threshold
    public void MatVec_F32_and_F16_match_a_scalar_reference(int rows, int cols)
    {
        var w = Random(rows * cols, 1);
        var x = Random(cols, 2);
        var expected = ScalarMatVec(w, x, rows);
        var y = new float[rows];
        MatVec.Rows(w, null, rows, cols, x, 0, y, 0);
        for (int r = 0; r < rows; r++) Assert.True(MathF.Abs(expected[r] - y[r]) < 1e-4f * cols, $"F32 row {r}: {y[r]} vs {expected[r]}");

        var h = w.Select(v => (Half)v).ToArray();
        var expected16 = ScalarMatVec(h.Select(v => (float)v).ToArray(), x, rows);
        MatVec.Rows(null, h, rows, cols, x, 0, y, 0);
        for (int r = 0; r < rows; r++) Assert.True(MathF.Abs(expected16[r] - y[r]) < 1e-4f * cols, $"F16 row {r}: {y[r]} vs {expected16[r]}");
    }

    /// <summary>Every F16 path this CPU runs (scalar always; V256 with AVX2, V512 with AVX-512).</summary>
    private static SimdPath[] HalfPaths => Enum.GetValues<SimdPath>().Where(QuantKernels.IsSupported).ToArray();

    [Theory]
    [InlineData(1)]
    [InlineData(16)]
    [InlineData(31)]
    [InlineData(63)]
    [InlineData(64)]
    [InlineData(65)]
    [InlineData(200)]
    [InlineData(4096)]
    [InlineData(11008)]
    public void Every_half_path_matches_the_scalar_reference_and_the_scaled_input_gives_the_same_float(int n)
    {
        var x = Random(n, 7);
        var w = Random(n, 8).Select(v => (Half)(v * 3)).ToArray();
        double reference = 0;
        for (int i = 0; i < n; i++) reference += (double)(float)w[i] * x[i];
        var scaled = new float[n];
        Assert.True(HalfKernels.ScaleInput(x, scaled));
        var y0 = Random(n, 9);
        var axpyScalar = y0.ToArray();
        HalfKernels.Axpy(SimdPath.Scalar, -0.625f, w, axpyScalar);
        foreach (var path in HalfPaths)
        {
            float dot = HalfKernels.Dot(path, w, x);
            Assert.Equal(reference, dot, 1e-5 * Math.Max(1, Math.Sqrt(n)));
            Assert.Equal(HalfKernels.Dot(SimdPath.Scalar, w, x), dot, 1e-5 * Math.Max(1, Math.Sqrt(n)));
            // Scaling x instead of the weights: the same products, the same float, bit for bit.
            Assert.Equal(BitConverter.SingleToInt32Bits(dot), BitConverter.SingleToInt32Bits(HalfKernels.DotScaled(path, w, scaled)));
            // Axpy: one fused multiply-add per element on every path.
            var y = y0.ToArray();
            HalfKernels.Axpy(path, -0.625f, w, y);
            Assert.Equal(axpyScalar, y);
        }
        // The process's own path is one of them.
        Assert.Equal(HalfKernels.Dot(QuantKernels.Path, w, x), HalfKernels.Dot(w, x));
    }

    [Fact]
    public void An_input_too_large_to_scale_is_refused_and_the_product_takes_the_unscaled_path()
    {
        var x = Random(300, 11);
        x[123] = 40000f;   // 40000 * 2^112 would overflow once multiplied by a large half
        Assert.False(HalfKernels.ScaleInput(x, new float[300]));
        x[123] = float.NaN;
        Assert.False(HalfKernels.ScaleInput(x, new float[300]));
        x[123] = 40000f;
        int rows = 5;
        var w = Random(rows * 300, 12).Select(v => (Half)v).ToArray();
        var y = new float[rows];
        MatVec.F16(w, x, y);
        for (int r = 0; r < rows; r++)
        {
            double reference = 0;
            for (int i = 0; i < 300; i++) reference += (double)(float)w[r * 300 + i] * x[i];
            Assert.Equal(reference, y[r], 1e-2);
            Assert.Equal(HalfKernels.Dot(w.AsSpan(r * 300, 300), x), y[r]);
        }
        // Axpy with a coefficient beyond 2^16: no overflow on any path.
        foreach (var path in HalfPaths)
        {
            var yy = new float[300];
            HalfKernels.Axpy(path, 70000f, w.AsSpan(0, 300), yy);
            for (int i = 0; i < 300; i++) Assert.Equal(70000f * (float)w[i], yy[i]);
        }
    }

    [Fact]
    public void Half_conversion_is_exact_for_every_finite_half()
    {
        // One weight at a time against x = 1: the dot is the converted value itself. All 63,488 finite halves
        // (normals, subnormals, both zeros) in lanes of every vector width and the scalar tail.
        var w = new Half[97];
        var x = new float[97];
        for (int bits = 0; bits < 0x10000; bits++)
        {
            var h = BitConverter.UInt16BitsToHalf((ushort)bits);
            if (!Half.IsFinite(h)) continue;
            int lane = bits % 97;
            Array.Clear(w);
            Array.Clear(x);
            w[lane] = h;
            x[lane] = 1f;
            foreach (var path in HalfPaths)
            {
                Assert.Equal((float)h, HalfKernels.Dot(path, w, x));
                var scaled = new float[97];
                Assert.True(HalfKernels.ScaleInput(x, scaled));
                Assert.Equal((float)h, HalfKernels.DotScaled(path, w, scaled));
                var y = new float[97];
                HalfKernels.Axpy(path, 1f, w, y);
                Assert.Equal((float)h, y[lane]);
            }
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(15)]
    [InlineData(33)]
    [InlineData(64)]
    [InlineData(100)]
    [InlineData(4096)]
    [InlineData(11008)]
    public void Half_dot_and_axpy_match_a_double_reference_at_every_length(int n)
    {
        var x = Random(n, 3);
        var w = Random(n, 4).Select(v => (Half)v).ToArray();
        double dot = 0;
        for (int i = 0; i < n; i++) dot += (double)(float)w[i] * x[i];
        Assert.Equal(dot, HalfKernels.Dot(w, x), 1e-5 * Math.Max(1, Math.Sqrt(n)));
        var y = Random(n, 5);
        var expected = y.Select((v, i) => (float)(v + 0.75 * (float)w[i])).ToArray();
        HalfKernels.Axpy(0.75f, w, y);
        for (int i = 0; i < n; i++) Assert.Equal(expected[i], y[i], 1e-6f);
        Assert.Throws<ArgumentException>(() => HalfKernels.Dot(w, new float[n + 1]));
    }

    [Fact]
    public void RmsNorm_and_LayerNorm_match_the_formulas()
    {
        var x = Random(37, 3);
        var w = Random(37, 4);
        var b = Random(37, 5);
        var o = new float[37];
        Norms.RmsNorm(x, w, o, 1e-5f);
        double ms = x.Sum(v => (double)v * v) / x.Length;
        for (int i = 0; i < x.Length; i++) Assert.Equal(w[i] * x[i] / Math.Sqrt(ms + 1e-5), o[i], 5);
        Norms.LayerNorm(x, w, b, o, 1e-5f);
        double mean = x.Average(v => (double)v);
        double var = x.Sum(v => (v - mean) * (v - mean)) / x.Length;
        for (int i = 0; i < x.Length; i++) Assert.Equal((x[i] - mean) / Math.Sqrt(var + 1e-5) * w[i] + b[i], o[i], 4);
    }

    [Fact]
    public void Softmax_sums_to_one_and_keeps_order()
    {
        var x = new float[] { 1, 3, 2, -5, 4 };
        Norms.Softmax(x);
        Assert.Equal(1.0, x.Sum(), 5);
        Assert.True(x[4] > x[1] && x[1] > x[2] && x[2] > x[0] && x[0] > x[3]);
    }

    [Fact]
    public void Rope_rotates_interleaved_pairs_by_pos_times_frequency()
    {
        int hs = 8, pos = 5;
        var rope = new Rope(hs, 16, 10000f);
        var v = Random(16, 6); // two heads
        var expected = (float[])v.Clone();
        for (int i = 0; i < 16; i += 2)
        {
            double freq = 1.0 / Math.Pow(10000, (i % hs) / (double)hs);
            double a = pos * freq;
            double v0 = expected[i], v1 = expected[i + 1];
            expected[i] = (float)(v0 * Math.Cos(a) - v1 * Math.Sin(a));
            expected[i + 1] = (float)(v0 * Math.Sin(a) + v1 * Math.Cos(a));
        }
        rope.Apply(v, pos);
        for (int i = 0; i < 16; i++) Assert.Equal(expected[i], v[i], 5);
    }

    [Fact]
    public void SwiGlu_and_Relu_match_the_formulas()
    {
        var g = new float[] { -2, -0.5f, 0, 0.5f, 3 };
        var u = new float[] { 1, 2, 3, 4, 5 };
        var expected = g.Select((v, i) => v / (1 + MathF.Exp(-v)) * u[i]).ToArray();
        Norms.SwiGlu(g, u);
        for (int i = 0; i < g.Length; i++) Assert.Equal(expected[i], g[i], 4);
        var r = new float[] { -1, 0, 2 };
        Norms.Relu(r);
        Assert.Equal(new float[] { 0, 0, 2 }, r);
    }
}
