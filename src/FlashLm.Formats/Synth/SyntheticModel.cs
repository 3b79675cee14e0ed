using FlashLm.Formats.Gguf;
using FlashLm.Formats.HuggingFace;

namespace FlashLm.Formats.Synth;

/// <summary>
/// Writes a complete synthetic model (seeded random weights at a given shape plus a small learned tokenizer)
/// as a GGUF file or a Hugging Face safetensors folder, streaming so that real-size models fit through DRAM.
/// The CLI's `synth` command, the built-in default model and the tests all call these.
/// </summary>
public static class SyntheticModel
{
    /// <summary>The seed of the built-in default model (and the CLI's default).</summary>
    public const ulong DefaultSeed = 42;

    /// <summary>Tensor bytes of the model stored as <paramref name="dtype"/> (norms and biases stay F32).</summary>
    public static long TensorBytes(ModelConfig config, DType dtype) =>
        new SyntheticWeights(config, 0).Specs(dtype).Sum(s => s.ByteLength);

    /// <summary>The SentencePiece vocabulary a synthetic Llama model carries (GGUF metadata or tokenizer.model).</summary>
    public static SpmVocab Vocab(ModelConfig config) => SyntheticVocab.Create(config.VocabSize);

    /// <summary>Writes a GGUF v3 file of the llama family (llama, Mixtral-style experts, qwen3, qwen3moe: as the shape says).</summary>
    /// <param name="progress">Receives (bytes written, expected file bytes).</param>
    /// <param name="chatTemplate">Stored as tokenizer.chat_template (Jinja text) when given.</param>
    public static void WriteGguf(string path, ModelConfig config, DType dtype, ulong seed, IProgress<(long Done, long Total)>? progress = null, string? chatTemplate = null)
    {
        if (config.Architecture != Architecture.Llama)
            throw new ArgumentException($"GGUF output supports the llama architecture only, not {config.Architecture}; use the Hugging Face format for OPT");
        CheckDType(dtype);
        config.Validate(path);
        var weights = new SyntheticWeights(config, seed);
        var specs = weights.Specs(dtype);
        long total = specs.Sum(s => s.ByteLength);
        GgufWriter.Write(path, config, Vocab(config), specs, weights.Fill,
            progress is null ? null : new Clamped(progress, total), $"synthetic-{seed}", chatTemplate: chatTemplate);
        long size = new FileInfo(path).Length;
        progress?.Report((size, size));
    }

    /// <summary>
    /// Writes a Hugging Face folder: config.json, model.safetensors (sharded above 4 GiB) and the tokenizer
    /// (Llama: tokenizer.model; OPT: vocab.json and merges.txt).
    /// </summary>
    /// <param name="progress">Receives (tensor bytes written, total tensor bytes).</param>
    public static void WriteHf(string folder, ModelConfig config, DType dtype, ulong seed, IProgress<(long Done, long Total)>? progress = null)
    {
        CheckDType(dtype);
        config.Validate(folder);
        var weights = new SyntheticWeights(config, seed);
        var specs = weights.Specs(dtype);
        long total = specs.Sum(s => s.ByteLength);
        IReadOnlyDictionary<string, byte[]> tokenizer;
        int bos, eos;
        if (config.Architecture == Architecture.Llama)
        {
            var v = Vocab(config);
            tokenizer = new Dictionary<string, byte[]> { [SpmTokenizer.ModelFileName] = SentencePieceModelProto.Write(v) };
            (bos, eos) = (v.Bos, v.Eos);
        }
        else
        {
            // OPT: ids 0..3 are <s>, <pad>, </s>, <unk>; OPT starts and ends sequences with </s> (id 2).
            tokenizer = Gpt2BpeTokenizer.CreateSynthetic(config.VocabSize);
            (bos, eos) = (2, 2);
        }
        HfWriter.Write(folder, config, specs, weights.Fill, tokenizer, bos, eos,
            progress is null ? null : new Clamped(progress, total));
        progress?.Report((total, total));
    }

    /// <summary>Parses "f32" / "f16" (the types a synthetic model can be stored in).</summary>
    public static DType ParseDType(string text) => text.Trim().ToLowerInvariant() switch
    {
        "f32" => DType.F32,
        "f16" => DType.F16,
        _ => throw new ArgumentException($"unsupported dtype '{text}' for a synthetic model (use f32 or f16)"),
    };

    private static void CheckDType(DType dtype)
    {
        if (dtype is not (DType.F32 or DType.F16))
            throw new ArgumentException($"synthetic models are stored as F32 or F16, not {dtype}");
    }

    /// <summary>Adapts a writer's byte count to (done, total); headers make the GGUF count exceed the tensor bytes slightly.</summary>
    private sealed class Clamped(IProgress<(long Done, long Total)> inner, long total) : IProgress<long>
    {
        public void Report(long value) => inner.Report((Math.Min(value, total), total));
    }
}
