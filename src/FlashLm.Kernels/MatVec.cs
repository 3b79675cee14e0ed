using System.Numerics.Tensors;
using FlashLm.Formats;

namespace FlashLm.Kernels;

/// <summary>
/// Matrix-vector products y = W x for row-major W (rows, cols): row r of W is the weights of output r.
/// F32 rows go straight to a SIMD dot product; F16 rows through <see cref="HalfKernels.Dot"/>, which converts
/// in registers (TensorPrimitives.Dot over Half is scalar); quantized rows through <see cref="QuantKernels"/>
/// after x is quantized once. Large products are split over cores by
/// <see cref="RowPool"/> (its own spinning threads: a decode step runs 150+ products, too short for Parallel.For).
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

    /// <summary>Weights per chunk of a split product: a few microseconds of work, small next to a claim, many per core.</summary>
    internal const int ChunkWeights = 1 << 16;

    /// <summary>Rows per chunk for rows of <paramref name="cols"/> weights: at least one, below <see cref="QuantKernels.ParallelThreshold"/> weights.</summary>
    internal static int ChunkRows(int cols) => Math.Max(1, Math.Min(ChunkWeights, (int)(QuantKernels.ParallelThreshold - 1)) / Math.Max(1, cols));

    /// <summary>
    /// Rows per claimed chunk: about <see cref="ChunksPerCore"/> chunks per core (few claims, long sequential runs
    /// for the prefetcher; a descheduled thread holds up one chunk), never fewer rows than <see cref="ChunkRows"/>.
    /// </summary>
    internal static int ChunkSize(int rows, int cols)
    {
        int chunks = Environment.ProcessorCount * ChunksPerCore;
        return Math.Max(ChunkRows(cols), (rows + chunks - 1) / chunks);
    }

    /// <summary>Chunks per core of a split product.</summary>
    internal const int ChunksPerCore = 8;

    private static void Split(float[]? w32, Half[]? w16, int rows, int cols, float[] x, int xOffset, float[] y, int yOffset)
    {
        var job = t_denseJob ??= new DenseJob();
        job.Set(w32, w16, rows, cols, x, xOffset, y, yOffset);
        try { RowPool.Shared.Run(job, job.Chunks); }
        finally { job.Clear(); }
    }

    /// <summary>A split F32/F16 product: chunk c is rows [c * ChunkSize, ...).</summary>
    private sealed class DenseJob : RowJob
    {
        private float[]? _w32, _x, _y;
        private Half[]? _w16;
        private int _rows, _cols, _xOffset, _yOffset, _per;
        public int Chunks { get; private set; }

        public void Set(float[]? w32, Half[]? w16, int rows, int cols, float[] x, int xOffset, float[] y, int yOffset)
        {
            (_w32, _w16, _rows, _cols, _x, _xOffset, _y, _yOffset) = (w32, w16, rows, cols, x, xOffset, y, yOffset);
            _per = ChunkSize(rows, cols);
            Chunks = (rows + _per - 1) / _per;
        }

        public void Clear() => (_w32, _w16, _x, _y) = (null, null, null, null); // the job does not keep a model alive

        public override void Run(int chunk)
        {
            int start = chunk * _per, end = Math.Min(_rows, start + _per);
            Block(_w32, _w16, start, end, _cols, _x!, _xOffset, _y!, _yOffset);
        }
    }

    /// <summary>A split quantized product over x already quantized: chunk c is rows [c * ChunkSize, ...), in runs of ChunkRows.</summary>
    private sealed class QuantJob : RowJob
    {
        private byte[]? _w, _xq;
        private float[]? _y;
        private DType _type;
        private int _rows, _cols, _rowBytes, _xqBytes, _yOffset, _per;
        public int Chunks { get; private set; }

        public void Set(DType type, byte[] w, int rows, int cols, byte[] xq, int xqBytes, float[] y, int yOffset)
        {
            (_type, _w, _rows, _cols, _xq, _xqBytes, _y, _yOffset) = (type, w, rows, cols, xq, xqBytes, y, yOffset);
            _rowBytes = checked((int)DTypeInfo.ByteCount(type, cols));
            _per = ChunkSize(rows, cols);
            Chunks = (rows + _per - 1) / _per;
        }

        public void Clear() => (_w, _y) = (null, null);

        public override void Run(int chunk)
        {
            int end = Math.Min(_rows, (chunk + 1) * _per), step = ChunkRows(_cols);
            for (int start = chunk * _per; start < end; start += step)
            {
                int n = Math.Min(step, end - start); // below QuantKernels' own threshold: it runs on this thread
                QuantKernels.MatVec(_type, _w.AsSpan((int)((long)start * _rowBytes), n * _rowBytes), n, _cols,
                    _xq.AsSpan(0, _xqBytes), _y.AsSpan(_yOffset + start, n));
            }
        }
    }

    [ThreadStatic] private static DenseJob? t_denseJob;
    [ThreadStatic] private static QuantJob? t_quantJob;

    /// <summary>
    /// y[yOffset + r] = dot(W[r, :], x[xOffset ..]) for r in [0, rows) over quantized weights <paramref name="w"/>
    /// (rows x the bytes of a row of <paramref name="type"/>): x is quantized once to ggml's activation type for
    /// <paramref name="type"/> into this thread's scratch (grown once, then reused: no allocation per call), then
    /// <see cref="QuantKernels.MatVec"/> takes the integer dot products; large products are split over cores by
    /// <see cref="RowPool"/> in chunks of rows small enough that QuantKernels.MatVec runs each on one thread.
    /// </summary>
    public static void Quantized(DType type, byte[] w, int rows, int cols, float[] x, int xOffset, float[] y, int yOffset)
    {
        int n = QuantKernels.ActivationBytes(type, cols);
        var xq = t_activation;
        if (xq is null || xq.Length < n) t_activation = xq = new byte[n];
        var xs = xq.AsSpan(0, n);
        QuantKernels.QuantizeActivation(type, x.AsSpan(xOffset, cols), xs);
        if ((long)rows * cols < ParallelThreshold || Environment.ProcessorCount == 1)
        {
            QuantKernels.MatVec(type, w, rows, cols, xs, y.AsSpan(yOffset, rows));
            return;
        }
        long rowBytes = DTypeInfo.ByteCount(type, cols);
        if (w.LongLength != rows * rowBytes)
            throw new ArgumentException($"{type} weights of {rows} x {cols} take {rows * rowBytes} bytes, got {w.LongLength}", nameof(w));
        if ((uint)yOffset > (uint)y.Length || y.Length - yOffset < rows)
            throw new ArgumentException($"the output holds {y.Length - yOffset} values past offset {yOffset}, expected {rows}", nameof(y));
        var job = t_quantJob ??= new QuantJob();
        job.Set(type, w, rows, cols, xq, n, y, yOffset);
        try { RowPool.Shared.Run(job, job.Chunks); }
        finally { job.Clear(); }
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
