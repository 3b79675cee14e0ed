namespace FlashLm.Formats.Gguf;

/// <summary>
/// A GGUF v2/v3 model of the llama architecture (with or without experts: Mixtral), or qwen3 / qwen3moe. GGUF tensor
/// names are already FlashLm's canonical names; ggml's ne[] (innermost first) is reversed into a row-major [out, in]
/// shape (experts: [experts, out, in]). Llama GGUF files store Q and K in the interleaved-pairs RoPE layout (as llama2.c
/// does) and Qwen3 files rotate halves (as Hugging Face does), so nothing is permuted.
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
        if (arch is not ("llama" or "qwen3" or "qwen3moe"))
            throw new ModelFormatException(path,
                $"unsupported architecture '{ModelFormatException.Printable(arch)}' (FlashLm reads llama (with or without experts: Mixtral), qwen3 and qwen3moe GGUF files; OPT and others come from Hugging Face folders)",
                "general.architecture", g.Get("general.architecture").Offset);
        string K(string key) => $"{arch}.{key}";

        var vocab = GgufTokenizer.ReadSpmVocab(g);
        int heads = Int(g, K("attention.head_count"));
        int experts = g.Has(K("expert_count")) ? Count(g, K("expert_count")) : 0;
        if (arch == "qwen3moe" && experts == 0)
            throw new ModelFormatException(path, "a qwen3moe model without experts", K("expert_count"));
        int used = experts > 0 ? Int(g, K("expert_used_count")) : 0;
        // Qwen3 sets its head width apart from dim / heads; keys and values share it here.
        int headDim = 0;
        if (g.Has(K("attention.key_length")))
        {
            headDim = Int(g, K("attention.key_length"));
            int valueLength = g.Has(K("attention.value_length")) ? Int(g, K("attention.value_length")) : headDim;
            if (valueLength != headDim)
                throw new ModelFormatException(path, $"value length {valueLength} differs from key length {headDim} (FlashLm needs one head width)",
                    K("attention.value_length"), g.Get(K("attention.value_length")).Offset);
        }
        string ffnKey = arch == "qwen3moe" ? K("expert_feed_forward_length") : K("feed_forward_length");
        Config = new ModelConfig
        {
            Architecture = Architecture.Llama,
            Variant = arch == "llama" ? LlamaVariant.Llama : LlamaVariant.Qwen3,
            Dim = Int(g, K("embedding_length")),
            HiddenDim = Int(g, ffnKey),
            Layers = Int(g, K("block_count")),
            Heads = heads,
            HeadDim = headDim,
            KvHeads = g.Has(K("attention.head_count_kv")) ? Int(g, K("attention.head_count_kv")) : heads,
            VocabSize = vocab?.Tokens.Length ?? Int(g, K("vocab_size")),
            ContextLength = Int(g, K("context_length")),
            NormEps = g.GetFloat(K("attention.layer_norm_rms_epsilon")),
            RopeTheta = g.GetFloat(K("rope.freq_base"), 10000f),
            TiedEmbeddings = !g.TensorInfos.Any(t => t.Name == TensorNames.Output),
            Activation = Activation(g),
            ActivationThreshold = g.Has(GgufKeys.FfnActivationThreshold) ? g.GetFloat(GgufKeys.FfnActivationThreshold) : 0f,
            Experts = experts,
            ExpertsUsed = used,
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

        if (g.Has("tokenizer.chat_template"))
        {
            ChatTemplate = g.GetString("tokenizer.chat_template");
            if (ChatTemplate.Length > MaxChatTemplateBytes)
                throw new ModelFormatException(path, $"chat template of {ChatTemplate.Length} characters (at most {MaxChatTemplateBytes})", "tokenizer.chat_template", g.Get("tokenizer.chat_template").Offset);
        }
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

    /// <summary>A count that may be 0 (expert_count of a dense model).</summary>
    private static int Count(GgufFile g, string key)
    {
        long v = g.GetInteger(key);
        if (v < 0 || v > int.MaxValue)
            throw new ModelFormatException(g.Path, $"value {v} is out of range", key, g.Get(key).Offset);
        return (int)v;
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
