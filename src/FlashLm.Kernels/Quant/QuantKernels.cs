using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using FlashLm.Formats;

namespace FlashLm.Kernels;

/// <summary>Which instruction width the quantized kernels use.</summary>
public enum SimdPath
{
    /// <summary>Plain loops: the reference every other path is tested against.</summary>
    Scalar,
    /// <summary>256-bit integer dots (AVX2: pmaddubsw / pmaddwd).</summary>
    V256,
    /// <summary>512-bit integer dots (AVX-512 BW).</summary>
    V512,
}

/// <summary>
/// Dot products, matrix-vector products and axpy over ggml block-quantized weights, the way ggml computes them:
/// the input vector x is quantized once (<see cref="QuantizeActivation"/>, to <see cref="DTypeInfo.ActivationType"/>
/// of the weight type) and every row is an integer dot per block scaled by the blocks' F16/F32 scales. F32, F16
/// and BF16 weights take x as plain F32 (its bytes). Nothing here allocates except the fork/join of a large
/// <see cref="MatVec"/>.
/// </summary>
public static unsafe class QuantKernels
{
    /// <summary>Below this many weights a <see cref="MatVec"/> runs on the calling thread (as <see cref="FlashLm.Kernels.MatVec"/>).</summary>
    public const long ParallelThreshold = 1 << 17;

    private static SimdPath _path = InitialPath();

    /// <summary>
    /// The path every call uses. Default: the widest the CPU supports, unless the environment variable
    /// FLASHLM_SIMD (scalar, v256 or v512) names another at start. Setting a path the CPU lacks throws.
    /// </summary>
    public static SimdPath Path
    {
        get => _path;
        set
        {
            if (!IsSupported(value)) throw new PlatformNotSupportedException($"this CPU has no {value} path (widest: {Widest})");
            _path = value;
        }
    }

    /// <summary>True when this CPU can run <paramref name="path"/>.</summary>
    public static bool IsSupported(SimdPath path) => path switch
    {
        SimdPath.Scalar => true,
        SimdPath.V256 => Avx2.IsSupported && Vector256.IsHardwareAccelerated,
        SimdPath.V512 => Avx512BW.IsSupported && Vector512.IsHardwareAccelerated,
        _ => false,
    };

    internal static SimdPath Widest => IsSupported(SimdPath.V512) ? SimdPath.V512 : IsSupported(SimdPath.V256) ? SimdPath.V256 : SimdPath.Scalar;

    private static SimdPath InitialPath() => PathFromSetting(Environment.GetEnvironmentVariable("FLASHLM_SIMD"));

    /// <summary>The path FLASHLM_SIMD=<paramref name="value"/> asks for (null or blank: the widest the CPU has).</summary>
    internal static SimdPath PathFromSetting(string? value)
    {
        if (string.IsNullOrWhiteSpace(value)) return Widest;
        SimdPath p = value.Trim().ToLowerInvariant() switch
        {
            "scalar" => SimdPath.Scalar,
            "v256" => SimdPath.V256,
            "v512" => SimdPath.V512,
            _ => throw new ArgumentException($"FLASHLM_SIMD='{value}' is not one of scalar, v256, v512"),
        };
        if (!IsSupported(p)) throw new PlatformNotSupportedException($"FLASHLM_SIMD={value}: this CPU has no {p} path (widest: {Widest})");
        return p;
    }

    /// <summary>Bytes of an input vector of <paramref name="n"/> values quantized for weights of <paramref name="weight"/>.</summary>
    public static int ActivationBytes(DType weight, int n) => checked((int)DTypeInfo.ByteCount(DTypeInfo.ActivationType(weight), n));

    /// <summary>
    /// xq = x quantized for a dot with weights of <paramref name="weight"/> as llama.cpp's x86 CPU backend quantizes a matmul's
    /// input (<see cref="LlamaCppActivation"/>: Q8_0/Q8_1 with 127 / amax and half-to-even rounding, Q8_K as ggml's reference;
    /// bit-exact on every path), so results track llama.cpp's; for F32/F16/BF16 weights the F32 bytes of x. xq must hold exactly
    /// <see cref="ActivationBytes"/>(weight, x.Length) bytes.
    /// </summary>
    public static void QuantizeActivation(DType weight, ReadOnlySpan<float> x, Span<byte> xq) => QuantizeActivation(_path, weight, x, xq);

    internal static void QuantizeActivation(SimdPath path, DType weight, ReadOnlySpan<float> x, Span<byte> xq)
    {
        var act = DTypeInfo.ActivationType(weight);
        if (path != SimdPath.Scalar && IsSupported(path) && V256Quant.Quantize(act, x, xq)) return;
        LlamaCppActivation.Quantize(act, x, xq);
    }

