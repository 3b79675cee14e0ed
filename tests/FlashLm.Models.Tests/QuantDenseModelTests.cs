using FlashLm.Formats;
using FlashLm.Formats.Gguf;
using FlashLm.Kernels;
using FlashLm.Models;
using FlashLm.Models.Llama;
using Xunit;
using Xunit.Abstractions;

namespace FlashLm.Tests;

/// <summary>
/// Quantized matrices kept quantized in DRAM: products through the quantized kernels match the dequantized weights
/// times the quantized activation, row lookups dequantize, and the dense Llama model over a quantized GGUF gives the
/// logits of the same model with every matrix widened to F32, up to the activation's 8-bit quantization.
/// </summary>
public sealed class QuantDenseModelTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    public static TheoryData<DType> Types => [.. GgufQuantFiles.Types];

    [Theory]
    [MemberData(nameof(Types))]
    public void Quantized_matrix_multiplies_as_dequantized_weights_times_the_quantized_activation(DType type)
    {
        const int rows = 16, cols = 512;
        var rng = new Random(7);
        var blocks = GgufQuantFiles.RandomBlocks(type, (long)rows * cols, rng, 0.05f);
        var m = new Matrix(new TensorData([rows, cols], type, blocks));
        Assert.True(m.IsQuantized);
        Assert.Equal(type, m.DType);
        Assert.Equal(blocks.LongLength, m.Bytes);
        Assert.Equal(blocks.Length / rows, m.RowBytes);

        var w = new float[rows * cols];
        Dequant.ToF32(type, blocks, w);
        var row = new float[cols];
        for (int r = 0; r < rows; r++)
        {
            m.CopyRow(r, row);
            Assert.True(row.AsSpan().SequenceEqual(w.AsSpan(r * cols, cols)), $"row {r}");
        }

        var x = new float[cols + 3];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1) * (1 + i % 5);
        var y = new float[rows + 2];
        m.Multiply(x, 3, y, 2);

        // The reference: the weights as stored times x as ggml quantizes it (Q8_0, Q8_1 or Q8_K), in double.
        var act = DTypeInfo.ActivationType(type);
        var xq = new byte[QuantKernels.ActivationBytes(type, cols)];
        QuantKernels.QuantizeActivation(type, x.AsSpan(3, cols), xq);
        var xd = new float[cols];
        Dequant.ToF32(act, xq, xd);
        for (int r = 0; r < rows; r++)
        {
            double want = 0, bound = 0;
            for (int i = 0; i < cols; i++)
            {
                want += (double)w[r * cols + i] * xd[i];
                bound += Math.Abs((double)w[r * cols + i] * xd[i]);
            }
            // Integer sums are exact; what differs is float rounding of the per-block products and, for Q4_1/Q5_1,
            // Q8_1's block sum s stored as F16 (relative error 2^-11 of the min term).
            Assert.True(Math.Abs(y[r + 2] - want) <= 1e-3 * bound + 1e-6, $"{type} row {r}: {y[r + 2]} vs {want} (bound {bound})");
        }
        Assert.Equal(0f, y[0]);
        Assert.Equal(0f, y[1]);

        // Steady state: the quantized activation lives in a per-thread scratch, so a product allocates nothing
        // beyond what the kernel's own call does (measured alone on the same buffers).
        m.Multiply(x, 3, y, 2);
        var ys = new float[rows];
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 10; i++) QuantKernels.MatVec(type, blocks, rows, cols, xq, ys);
        long kernel = GC.GetAllocatedBytesForCurrentThread() - before;
        before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 10; i++) m.Multiply(x, 3, y, 2);
        Assert.Equal(kernel, GC.GetAllocatedBytesForCurrentThread() - before);
        output.WriteLine($"{type}: QuantKernels.MatVec allocates {kernel / 10} bytes per call");
    }

    [Theory]
    [MemberData(nameof(Types))]
    public void Dense_llama_over_a_quantized_gguf_gives_the_dequantized_models_logits(DType type)
    {
        var path = _dir.File($"{type}.gguf");
        var written = GgufQuantFiles.Write(path, type);
        var widened = _dir.File($"{type}.f32.gguf");
        using var qs = new GgufModel(path);
        GgufWriter.Copy(qs, widened, DType.F32);
        using var fs = new GgufModel(widened);
        var q = new LlamaModel(qs);
        var f = new LlamaModel(fs);

        // DRAM holds the quantized bytes: the difference to the F32 model is exactly the matrices' F32 bytes minus their blocks.
        long saved = written.Sum(kv => qs.Info(kv.Key).Elements * 4 - kv.Value.LongLength);
        Assert.Equal(f.WeightBytes - saved, q.WeightBytes);
        Assert.Equal(written.Where(kv => TensorNames.IsFfnMatrix(kv.Key)).Sum(kv => kv.Value.LongLength), ((DenseSwiGlu)q.Ffn).Bytes);

        int[] tokens = [1, 17, 300, 5, 42, 42, 383, 2, 100, 9, 250, 77];
        var sq = q.CreateState(tokens.Length);
        var sf = f.CreateState(tokens.Length);
        double worst = 0, largest = 0;
        int sameTop = 0;
        for (int pos = 0; pos < tokens.Length; pos++)
        {
            var lq = q.Forward(sq, tokens[pos], pos);
            var lf = f.Forward(sf, tokens[pos], pos);
            Assert.All(lq, v => Assert.True(float.IsFinite(v)));
            double norm = Math.Sqrt(lf.Sum(v => (double)v * v));
            double diff = Math.Sqrt(lf.Zip(lq, (a, b) => ((double)a - b) * ((double)a - b)).Sum());
            worst = Math.Max(worst, diff / norm);
            largest = Math.Max(largest, lf.Zip(lq, (a, b) => Math.Abs(a - b)).Max() / (norm / Math.Sqrt(lf.Length)));
            if (Array.IndexOf(lq, lq.Max()) == Array.IndexOf(lf, lf.Max())) sameTop++;
        }
        output.WriteLine($"{type}: relative L2 logit error at most {worst:P3}, largest difference {largest:P2} of the logits' RMS, same top-1 at {sameTop}/{tokens.Length}");
        // The two models differ only in x being rounded to 8 bits (per block of 32 or 256, step max|x| / 127) before
        // every product, as llama.cpp does: about 0.5 % RMS error per product (checked exactly above), compounded over
        // 2 layers x 7 products and the head of a random-weight model. Measured (seed 1): at most 3.9 % (Q3_K), 3.3 %
        // (Q6_K), 2.0-2.3 % (Q4_0, Q5_0, Q8_0), below 0.2 % for the types with a min term (their logits carry a large
        // common offset). A wrong tensor, layout or scale gives errors near 100 %.
        Assert.True(worst <= 0.08, $"{type}: logits differ by {worst:P2} of their L2 norm");
    }
}
