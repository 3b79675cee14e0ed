using Xunit;
using System.Runtime.InteropServices;
using System.Text;
using FlashLm.Formats;
using Architecture = FlashLm.Formats.Architecture;
using FlashLm.Formats.Llama2c;

namespace FlashLm.Tests;

/// <summary>
/// A model with random weights written to one file in the test (every tensor of TensorNames.Expected,
/// back to back, in <see cref="StoredType"/>), and a small synthetic llama2.c tokenizer.
/// </summary>
internal class RandomModel : ModelSource
{
    public override string Format => "random";
    public DType StoredType { get; }

    public RandomModel(string path, ModelConfig config, DType stored, int seed) : base(path)
    {
        StoredType = stored;
        Config = config;
        var rng = new Random(seed);
        var tensors = new Dictionary<string, TensorInfo>();
        using (var f = File.Create(path))
        {
            foreach (var (name, shape) in TensorNames.Expected(config))
            {
                var t = new TensorInfo(name, stored, shape, path, f.Position);
                var values = new float[t.Elements];
                for (int i = 0; i < values.Length; i++) values[i] = rng.NextSingle() * 2 - 1;
                byte[] bytes = stored switch
                {
                    DType.F32 => MemoryMarshal.AsBytes(values.AsSpan()).ToArray(),
                    DType.F16 => MemoryMarshal.AsBytes(values.Select(v => (Half)v).ToArray().AsSpan()).ToArray(),
                    DType.BF16 => MemoryMarshal.AsBytes(values.Select(Dequant.F32ToBf16).ToArray().AsSpan()).ToArray(),
                    _ => throw new ArgumentException(stored.ToString()),
                };
                f.Write(bytes);
                tensors[name] = t;
            }
        }
        Tensors = tensors;
        ValidateTensors();
        Tokenizer = SyntheticTokenizer(config.VocabSize);
    }

    /// <summary>llama2.c-style vocabulary: unk, BOS, EOS, 256 byte tokens, then short letter pieces.</summary>
    public static Llama2cTokenizer SyntheticTokenizer(int vocab)
    {
        var pieces = new byte[vocab][];
        var scores = new float[vocab];
        pieces[0] = "<unk>"u8.ToArray();
        pieces[1] = "\n<s>\n"u8.ToArray();
        pieces[2] = "\n</s>\n"u8.ToArray();
        for (int b = 0; b < 256; b++) pieces[3 + b] = Encoding.ASCII.GetBytes($"<0x{b:X2}>");
        for (int i = 259; i < vocab; i++)
        {
            int k = i - 259;
            pieces[i] = Encoding.ASCII.GetBytes(k < 26 ? $"{(char)('a' + k)}" : $" {(char)('a' + k % 26)}{(char)('a' + k / 26 % 26)}");
            scores[i] = -k;
        }
        return new Llama2cTokenizer(pieces, scores, 8);
    }

    public static ModelConfig Llama(int dim = 16, int hidden = 40, int layers = 2, int vocab = 300) => new()
    {
        Architecture = Architecture.Llama,
        Dim = dim,
        HiddenDim = hidden,
        Layers = layers,
        Heads = 2,
        KvHeads = 1,
        VocabSize = vocab,
        ContextLength = 32,
    };

    public static ModelConfig Opt(int dim = 32, int hidden = 80, int layers = 2, int vocab = 300) => new()
    {
        Architecture = Architecture.Opt,
        Dim = dim,
        HiddenDim = hidden,
        Layers = layers,
        Heads = 4,
        KvHeads = 4,
        VocabSize = vocab,
        ContextLength = 16,
        PositionOffset = 2,
        TiedEmbeddings = false,
    };
}

/// <summary>A random model whose Read fails on one tensor (to interrupt a convert).</summary>
internal sealed class FailingModel(string path, ModelConfig config, string failOn) : RandomModel(path, config, DType.F32, 7)
{
    public override TensorData Read(string name) =>
        name == failOn ? throw new IOException($"simulated read failure on {name}") : base.Read(name);
}

/// <summary>A temporary folder deleted at dispose.</summary>
internal static class TensorAssert
{
    /// <summary>
    /// Same dtype, shape and bytes; except that the flash layout stores vectors (norms, biases) as F32 always,
    /// so an F16 source vector must come back as exactly its F32 widening.
    /// </summary>
    public static void BitIdentical(TensorData expected, TensorData actual, string name)
    {
        if (expected.Shape.Length == 1 && expected.DType == DType.F16)
        {
            Assert.True(actual.DType == DType.F32, $"{name}: vectors are stored F32, got {actual.DType}");
            expected = new TensorData(expected.Shape, expected.ToF32());
        }
        Assert.True(expected.DType == actual.DType, $"{name}: dtype {actual.DType}, expected {expected.DType}");
        Assert.True(expected.Shape.AsSpan().SequenceEqual(actual.Shape), $"{name}: shape differs");
        Assert.True(Raw(expected).SequenceEqual(Raw(actual)), $"{name}: data differs");
    }

    public static ReadOnlySpan<byte> Raw(TensorData d) =>
        d.DType == DType.F32 ? MemoryMarshal.AsBytes(d.F32!.AsSpan()) : MemoryMarshal.AsBytes(d.F16!.AsSpan());
}
