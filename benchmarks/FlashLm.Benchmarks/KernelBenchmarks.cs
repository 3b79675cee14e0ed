using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using FlashLm.Formats;
using FlashLm.Kernels;
using FlashLm.Models;

namespace FlashLm.Benchmarks;

/// <summary>
/// The memory-read ceiling the kernels below are compared with: a sum over a 256 MiB F32 array split
/// over all cores (the same split MatVec.Rows uses). Expect roughly the machine's DRAM bandwidth.
/// </summary>
public class DramBenchmarks : IBytesPerOperation
{
    private const int Floats = 64 << 20;
    private float[] _data = [];

    public long BytesPerOperation(string method) => 4L * Floats;

    [GlobalSetup]
    public void Setup()
    {
        _data = new float[Floats];
        new Random(1).NextBytes(MemoryMarshal.AsBytes(_data.AsSpan()));
        for (int i = 0; i < _data.Length; i++) if (!float.IsFinite(_data[i])) _data[i] = 0;
    }

    [Benchmark(Description = "sum 256 MiB F32 (all cores)")]
    public float DramRead()
    {
        int chunks = Environment.ProcessorCount * 4;
        var partial = new float[chunks];
        Parallel.For(0, chunks, c =>
        {
            int start = (int)((long)Floats * c / chunks), end = (int)((long)Floats * (c + 1) / chunks);
            partial[c] = System.Numerics.Tensors.TensorPrimitives.Sum(_data.AsSpan(start, end - start));
        });
        return partial.Sum();
    }
}

/// <summary>y = W x for Llama-7B's attention (4096 x 4096) and FFN (11008 x 4096) matrices, F32 and F16.</summary>
public class MatVecBenchmarks : IBytesPerOperation
{
    [Params(4096, 11008)] public int Rows { get; set; }
    [Params("F32", "F16")] public string DType { get; set; } = "F32";
    public const int Cols = 4096;

    private float[]? _w32;
    private Half[]? _w16;
    private float[] _x = [], _y = [];

    public long BytesPerOperation(string method) => (long)Rows * Cols * (DType == "F16" ? 2 : 4);

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(7);
        _x = Enumerable.Range(0, Cols).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        _y = new float[Rows];
        if (DType == "F16") { _w16 = new Half[Rows * Cols]; for (int i = 0; i < _w16.Length; i++) _w16[i] = (Half)(rng.NextDouble() - 0.5); }
        else { _w32 = new float[Rows * Cols]; for (int i = 0; i < _w32.Length; i++) _w32[i] = (float)rng.NextDouble() - 0.5f; }
    }

    [Benchmark]
    public void MatVec() => FlashLm.Kernels.MatVec.Rows(_w32, _w16, Rows, Cols, _x, 0, _y, 0);
}

/// <summary>
/// Sparse SwiGLU FFN over gathered bundles: <see cref="Active"/> random neurons of an 11008-neuron layer with
/// dim 4096 (a 24 KiB bundle in F16, 48 KiB in F32: gate row, up row, down column), threshold 0 so every
/// neuron is accumulated. Single-threaded, as one layer's compute actor runs it.
/// </summary>
public unsafe class SparseFfnBenchmarks : IBytesPerOperation, IDisposable
{
    private const int Dim = 4096, Neurons = 11008;

    [Params(512, 2752)] public int Active { get; set; }
    [Params("F32", "F16")] public string DType { get; set; } = "F16";

    private byte* _bundles;
    private int[] _rows = [];
    private float[] _x = [], _out = [];

    private int Element => DType == "F16" ? 2 : 4;
    private long Stride => 3L * Dim * Element;

    public long BytesPerOperation(string method) => Active * Stride;

    [GlobalSetup]
    public void Setup()
    {
        _bundles = (byte*)NativeMemory.AlignedAlloc((nuint)(Neurons * Stride), 4096);
        var rng = new Random(3);
        long values = Neurons * 3L * Dim;
        for (long i = 0; i < values; i++)
        {
            float v = (float)(rng.NextDouble() - 0.5) * 0.1f;
            if (Element == 2) ((Half*)_bundles)[i] = (Half)v; else ((float*)_bundles)[i] = v;
        }
        _rows = Enumerable.Range(0, Neurons).OrderBy(_ => rng.Next()).Take(Active).ToArray();
        _x = Enumerable.Range(0, Dim).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        _out = new float[Dim];
    }

    [Benchmark]
    public void SwiGlu()
    {
        bool f16 = Element == 2;
        long part = (long)Dim * Element;
        _out.AsSpan().Clear();
        foreach (int r in _rows)
            SparseFfn.Gated(_bundles + r * Stride, 0, part, 2 * part, f16, _x, FlashLm.Formats.FfnActivation.Silu, 0f, _out);
    }

    [GlobalCleanup]
    public void Dispose()
    {
        if (_bundles != null) NativeMemory.AlignedFree(_bundles);
        _bundles = null;
        GC.SuppressFinalize(this);
    }
}

/// <summary>
/// Attention for one token of one layer over a KV cache filled up to <see cref="Positions"/>: Llama-7B shape
/// (32 heads of 128, no grouping). Throughput counts the keys and values read.
/// </summary>
public class AttentionBenchmarks : IBytesPerOperation
{
    private const int Heads = 32, HeadSize = 128, Dim = Heads * HeadSize;

    [Params(256, 2048)] public int Positions { get; set; }

    private InferenceState _state = null!;

    public long BytesPerOperation(string method) => 2L * Positions * Dim * sizeof(float);

    [GlobalSetup]
    public void Setup()
    {
        var config = new ModelConfig
        {
            Architecture = FlashLm.Formats.Architecture.Llama, Dim = Dim, HiddenDim = 11008, Layers = 1, Heads = Heads, KvHeads = Heads,
            VocabSize = 1, ContextLength = Positions,
        };
        _state = new InferenceState(config, Positions);
        var rng = new Random(5);
        foreach (var a in new[] { _state.KeyCache, _state.ValueCache, _state.Q })
            for (int i = 0; i < a.Length; i++) a[i] = (float)rng.NextDouble() - 0.5f;
    }

    [Benchmark]
    public void Attention() => FlashLm.Models.Attention.Run(_state, 0, Positions - 1, Heads, Heads, HeadSize);
}
