using System.Buffers.Binary;
using BenchmarkDotNet.Attributes;
using FlashLm.Formats;
using FlashLm.Kernels;

namespace FlashLm.Benchmarks;

/// <summary>Random ggml-quantized weights for the quantized-kernel benchmarks.</summary>
internal static class QuantBenchData
{
    /// <summary>
    /// rows x cols weights of <paramref name="type"/>: quantized from random floats where Dequant can quantize to
    /// the type, otherwise random quant bits with a finite F16 scale (and min) in every block.
    /// </summary>
    public static byte[] Weights(DType type, int rows, int cols, int seed)
    {
        var rng = new Random(seed);
        var bytes = new byte[DTypeInfo.ByteCount(type, (long)rows * cols)];
        if (type is DType.Q8_0 or DType.Q4_K or DType.Q5_K or DType.Q6_K or DType.F32 or DType.F16 or DType.BF16)
        {
            var f = new float[cols];
            long rb = DTypeInfo.ByteCount(type, cols);
            for (int r = 0; r < rows; r++)
            {
                for (int i = 0; i < cols; i++) f[i] = (float)(rng.NextDouble() - 0.5) * 0.1f;
                Dequant.Quantize(type, f, bytes.AsSpan((int)(r * rb), (int)rb));
            }
            return bytes;
        }
        rng.NextBytes(bytes);
        int[] halves = type switch
        {
            DType.Q4_0 or DType.Q5_0 => [0],
            DType.Q4_1 or DType.Q5_1 => [0, 2],
            DType.Q2_K => [80, 82],
            DType.Q3_K => [108],
            _ => throw new ArgumentException($"no benchmark data for {type}"),
        };
        int bb = DTypeInfo.BlockBytes(type);
        for (long o = 0; o < bytes.Length; o += bb)
            foreach (int h in halves)
                BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan((int)(o + h)), BitConverter.HalfToUInt16Bits((Half)((rng.NextDouble() - 0.5) * 0.01)));
        return bytes;
    }

    public static float[] Input(int n, int seed)
    {
        var rng = new Random(seed);
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float)rng.NextDouble() - 0.5f;
        return x;
    }

    public static void UsePath(string path)
    {
        var p = Enum.Parse<SimdPath>(path);
        if (!QuantKernels.IsSupported(p)) throw new PlatformNotSupportedException($"this CPU has no {p} path");
        QuantKernels.Path = p;
    }
}

/// <summary>
/// QuantKernels.MatVec on ggml-quantized weights, Llama-7B shapes (4096 x 4096 attention, 11008 x 4096 FFN), per
/// weight type and SIMD path: on all cores (<see cref="MatVec"/>) and as a row loop on one core (<see cref="OneCore"/>).
/// Throughput counts the weight bytes read (the input is quantized once, outside the timing).
/// </summary>
public class QuantMatVecBenchmarks : IBytesPerOperation
{
    public const int Cols = 4096;

    [Params(4096, 11008)] public int Rows { get; set; }
    [ParamsSource(nameof(Types))] public string Type { get; set; } = "Q4_K";

    /// <summary>Every weight type, or the comma-separated list in FLASHLM_BENCH_QUANT_TYPES (e.g. Q4_0,Q4_K).</summary>
    public static IEnumerable<string> Types =>
        Environment.GetEnvironmentVariable("FLASHLM_BENCH_QUANT_TYPES")?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
        ?? ["Q4_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K"];
    [Params("V256", "V512")] public string Path { get; set; } = "V256";

    private DType _t;
    private byte[] _w = [], _xq = [];
    private float[] _y = [];
    private long _rowBytes;

    public long BytesPerOperation(string method) => DTypeInfo.ByteCount(DTypeInfo.Parse(Type), (long)Rows * Cols);

    [GlobalSetup]
    public void Setup()
    {
        QuantBenchData.UsePath(Path);
        _t = DTypeInfo.Parse(Type);
        _w = QuantBenchData.Weights(_t, Rows, Cols, 11);
        _rowBytes = DTypeInfo.ByteCount(_t, Cols);
        _xq = new byte[QuantKernels.ActivationBytes(_t, Cols)];
        QuantKernels.QuantizeActivation(_t, QuantBenchData.Input(Cols, 12), _xq);
        _y = new float[Rows];
    }

    [Benchmark(Description = "MatVec (all cores)")]
    public void MatVec() => QuantKernels.MatVec(_t, _w, Rows, Cols, _xq, _y);

    [Benchmark(Description = "Dot row loop (one core)")]
    public void OneCore()
    {
        var w = _w.AsSpan();
        for (int r = 0; r < Rows; r++) _y[r] = QuantKernels.Dot(_t, w.Slice((int)(r * _rowBytes), (int)_rowBytes), _xq, Cols);
    }
}

/// <summary>
/// QuantKernels.Axpy over 2752 random rows of 4096 (a quarter of an 11008-neuron layer's down projection, stored
/// transposed as the flash layout does), one core. Throughput counts the weight bytes read.
/// </summary>
public class QuantAxpyBenchmarks : IBytesPerOperation
{
    private const int Dim = 4096, Neurons = 11008, Active = 2752;

    [Params("Q4_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K")] public string Type { get; set; } = "Q6_K";
    [Params("V256")] public string Path { get; set; } = "V256";

    private DType _t;
    private byte[] _w = [];
    private int[] _rows = [];
    private float[] _y = [];
    private long _rowBytes;

    public long BytesPerOperation(string method) => Active * DTypeInfo.ByteCount(DTypeInfo.Parse(Type), Dim);

    [GlobalSetup]
    public void Setup()
    {
        QuantBenchData.UsePath(Path);
        _t = DTypeInfo.Parse(Type);
        _w = QuantBenchData.Weights(_t, Neurons, Dim, 21);
        _rowBytes = DTypeInfo.ByteCount(_t, Dim);
        var rng = new Random(22);
        _rows = Enumerable.Range(0, Neurons).OrderBy(_ => rng.Next()).Take(Active).ToArray();
        _y = new float[Dim];
    }

    [Benchmark(Description = "Axpy (one core)")]
    public void Axpy()
    {
        var w = _w.AsSpan();
        foreach (int r in _rows) QuantKernels.Axpy(_t, 0.01f, w.Slice((int)(r * _rowBytes), (int)_rowBytes), _y);
    }
}