    /// <summary>
    /// dot(row, x) for one weight row of <paramref name="n"/> values and x quantized by <see cref="QuantizeActivation"/>:
    /// ggml's vec_dot_&lt;weight&gt;_&lt;activation&gt; up to float summation order.
    /// </summary>
    public static float Dot(DType weight, ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq, int n) => Dot(_path, weight, row, xq, n);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot from the first token: no tier-0 phase
    internal static float Dot(SimdPath path, DType weight, ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq, int n)
    {
        CheckRow(weight, row.Length, xq.Length, n);
        var kernel = Kernel(path, weight);
        fixed (byte* w = row)
        fixed (byte* x = xq)
            return kernel(w, x, n);
    }

    /// <summary>
    /// y[r] = dot(row r of W, x) for W of shape (rows, cols) stored row-major as <paramref name="weight"/> (each row
    /// a whole number of blocks) and x quantized by <see cref="QuantizeActivation"/>. Rows are split over cores when
    /// the product is large.
    /// </summary>
    public static void MatVec(DType weight, ReadOnlySpan<byte> w, int rows, int cols, ReadOnlySpan<byte> xq, Span<float> y) =>
        MatVec(_path, weight, w, rows, cols, xq, y);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot from the first token: no tier-0 phase
    internal static void MatVec(SimdPath path, DType weight, ReadOnlySpan<byte> w, int rows, int cols, ReadOnlySpan<byte> xq, Span<float> y)
    {
        if (rows < 0) throw new ArgumentOutOfRangeException(nameof(rows), rows, "negative row count");
        long rowBytes = CheckRow(weight, -1, xq.Length, cols);
        if (w.Length != rows * rowBytes)
            throw new ArgumentException($"{weight} weights of {rows} x {cols} take {rows * rowBytes} bytes, got {w.Length}", nameof(w));
        if (y.Length != rows) throw new ArgumentException($"the output holds {y.Length} values, expected {rows}", nameof(y));
        var kernel = Kernel(path, weight);
        fixed (byte* wp = w)
        fixed (byte* xp = xq)
        fixed (float* yp = y)
        {
            if ((long)rows * cols < ParallelThreshold || Environment.ProcessorCount == 1 || rows < 2)
            {
                Rows(kernel, wp, rowBytes, 0, rows, cols, xp, yp);
                return;
            }
            nint wa = (nint)wp, xa = (nint)xp, ya = (nint)yp;
            int chunks = Math.Min(rows, Environment.ProcessorCount * 4); // a few per core, so one slow core does not hold the rest
            Parallel.For(0, chunks, c =>
            {
                int start = (int)((long)rows * c / chunks), end = (int)((long)rows * (c + 1) / chunks);
                Rows(kernel, (byte*)wa, rowBytes, start, end, cols, (byte*)xa, (float*)ya);
            });
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot from the first token: no tier-0 phase
    private static void Rows(delegate*<byte*, byte*, int, float> kernel, byte* w, long rowBytes, int start, int end, int cols, byte* x, float* y)
    {
        for (int r = start; r < end; r++) y[r] = kernel(w + r * rowBytes, x, cols);
    }

    /// <summary>y += a * dequant(row) for one row of y.Length values stored as <paramref name="weight"/>.</summary>
    public static void Axpy(DType weight, float a, ReadOnlySpan<byte> row, Span<float> y) => Axpy(_path, weight, a, row, y);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot from the first token: no tier-0 phase
    internal static void Axpy(SimdPath path, DType weight, float a, ReadOnlySpan<byte> row, Span<float> y)
    {
        long need = DTypeInfo.ByteCount(weight, y.Length);
        if (row.Length != need) throw new ArgumentException($"{weight}: {y.Length} values take {need} bytes, got {row.Length}", nameof(row));
        switch (weight)
        {
            case DType.F32:
                var w32 = MemoryMarshal.Cast<byte, float>(row);
                if (path == SimdPath.Scalar) { for (int i = 0; i < y.Length; i++) y[i] += a * w32[i]; }
                else TensorPrimitives.MultiplyAdd(w32, a, y, y);
                return;
            case DType.F16:
                if (path == SimdPath.Scalar)
                {
                    var w16 = MemoryMarshal.Cast<byte, Half>(row);
                    for (int i = 0; i < y.Length; i++) y[i] += a * (float)w16[i];
                }
                else HalfKernels.Axpy(a, MemoryMarshal.Cast<byte, Half>(row), y);
                return;
        }
        if (path != SimdPath.Scalar)
        {
            if (!IsSupported(path)) throw new PlatformNotSupportedException($"this CPU has no {path} path (widest: {Widest})");
            V256Dots.EnsureInitialized(); // the axpy kernels read its scale table too
            var kernel = V256Axpy.Kernel(weight);
            if (kernel != null)
            {
                fixed (byte* w = row)
                fixed (float* yp = y)
                    kernel(a, w, yp, y.Length);
                return;
            }
        }
        // Dequantize a chunk of whole blocks onto the stack, then y += a * chunk.
        const int Chunk = 1024;
        int blockElems = DTypeInfo.BlockElements(weight), blockBytes = DTypeInfo.BlockBytes(weight);
        Span<float> buf = stackalloc float[Chunk];
        int per = Chunk / blockElems * blockElems;
        for (int i = 0; i < y.Length; i += per)
        {
            int len = Math.Min(per, y.Length - i);
            var chunk = buf[..len];
            Dequant.ToF32(weight, row.Slice(i / blockElems * blockBytes, len / blockElems * blockBytes), chunk);
            var ys = y.Slice(i, len);
            for (int j = 0; j < len; j++) ys[j] += a * chunk[j];
        }
    }

    /// <summary>Checks n against the block size and the activation length; returns the row's byte count.</summary>
    private static long CheckRow(DType weight, int rowLength, int xqLength, int n)
    {
        if (n < 0) throw new ArgumentOutOfRangeException(nameof(n), n, "negative length");
        long rowBytes = DTypeInfo.ByteCount(weight, n);
        if (rowLength >= 0 && rowLength != rowBytes)
            throw new ArgumentException($"a {weight} row of {n} values takes {rowBytes} bytes, got {rowLength}", "row");
        long xBytes = DTypeInfo.ByteCount(DTypeInfo.ActivationType(weight), n);
        if (xqLength != xBytes)
            throw new ArgumentException($"{n} values quantized for {weight} ({DTypeInfo.ActivationType(weight)}) take {xBytes} bytes, got {xqLength}", "xq");
        return rowBytes;
    }

    /// <summary>The row kernel: (weights, quantized x, n) -> dot.</summary>
    private static delegate*<byte*, byte*, int, float> Kernel(SimdPath path, DType weight)
    {
        if (!IsSupported(path)) throw new PlatformNotSupportedException($"this CPU has no {path} path (widest: {Widest})");
        if (path != SimdPath.Scalar) V256Dots.EnsureInitialized(); // before the kernel's first (fully optimizing) compile
        var k = path switch
        {
            SimdPath.V512 => V512Dots.Kernel(weight),
            SimdPath.V256 => V256Dots.Kernel(weight),
            _ => null,
        };
        return k != null ? k : ScalarKernel(weight);
    }

    private static delegate*<byte*, byte*, int, float> ScalarKernel(DType weight) => weight switch
    {
        DType.F32 => &DotF32,
        DType.F16 => &DotF16,
        DType.BF16 => &DotBf16,
        DType.Q4_0 => &Q4_0,
        DType.Q4_1 => &Q4_1,
        DType.Q5_0 => &Q5_0,
        DType.Q5_1 => &Q5_1,
        DType.Q8_0 => &Q8_0,
        DType.Q2_K => &Q2_K,
        DType.Q3_K => &Q3_K,
        DType.Q4_K => &Q4_K,
        DType.Q5_K => &Q5_K,
        DType.Q6_K => &Q6_K,
        _ => throw new ArgumentException($"{weight} is not a weight type", nameof(weight)),
    };

    // Adapters from (row, x, n) to the block kernels' (row, x, blocks).
    private static float Q4_0(byte* w, byte* x, int n) => ScalarDots.Q4_0(w, x, n / 32);
    private static float Q4_1(byte* w, byte* x, int n) => ScalarDots.Q4_1(w, x, n / 32);
    private static float Q5_0(byte* w, byte* x, int n) => ScalarDots.Q5_0(w, x, n / 32);
    private static float Q5_1(byte* w, byte* x, int n) => ScalarDots.Q5_1(w, x, n / 32);
    private static float Q8_0(byte* w, byte* x, int n) => ScalarDots.Q8_0(w, x, n / 32);
    private static float Q2_K(byte* w, byte* x, int n) => ScalarDots.Q2_K(w, x, n / 256);
    private static float Q3_K(byte* w, byte* x, int n) => ScalarDots.Q3_K(w, x, n / 256);
    private static float Q4_K(byte* w, byte* x, int n) => ScalarDots.Q4_K(w, x, n / 256);
    private static float Q5_K(byte* w, byte* x, int n) => ScalarDots.Q5_K(w, x, n / 256);
    private static float Q6_K(byte* w, byte* x, int n) => ScalarDots.Q6_K(w, x, n / 256);

    private static float DotF32(byte* w, byte* x, int n)
    {
        float s = 0;
        for (int i = 0; i < n; i++) s += ((float*)w)[i] * ((float*)x)[i];
        return s;
    }

    private static float DotF16(byte* w, byte* x, int n)
    {
        float s = 0;
        for (int i = 0; i < n; i++) s += (float)((Half*)w)[i] * ((float*)x)[i];
        return s;
    }

    private static float DotBf16(byte* w, byte* x, int n)
    {
        float s = 0;
        for (int i = 0; i < n; i++) s += BitConverter.Int32BitsToSingle(((ushort*)w)[i] << 16) * ((float*)x)[i];
        return s;
    }

    // Wide float kernels shared by the SIMD paths.
    internal static float DotF32Wide(byte* w, byte* x, int n) => TensorPrimitives.Dot(new ReadOnlySpan<float>(w, n), new ReadOnlySpan<float>(x, n));

    internal static float DotF16Wide(byte* w, byte* x, int n) => HalfKernels.Dot(new ReadOnlySpan<Half>(w, n), new ReadOnlySpan<float>(x, n));
}
