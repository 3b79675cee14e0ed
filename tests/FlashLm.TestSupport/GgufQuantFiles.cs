using System.Buffers.Binary;
using FlashLm.Formats;
using FlashLm.Formats.Gguf;
using FlashLm.Formats.Synth;

namespace FlashLm.Tests;

/// <summary>
/// Quantized GGUF files written block by block for the import tests: every matrix of one type as random blocks
/// whose F16 scales are set so that the values have a model-like spread, norms F32.
/// </summary>
internal static class GgufQuantFiles
{
    /// <summary>Every quantized type the GGUF import accepts.</summary>
    public static readonly DType[] Types =
        [DType.Q4_0, DType.Q4_1, DType.Q5_0, DType.Q5_1, DType.Q8_0, DType.Q2_K, DType.Q3_K, DType.Q4_K, DType.Q5_K, DType.Q6_K];

    /// <summary>dim 256, hidden 512: every row is whole blocks of every type (K types: 256).</summary>
    public static ModelConfig Shape { get; } = new()
    {
        Architecture = Architecture.Llama, Dim = 256, HiddenDim = 512, Layers = 2, Heads = 4, KvHeads = 2, VocabSize = 384, ContextLength = 64,
    };

    /// <summary>Byte offsets of the F16 scale fields in one block (ggml-common.h: d, and dmin or m where the type has one).</summary>
    public static int[] ScaleFields(DType t) => t switch
    {
        DType.Q4_0 or DType.Q5_0 or DType.Q8_0 => [0],
        DType.Q4_1 or DType.Q5_1 or DType.Q4_K or DType.Q5_K => [0, 2],
        DType.Q2_K => [80, 82],
        DType.Q3_K => [108],
        DType.Q6_K => [208],
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    /// <summary>
    /// Random blocks of <paramref name="t"/> for <paramref name="elements"/> values: random quants and sub-scales,
    /// F16 scales in [0.5, 1) then all multiplied by one factor so that the values' RMS is about <paramref name="rms"/>
    /// (every format is linear in its F16 scales).
    /// </summary>
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

    /// <summary>
    /// Writes a llama GGUF of <paramref name="config"/> whose matrices are all <paramref name="type"/> (random blocks,
    /// RMS 1/sqrt(dim)) and whose norms are F32 near 1; returns the blocks of every matrix by tensor name.
    /// </summary>
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

    /// <summary>Absolute offset of a tensor's ggml type field in the header.</summary>
    public static long TypeFieldOffset(GgufTensorInfo t) => t.InfoOffset + 8 + System.Text.Encoding.UTF8.GetByteCount(t.Name) + 4 + 8 * t.Ne.Length;

    /// <summary>Absolute offset of a tensor's ne[0] field in the header.</summary>
    public static long Ne0Offset(GgufTensorInfo t) => t.InfoOffset + 8 + System.Text.Encoding.UTF8.GetByteCount(t.Name) + 4;
}
