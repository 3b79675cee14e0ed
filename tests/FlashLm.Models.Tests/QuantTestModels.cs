using System.Buffers.Binary;
using FlashLm.Formats;
using FlashLm.Formats.Gguf;
using FlashLm.Formats.Synth;

namespace FlashLm.Tests;

/// <summary>
/// Quantized Llama GGUFs of random blocks for the dense-model tests (the same construction as the Formats tests'
/// GgufQuantFiles; test projects do not share sources): every matrix of one type, F16 scales set so that the weights
/// have RMS 1/sqrt(dim), norms F32 near 1.
/// </summary>
internal static class QuantTestModels
{
    public static readonly DType[] Types =
        [DType.Q4_0, DType.Q4_1, DType.Q5_0, DType.Q5_1, DType.Q8_0, DType.Q2_K, DType.Q3_K, DType.Q4_K, DType.Q5_K, DType.Q6_K];

    /// <summary>dim 256 and hidden 512 (whole K blocks of 256 in every row), 2 layers, 4 heads, 2 KV heads.</summary>
    public static ModelConfig Shape { get; } = new()
    {
        Architecture = Architecture.Llama, Dim = 256, HiddenDim = 512, Layers = 2, Heads = 4, KvHeads = 2, VocabSize = 384, ContextLength = 64,
    };

    /// <summary>Byte offsets of the F16 scale fields in one block (ggml-common.h).</summary>
    private static int[] ScaleFields(DType t) => t switch
    {
        DType.Q4_0 or DType.Q5_0 or DType.Q8_0 => [0],
        DType.Q4_1 or DType.Q5_1 or DType.Q4_K or DType.Q5_K => [0, 2],
        DType.Q2_K => [80, 82],
        DType.Q3_K => [108],
        DType.Q6_K => [208],
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    /// <summary>Random blocks whose values have RMS about <paramref name="rms"/> (formats are linear in their F16 scales).</summary>
    public static byte[] RandomBlocks(DType t, long elements, Random rng, float rms)
    {
        var b = new byte[DTypeInfo.ByteCount(t, elements)];
        rng.NextBytes(b);
        int bb = DTypeInfo.BlockBytes(t);
        var fields = ScaleFields(t);
        for (int at = 0; at < b.Length; at += bb)
            foreach (var f in fields)
                BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(at + f), BitConverter.HalfToUInt16Bits((Half)(0.5 + rng.NextDouble() / 2)));
        var v = new float[elements];
        Dequant.ToF32(t, b, v);
        double sum = 0;
        foreach (var x in v) sum += (double)x * x;
        float scale = rms / (float)Math.Sqrt(sum / v.Length);
        for (int at = 0; at < b.Length; at += bb)
            foreach (var f in fields)
            {
                var h = BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan(at + f)));
                BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(at + f), BitConverter.HalfToUInt16Bits((Half)((float)h * scale)));
            }
        return b;
    }

    /// <summary>Writes the model; returns every matrix's blocks by tensor name.</summary>
    public static Dictionary<string, byte[]> Write(string path, DType type, ModelConfig? config = null, int seed = 1)
    {
        var c = config ?? Shape;
        var rng = new Random(seed);
        var specs = TensorNames.Expected(c).Select(e => new TensorSpec(e.Name, e.Shape.Length == 1 ? DType.F32 : type, e.Shape)).ToList();
        var blocks = specs.Where(s => s.DType == type)
            .ToDictionary(s => s.Name, s => RandomBlocks(type, s.Elements, rng, 1f / MathF.Sqrt(c.Dim)));
        GgufWriter.Write(path, c, SyntheticModel.Vocab(c), specs,
            (spec, first, chunk) => { for (int i = 0; i < chunk.Length; i++) chunk[i] = 1f + 0.1f * MathF.Sin(first + i); },
            blocks: (spec, first, chunk) => blocks[spec.Name].AsSpan((int)first, chunk.Length).CopyTo(chunk));
        return blocks;
    }
}
