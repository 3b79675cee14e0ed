using System.Numerics.Tensors;
using FlashLm.Formats;

namespace FlashLm.Kernels;

/// <summary>
/// Matrix-vector products y = W x for row-major W (rows, cols): row r of W is the weights of output r.
/// F32 rows go straight to a SIMD dot product; F16 rows through <see cref="HalfKernels.Dot"/>, which converts
/// in registers (TensorPrimitives.Dot over Half is scalar); quantized rows through <see cref="QuantKernels"/>
/// after x is quantized once. Large products are split over cores.
/// </summary>
public static class MatVec
{
    /// <summary>Below this many weights a product runs on the calling thread (fork/join costs more).</summary>
    public const long ParallelThreshold = 1 << 17;

    /// <summary>y[r] = dot(W[r, :], x) for F32 weights <paramref name="w"/> of shape (rows, cols).</summary>
    public static void F32(ReadOnlySpan<float> w, ReadOnlySpan<float> x, Span<float> y)
    {
        int rows = y.Length, cols = x.Length;
        if ((long)rows * cols != w.Length) throw new ArgumentException($"weights hold {w.Length} values, expected {rows} x {cols}");
        for (int r = 0; r < rows; r++) y[r] = TensorPrimitives.Dot(w.Slice(r * cols, cols), x);
    }

    /// <summary>y[r] = dot(W[r, :], x) for F16 weights of shape (rows, cols).</summary>
    public static void F16(ReadOnlySpan<Half> w, ReadOnlySpan<float> x, Span<float> y)
    {
        int rows = y.Length, cols = x.Length;
        if ((long)rows * cols != w.Length) throw new ArgumentException($"weights hold {w.Length} values, expected {rows} x {cols}");
        for (int r = 0; r < rows; r++) y[r] = HalfKernels.Dot(w.Slice(r * cols, cols), x);
    }

    /// <summary>
    /// y[yOffset + r] = dot(W[r, :], x[xOffset ..]) for r in [0, rows), F32 or F16 weights (exactly one
    /// of <paramref name="w32"/>, <paramref name="w16"/> is set); rows are split over cores when large.
    /// </summary>
    public static void Rows(float[]? w32, Half[]? w16, int rows, int cols, float[] x, int xOffset, float[] y, int yOffset)
    {
        if ((long)rows * cols < ParallelThreshold || Environment.ProcessorCount == 1)
            Block(w32, w16, 0, rows, cols, x, xOffset, y, yOffset);
        else
            Split(w32, w16, rows, cols, x, xOffset, y, yOffset);
    }

    // Its own method: the lambda's closure is allocated on entry to the method that declares the captured
    // parameters, so the small products above stay allocation-free.
    private static void Split(float[]? w32, Half[]? w16, int rows, int cols, float[] x, int xOffset, float[] y, int yOffset)
    {
        int chunks = Math.Min(rows, Environment.ProcessorCount * 4); // a few per core, so one slow core does not hold the rest
        Parallel.For(0, chunks, c =>
        {
            int start = (int)((long)rows * c / chunks), end = (int)((long)rows * (c + 1) / chunks);
            Block(w32, w16, start, end, cols, x, xOffset, y, yOffset);
        });
    }

    /// <summary>
    /// y[yOffset + r] = dot(W[r, :], x[xOffset ..]) for r in [0, rows) over quantized weights <paramref name="w"/>
    /// (rows x the bytes of a row of <paramref name="type"/>): x is quantized once to ggml's activation type for
    /// <paramref name="type"/> into this thread's scratch (grown once, then reused: no allocation per call), then
    /// <see cref="QuantKernels.MatVec"/> takes the integer dot products and splits the rows over cores.
    /// </summary>
    public static void Quantized(DType type, byte[] w, int rows, int cols, float[] x, int xOffset, float[] y, int yOffset)
    {
        int n = QuantKernels.ActivationBytes(type, cols);
        var xq = t_activation;
        if (xq is null || xq.Length < n) t_activation = xq = new byte[n];
        var xs = xq.AsSpan(0, n);
        QuantKernels.QuantizeActivation(type, x.AsSpan(xOffset, cols), xs);
        QuantKernels.MatVec(type, w, rows, cols, xs, y.AsSpan(yOffset, rows));
    }

    /// <summary>The calling thread's quantized activation (the largest any product on this thread needed).</summary>
    [ThreadStatic] private static byte[]? t_activation;

    private static void Block(float[]? w32, Half[]? w16, int start, int end, int cols, float[] x, int xOffset, float[] y, int yOffset)
    {
        var xs = x.AsSpan(xOffset, cols);
        var ys = y.AsSpan(yOffset + start, end - start);
        if (w32 is not null) F32(w32.AsSpan(start * cols, (end - start) * cols), xs, ys);
        else F16(w16!.AsSpan(start * cols, (end - start) * cols), xs, ys);
    }
}
