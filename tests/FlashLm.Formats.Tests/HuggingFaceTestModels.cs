using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using FlashLm.Formats;
using FlashLm.Formats.HuggingFace;

namespace FlashLm.Tests;

/// <summary>Tiny synthetic Hugging Face folders for the HF tests, with weights computable from (name, index).</summary>
internal static class HuggingFaceTestModels
{
    public static readonly ModelConfig Llama = new()
    {
        Architecture = Architecture.Llama,
        Dim = 32, HiddenDim = 48, Layers = 2, Heads = 4, KvHeads = 2,
        VocabSize = 300, ContextLength = 64, NormEps = 1e-5f, RopeTheta = 10000f,
    };

    public static readonly ModelConfig Opt = new()
    {
        Architecture = Architecture.Opt,
        Dim = 32, HiddenDim = 64, Layers = 2, Heads = 4, KvHeads = 4,
        VocabSize = 512, ContextLength = 40, NormEps = 1e-5f, TiedEmbeddings = true, PositionOffset = 2,
    };

    public static readonly string[] SpmPieces =
        ["\u2581t", "he", "\u2581the", "\u2581a", "in", "\u2581s", "er", "on", "\u2581w", "an", "ed", "\u2581o", "at", "\u2581h", "en", "\u2581c", "\u2581b", "or", "\u2581f", "\u2581the\u2581", "\u2581"];

    /// <summary>A Llama-layout vocabulary with <paramref name="pieces"/> scored by rank (earlier merges first).</summary>
    public static SpmVocab SpmVocabOf(IEnumerable<string> pieces) => SpmVocab.LlamaStyle(pieces.Select((p, rank) => (p, -(float)rank)));

    public static TensorSpec[] Specs(ModelConfig c, DType dtype) =>
        TensorNames.Expected(c).Select(e => new TensorSpec(e.Name, dtype, e.Shape)).ToArray();

    /// <summary>A deterministic value in [-1, 1) for element <paramref name="i"/> of tensor <paramref name="name"/>.</summary>
    public static float Value(string name, long i)
    {
        ulong h = 14695981039346656037UL;
        foreach (var ch in name) h = (h ^ ch) * 1099511628211UL;
        ulong x = h ^ (ulong)i * 0x9E3779B97F4A7C15UL;
        x ^= x >> 33; x *= 0xFF51AFD7ED558CCDUL; x ^= x >> 33; x *= 0xC4CEB9FE1A85EC53UL; x ^= x >> 33;
        return (x >> 40) / (float)(1 << 24) * 2f - 1f;
    }

    public static void Fill(TensorSpec spec, long first, Span<float> chunk)
    {
        for (int k = 0; k < chunk.Length; k++) chunk[k] = Value(spec.Name, first + k);
    }

    /// <summary>The value after storing as <paramref name="t"/> and widening back.</summary>
    public static float Rounded(DType t, float v) => t switch
    {
        DType.F16 => (float)(Half)v,
        DType.BF16 => BitConverter.UInt32BitsToSingle((uint)Dequant.F32ToBf16(v) << 16),
        _ => v,
    };

    public static void WriteLlama(string folder, DType dtype = DType.F32, long maxShardBytes = 4L << 30) =>
        HfWriter.Write(folder, Llama, Specs(Llama, dtype), Fill,
            new Dictionary<string, byte[]> { [SpmTokenizer.ModelFileName] = SentencePieceModelProto.Write(SpmVocabOf(SpmPieces)) },
            1, 2, maxShardBytes: maxShardBytes);

    public static void WriteOpt(string folder, DType dtype = DType.F32, long maxShardBytes = 4L << 30) =>
        HfWriter.Write(folder, Opt, Specs(Opt, dtype), Fill, Gpt2BpeTokenizer.CreateSynthetic(500), 2, 2, maxShardBytes: maxShardBytes);

    /// <summary>Rewrites a safetensors file with its header JSON transformed (the data is kept byte for byte).</summary>
    public static void PatchHeader(string path, Action<JsonObject> patch)
    {
        var bytes = File.ReadAllBytes(path);
        int n = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        var header = (JsonObject)JsonNode.Parse(bytes.AsSpan(8, n))!;
        patch(header);
        var json = Encoding.UTF8.GetBytes(header.ToJsonString());
        var len = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)json.Length);
        File.WriteAllBytes(path, [.. len, .. json, .. bytes.AsSpan(8 + n)]);
    }
}
