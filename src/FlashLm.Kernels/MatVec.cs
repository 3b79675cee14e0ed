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
        var path = QuantKernels.Path;
        // x scaled by 2^112 once for all rows saves a multiply per 16 weights and gives the same floats (HalfKernels.DotScaled).
        var scaled = rows > 1 && path != SimdPath.Scalar ? ScaledInput(x) : null;
        if (scaled is not null)
            for (int r = 0; r < rows; r++) y[r] = HalfKernels.DotScaled(path, w.Slice(r * cols, cols), scaled.AsSpan(0, cols));
        else
            for (int r = 0; r < rows; r++) y[r] = HalfKernels.Dot(path, w.Slice(r * cols, cols), x);
    }

    [ThreadStatic] private static float[]? t_scaled;

    /// <summary>x * 2^112 in this thread's buffer, or null when x is too large to scale (HalfKernels.ScaleInput).</summary>
    private static float[]? ScaledInput(ReadOnlySpan<float> x)
    {
        var buffer = t_scaled is { } b && b.Length >= x.Length ? b : t_scaled = new float[Math.Max(x.Length, 4096)];
        return HalfKernels.ScaleInput(x, buffer) ? buffer : null;
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

    /// <summary>One quantized product of <see cref="Quantized(float[], int, int, ReadOnlySpan{QuantProduct})"/>: y[yOffset + r] = dot(W[r, :], x).</summary>
    public readonly record struct QuantProduct(DType Type, byte[] W, int Rows, float[] Y, int YOffset);

    /// <summary>
    /// Several quantized products of the same input as one split job: chunks are numbered across the products
    /// (product p owns [Start[p], Start[p + 1])), each chunk rows [c * per, ...) of its product in runs of ChunkRows.
    /// </summary>
    private sealed class QuantJob : RowJob
    {
        public const int MaxProducts = 4;
        private readonly byte[]?[] _w = new byte[MaxProducts][], _xq = new byte[MaxProducts][];
        private readonly float[]?[] _y = new float[MaxProducts][];
        private readonly DType[] _type = new DType[MaxProducts];
        private readonly int[] _rows = new int[MaxProducts], _rowBytes = new int[MaxProducts], _xqBytes = new int[MaxProducts],
            _yOffset = new int[MaxProducts], _per = new int[MaxProducts], _start = new int[MaxProducts + 1];
        private int _count, _cols;
        public int Chunks => _start[_count];

        public void Begin(int cols) => (_count, _cols) = (0, cols);

        public void Add(in QuantProduct p, byte[] xq, int xqBytes)
        {
            int i = _count++;
            (_type[i], _w[i], _rows[i], _y[i], _yOffset[i], _xq[i], _xqBytes[i]) = (p.Type, p.W, p.Rows, p.Y, p.YOffset, xq, xqBytes);
            _rowBytes[i] = checked((int)DTypeInfo.ByteCount(p.Type, _cols));
            _per[i] = ChunkSize(p.Rows, _cols);
            _start[i + 1] = _start[i] + (p.Rows + _per[i] - 1) / _per[i];
        }

        public void Clear()
        {
            Array.Clear(_w);
            Array.Clear(_y);
            Array.Clear(_xq);
        }

        public override void Run(int chunk)
        {
            int p = 0;
            while (chunk >= _start[p + 1]) p++;
            int per = _per[p], c = chunk - _start[p], rowBytes = _rowBytes[p];
            int end = Math.Min(_rows[p], (c + 1) * per), step = ChunkRows(_cols);
            for (int start = c * per; start < end; start += step)
            {
                int n = Math.Min(step, end - start); // below QuantKernels' own threshold: it runs on this thread
                QuantKernels.MatVec(_type[p], _w[p].AsSpan((int)((long)start * rowBytes), n * rowBytes), n, _cols,
                    _xq[p].AsSpan(0, _xqBytes[p]), _y[p].AsSpan(_yOffset[p] + start, n));
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
    public static void Quantized(DType type, byte[] w, int rows, int cols, float[] x, int xOffset, float[] y, int yOffset) =>
        Quantized(x, xOffset, cols, [new QuantProduct(type, w, rows, y, yOffset)]);

    /// <summary>
    /// Several quantized products of the same x[xOffset .. + cols] (at most four; Wq, Wk, Wv or gate, up): x is
    /// quantized once per activation type among them, and the rows of all of them are split over cores as one job
    /// (one fork/join instead of one per product). Each y is exactly what <see cref="Quantized(DType, byte[], int, int, float[], int, float[], int)"/> gives.
    /// </summary>
    public static void Quantized(float[] x, int xOffset, int cols, params ReadOnlySpan<QuantProduct> products)
    {
        if (products.Length > QuantJob.MaxProducts) throw new ArgumentException($"{products.Length} products; at most {QuantJob.MaxProducts} at once", nameof(products));
        var acts = t_activations ??= new byte[]?[64];
        long weights = 0;
        ulong quantized = 0; // activation types already quantized in this call
        foreach (var p in products)
        {
            long rowBytes = DTypeInfo.ByteCount(p.Type, cols);
            if (p.W.LongLength != p.Rows * rowBytes)
                throw new ArgumentException($"{p.Type} weights of {p.Rows} x {cols} take {p.Rows * rowBytes} bytes, got {p.W.LongLength}", nameof(products));
            if ((uint)p.YOffset > (uint)p.Y.Length || p.Y.Length - p.YOffset < p.Rows)
                throw new ArgumentException($"the output holds {p.Y.Length - p.YOffset} values past offset {p.YOffset}, expected {p.Rows}", nameof(products));
            int act = (int)DTypeInfo.ActivationType(p.Type), n = QuantKernels.ActivationBytes(p.Type, cols);
            if ((uint)act >= 64) throw new NotSupportedException($"activation type {DTypeInfo.ActivationType(p.Type)}");
            if ((quantized & (1UL << act)) == 0)
            {
                var buf = acts[act];
                if (buf is null || buf.Length < n) acts[act] = buf = new byte[n];
                QuantKernels.QuantizeActivation(p.Type, x.AsSpan(xOffset, cols), buf.AsSpan(0, n));
                quantized |= 1UL << act;
            }
            weights += (long)p.Rows * cols;
        }
        if (weights < ParallelThreshold || Environment.ProcessorCount == 1)
        {
            foreach (var p in products)
            {
                int act = (int)DTypeInfo.ActivationType(p.Type), n = QuantKernels.ActivationBytes(p.Type, cols);
                QuantKernels.MatVec(p.Type, p.W, p.Rows, cols, acts[act].AsSpan(0, n), p.Y.AsSpan(p.YOffset, p.Rows));
            }
            return;
        }
        var job = t_quantJob ??= new QuantJob();
        job.Begin(cols);
        foreach (var p in products) job.Add(p, acts[(int)DTypeInfo.ActivationType(p.Type)]!, QuantKernels.ActivationBytes(p.Type, cols));
        try { RowPool.Shared.Run(job, job.Chunks); }
        finally { job.Clear(); }
    }

    /// <summary>The calling thread's quantized activations, by activation type (each the largest any product on this thread needed).</summary>
    [ThreadStatic] private static byte[]?[]? t_activations;

    private static void Block(float[]? w32, Half[]? w16, int start, int end, int cols, float[] x, int xOffset, float[] y, int yOffset)
    {
        var xs = x.AsSpan(xOffset, cols);
        var ys = y.AsSpan(yOffset + start, end - start);
        if (w32 is not null) F32(w32.AsSpan(start * cols, (end - start) * cols), xs, ys);
        else F16(w16!.AsSpan(start * cols, (end - start) * cols), xs, ys);
    }
}
