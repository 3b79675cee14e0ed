namespace FlashLm.Formats.Gguf;

/// <summary>
/// A GGUF v2/v3 model of the llama architecture. GGUF tensor names are already FlashLm's canonical
/// names; ggml's ne[] (innermost first) is reversed into a row-major [out, in] shape. Llama GGUF files
/// store Q and K in the interleaved-pairs RoPE layout (as llama2.c does), so nothing is permuted.
/// Tensors may be F32, F16, BF16 or any of the types llama-quantize's Q2_K..Q8_0 presets write (Q4_0, Q4_1,
/// Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K); quantized tensors are read as their blocks and stay
/// quantized in DRAM. Other ggml types (IQ*, TQ*, MXFP4, ...) are refused naming the tensor and the type.
/// </summary>
public sealed class GgufModel : ModelSource
{
    public override string Format => "gguf";

    /// <summary>The parsed header (metadata and tensor infos).</summary>
    public GgufFile File { get; }

    /// <param name="allowUnknownPreTokenizer">Fall back, with a warning, when tokenizer.ggml.pre names a pre-tokenizer FlashLm does not know (see <see cref="GgufTokenizer.Read(GgufFile, bool, Action{string}?)"/>).</param>
    public GgufModel(string path, bool allowUnknownPreTokenizer = false) : base(path)
    {
        File = new GgufFile(path);
        var g = File;
        string arch = g.GetString("general.architecture");
        if (arch != "llama")
            throw new ModelFormatException(path,
                $"unsupported architecture '{ModelFormatException.Printable(arch)}' (FlashLm reads llama GGUF files; OPT and others come from Hugging Face folders)",
                "general.architecture", g.Get("general.architecture").Offset);

        var vocab = GgufTokenizer.ReadSpmVocab(g);
        int heads = Int(g, "llama.attention.head_count");
        Config = new ModelConfig
        {
            Architecture = Architecture.Llama,
            Dim = Int(g, "llama.embedding_length"),
            HiddenDim = Int(g, "llama.feed_forward_length"),
            Layers = Int(g, "llama.block_count"),
            Heads = heads,
            KvHeads = g.Has("llama.attention.head_count_kv") ? Int(g, "llama.attention.head_count_kv") : heads,
            VocabSize = vocab?.Tokens.Length ?? Int(g, "llama.vocab_size"),
            ContextLength = Int(g, "llama.context_length"),
            NormEps = g.GetFloat("llama.attention.layer_norm_rms_epsilon"),
            RopeTheta = g.GetFloat("llama.rope.freq_base", 10000f),
            TiedEmbeddings = !g.TensorInfos.Any(t => t.Name == TensorNames.Output),
            Activation = Activation(g),
            ActivationThreshold = g.Has(GgufKeys.FfnActivationThreshold) ? g.GetFloat(GgufKeys.FfnActivationThreshold) : 0f,
        };
        Config.Validate(path);

        var tensors = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
        foreach (var t in g.TensorInfos)
        {
            // Block geometry (ne[0] a multiple of the block, data inside the file) was checked by GgufFile.
            var dt = GgmlTypes.ToDType(t.Type) ?? throw new ModelFormatException(path,
                $"unsupported ggml type {GgmlTypes.Name(t.Type)} (id {(uint)t.Type}) for tensor data at {t.DataOffset}; FlashLm reads {GgmlTypes.Readable} (re-quantise with llama-quantize to one of these)",
                t.Name, t.InfoOffset);
            tensors[t.Name] = new TensorInfo(t.Name, dt, t.RowMajorShape, path, t.DataOffset);
        }
        Tensors = tensors;
        ValidateTensors();

        Tokenizer = vocab is not null
            ? new SpmTokenizer(vocab, path)
            : GgufTokenizer.ReadBpe(g, allowUnknownPreTokenizer, null);
    }

    /// <summary>FlashLm's own activation key (see <see cref="GgufKeys.FfnActivation"/>); SiLU, llama.cpp's, when absent.</summary>
    private static FfnActivation Activation(GgufFile g)
    {
        if (!g.Has(GgufKeys.FfnActivation)) return FfnActivation.Silu;
        string name = g.GetString(GgufKeys.FfnActivation);
        return FfnActivations.Parse(name) ?? throw new ModelFormatException(g.Path,
            $"unknown FFN activation '{ModelFormatException.Printable(name)}' (expected {FfnActivations.Known})", GgufKeys.FfnActivation, g.Get(GgufKeys.FfnActivation).Offset);
    }

    private static int Int(GgufFile g, string key)
    {
        long v = g.GetInteger(key);
        if (v <= 0 || v > int.MaxValue)
            throw new ModelFormatException(g.Path, $"value {v} is out of range", key, g.Get(key).Offset);
        return (int)v;
    }
}

/// <summary>GGUF metadata keys FlashLm defines itself (llama.cpp ignores keys it does not know).</summary>
public static class GgufKeys
{
    /// <summary>
    /// The FFN activation of a ReLU-fied Llama ("relu" or "fatrelu"; absent: "silu"). llama.cpp's llama architecture has no such
    /// key and computes SiLU on every file, so on a ReLU file only its speed compares with FlashLm's, not its output.
    /// </summary>
    public const string FfnActivation = "flashlm.ffn_activation";

    /// <summary>FATReLU's threshold t (F32): fatrelu(g) = g if g &gt; t else 0.</summary>
    public const string FfnActivationThreshold = "flashlm.ffn_activation_threshold";
}
