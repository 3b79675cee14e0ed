using FlashLm.Formats;
using FlashLm.Kernels;
using Xunit;

namespace FlashLm.Tests;

/// <summary>The matvec worker pool: same floats as one thread, several callers at once, errors surface, nothing hangs.</summary>
public class RowPoolTests
{
    private static float[] Random(int n, int seed)
    {
        var r = new Random(seed);
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)(r.NextDouble() * 2 - 1);
        return a;
    }

    /// <summary>Records which chunks ran, and how often.</summary>
    private sealed class CountingJob(int chunks) : RowJob
    {
        public readonly int[] Runs = new int[chunks];
        public override void Run(int chunk) => Interlocked.Increment(ref Runs[chunk]);
    }

    private sealed class ThrowingJob : RowJob
    {
        public override void Run(int chunk)
        {
            if (chunk == 5) throw new InvalidOperationException("chunk 5");
        }
    }

    [Fact]
    public void Every_chunk_runs_exactly_once_with_several_callers_at_once()
    {
        var pool = new RowPool(2);
        Parallel.For(0, 8, caller =>
        {
            for (int rep = 0; rep < 200; rep++)
            {
                int chunks = 1 + (caller * 37 + rep) % 300;
                var job = new CountingJob(chunks);
                pool.Run(job, chunks);
                Assert.All(job.Runs, n => Assert.Equal(1, n));
            }
        });
    }

    [Fact]
    public void A_chunk_that_throws_fails_the_run_and_the_pool_keeps_working()
    {
        var pool = new RowPool(1);
        var e = Assert.Throws<InvalidOperationException>(() => pool.Run(new ThrowingJob(), 64));
        Assert.Equal("chunk 5", e.Message);
        var job = new CountingJob(100);
        pool.Run(job, 100);
        Assert.All(job.Runs, n => Assert.Equal(1, n));
    }

    [Theory]
    [InlineData(DType.Q4_K, 700, 512)]
    [InlineData(DType.Q8_0, 1000, 256)]
    [InlineData(DType.Q6_K, 300, 1024)]
    public void Split_quantized_products_equal_the_single_thread_floats(DType type, int rows, int cols)
    {
        var w = new byte[rows * DTypeInfo.ByteCount(type, cols)];
        var src = Random(rows * cols, 3);
        for (int r = 0; r < rows; r++)
        {
            int rb = (int)DTypeInfo.ByteCount(type, cols);
            Dequant.Quantize(type, src.AsSpan(r * cols, cols), w.AsSpan(r * rb, rb));
        }
        var x = Random(cols + 8, 4);
        var xq = new byte[QuantKernels.ActivationBytes(type, cols)];
        QuantKernels.QuantizeActivation(type, x.AsSpan(8, cols), xq);
        var expected = new float[rows];
        int rowBytes = (int)DTypeInfo.ByteCount(type, cols);
        for (int r = 0; r < rows; r++) expected[r] = QuantKernels.Dot(type, w.AsSpan(r * rowBytes, rowBytes), xq, cols);

        Parallel.For(0, 4, _ =>
        {
            var y = new float[rows + 3];
            for (int rep = 0; rep < 20; rep++)
            {
                MatVec.Quantized(type, w, rows, cols, x, 8, y, 3);
                Assert.Equal(expected, y[3..]);
            }
        });
    }

    [Fact]
    public void Several_products_of_one_input_equal_each_product_alone()
    {
        const int cols = 512;
        (DType Type, int Rows)[] shapes = [(DType.Q4_K, 300), (DType.Q6_K, 40), (DType.Q8_0, 260)];
        var ws = new byte[shapes.Length][];
        for (int i = 0; i < shapes.Length; i++)
        {
            var (type, rows) = shapes[i];
            int rb = (int)DTypeInfo.ByteCount(type, cols);
            ws[i] = new byte[rows * rb];
            var src = Random(rows * cols, 10 + i);
            for (int r = 0; r < rows; r++) Dequant.Quantize(type, src.AsSpan(r * cols, cols), ws[i].AsSpan(r * rb, rb));
        }
        var x = Random(cols + 5, 7);
        var alone = new float[shapes.Length][];
        for (int i = 0; i < shapes.Length; i++)
        {
            alone[i] = new float[shapes[i].Rows];
            MatVec.Quantized(shapes[i].Type, ws[i], shapes[i].Rows, cols, x, 5, alone[i], 0);
        }
        var y0 = new float[300];
        var y12 = new float[2 + 40 + 260];
        MatVec.Quantized(x, 5, cols,
            new MatVec.QuantProduct(DType.Q4_K, ws[0], 300, y0, 0),
            new MatVec.QuantProduct(DType.Q6_K, ws[1], 40, y12, 2),
            new MatVec.QuantProduct(DType.Q8_0, ws[2], 260, y12, 42));
        Assert.Equal(alone[0], y0);
        Assert.Equal(alone[1], y12[2..42]);
        Assert.Equal(alone[2], y12[42..]);
        Assert.Throws<ArgumentException>(() => MatVec.Quantized(x, 5, cols, new MatVec.QuantProduct(DType.Q8_0, ws[2], 261, y12, 42)));
    }
}
