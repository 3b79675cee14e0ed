using System.Buffers.Binary;
using System.Runtime.InteropServices;
using FlashLm.Formats;

namespace FlashLm.Tests;

/// <summary>
/// A quantized model written by the test: every tensor of TensorNames.Expected, back to back in one file, each in the
/// type <c>typeOf(name, shape)</c> picks: F32/F16/Q8_0 from seeded uniform values (Q8_0 by <see cref="Dequant.Quantize"/>),
/// Q4_0 by the formula of ggml's reference quantizer, the K types as random blocks with small scales (any bits are a valid
/// K block; the test needs blocks to copy, not a good quantization). Reads widen any type to F32.
/// </summary>
internal sealed class QuantTestModel : ModelSource
{
    private readonly Dictionary<string, byte[]> _raw = new(StringComparer.Ordinal);

    public override string Format => "quant-test";

    public QuantTestModel(string path, ModelConfig config, Func<string, long[], DType> typeOf, int seed) : base(path)
    {
        Config = config;
        var rng = new Random(seed);
        var tensors = new Dictionary<string, TensorInfo>();
        using (var f = File.Create(path))
        {
            foreach (var (name, shape) in TensorNames.Expected(config))
            {
                var type = shape.Length == 1 ? DType.F32 : typeOf(name, shape);
                var t = new TensorInfo(name, type, shape, path, f.Position);
                var values = new float[t.Elements];
                // Norms near 1 (so the synthetic model stays in a sane range), weights small.
                for (int i = 0; i < values.Length; i++) values[i] = shape.Length == 1 ? 1 + (rng.NextSingle() - 0.5f) * 0.2f : (rng.NextSingle() * 2 - 1) * 0.3f;
                var bytes = Encode(type, values, rng);
                f.Write(bytes);
                _raw[name] = bytes;
                tensors[name] = t;
            }
        }
        Tensors = tensors;
        ValidateTensors();
        Tokenizer = RandomModel.SyntheticTokenizer(config.VocabSize);
    }

    /// <summary>The stored bytes of a tensor.</summary>
    public byte[] Raw(string name) => _raw[name];

    public override TensorData Read(string name)
    {
        var t = Info(name);
        var raw = _raw[name];
        if (t.DType == DType.F16) return new TensorData(t.Shape, MemoryMarshal.Cast<byte, Half>(raw).ToArray());
        var data = new float[t.Elements];
        Dequant.ToF32(t.DType, raw, data);
        return new TensorData(t.Shape, data);
    }

    private static byte[] Encode(DType type, float[] values, Random rng)
    {
        var bytes = new byte[DTypeInfo.ByteCount(type, values.Length)];
        switch (type)
        {
            case DType.F32: MemoryMarshal.AsBytes(values.AsSpan()).CopyTo(bytes); break;
            case DType.F16: MemoryMarshal.AsBytes(values.Select(v => (Half)v).ToArray().AsSpan()).CopyTo(bytes); break;
            case DType.Q4_0: Q4_0(values, bytes); break;
            case DType.Q8_0: Dequant.Quantize(type, values, bytes); break;
            default: RandomKBlocks(type, bytes, rng); break;
        }
        return bytes;
    }

    /// <summary>Random K-type blocks whose F16 super-block scales (d, and dmin where the type has one) are small.</summary>
    private static void RandomKBlocks(DType type, byte[] bytes, Random rng)
    {
        rng.NextBytes(bytes);
        int size = DTypeInfo.BlockBytes(type);
        (int D, int Min, float Scale) at = type switch
        {
            DType.Q4_K or DType.Q5_K => (0, 2, 0.3f / (63 * 15)),
            DType.Q6_K => (208, -1, 0.3f / (127 * 32)),
            _ => throw new ArgumentException($"the test model makes no {type} blocks"),
        };
        for (int b = 0; b < bytes.Length; b += size)
        {
            var block = bytes.AsSpan(b, size);
            BinaryPrimitives.WriteUInt16LittleEndian(block[at.D..], BitConverter.HalfToUInt16Bits((Half)(at.Scale * (0.5f + rng.NextSingle()))));
            if (at.Min >= 0)
                BinaryPrimitives.WriteUInt16LittleEndian(block[at.Min..], BitConverter.HalfToUInt16Bits((Half)(at.Scale * (0.5f + rng.NextSingle()))));
        }
    }

    /// <summary>The reference quantizer's bytes for <paramref name="values"/> (what re-quantizing a down column must give).</summary>
    public static byte[] Quantize(DType type, ReadOnlySpan<float> values)
    {
        var bytes = new byte[DTypeInfo.ByteCount(type, values.Length)];
        Dequant.Quantize(type, values, bytes);
        return bytes;
    }

    /// <summary>Q4_0 as ggml's reference quantizer defines it: d = (the value of largest magnitude) / -8, q = min(15, (int)(x / d + 8.5)).</summary>
    private static void Q4_0(float[] x, byte[] dst)
    {
        for (int b = 0; b < x.Length / 32; b++)
        {
            var v = x.AsSpan(b * 32, 32);
            float amax = 0, max = 0;
            foreach (var e in v)
                if (MathF.Abs(e) > amax)
                {
                    amax = MathF.Abs(e);
                    max = e;
                }
            float d = max / -8, id = d != 0 ? 1 / d : 0;
            var block = dst.AsSpan(b * 18, 18);
            BinaryPrimitives.WriteUInt16LittleEndian(block, BitConverter.HalfToUInt16Bits((Half)d));
            for (int j = 0; j < 16; j++)
            {
                int lo = Math.Min(15, (int)(v[j] * id + 8.5f)), hi = Math.Min(15, (int)(v[j + 16] * id + 8.5f));
                block[2 + j] = (byte)(lo | hi << 4);
            }
        }
    }

    /// <summary>A Llama config small enough for fast tests.</summary>
    public static ModelConfig Llama(int dim, int hidden = 40, int layers = 2, int vocab = 300) => new()
    {
        Architecture = FlashLm.Formats.Architecture.Llama,
        Dim = dim,
        HiddenDim = hidden,
        Layers = layers,
        Heads = 2,
        KvHeads = 1,
        VocabSize = vocab,
        ContextLength = 32,
    };

    /// <summary>FFN matrices in <paramref name="ffn"/> (down in <paramref name="down"/>), the rest Q8_0 (embeddings F16).</summary>
    public static Func<string, long[], DType> Types(DType ffn, DType? down = null) => (name, _) =>
        name.EndsWith("ffn_down.weight", StringComparison.Ordinal) ? down ?? ffn
        : TensorNames.IsFfnMatrix(name) ? ffn
        : name == TensorNames.TokenEmbedding ? DType.F16
        : DType.Q8_0;
}
