namespace FlashLm.Formats.HuggingFace;

/// <summary>Canonical (GGUF-style) tensor names to Hugging Face checkpoint names, per architecture.</summary>
public static class HfNames
{
    public const string ConfigFile = "config.json";
    public const string SingleFile = "model.safetensors";
    public const string IndexFile = "model.safetensors.index.json";

    /// <summary>
    /// The Hugging Face name of canonical tensor <paramref name="canonical"/> (with the "model." prefix
    /// transformers writes), or null when the architecture has no such tensor.
    /// </summary>
    public static string? ToHf(Architecture arch, string canonical) =>
        ToHf(new ModelConfig { Architecture = arch, Dim = 1, HiddenDim = 1, Layers = 1, Heads = 1, KvHeads = 1, VocabSize = 1, ContextLength = 1 }, canonical);

    /// <summary>As above for a model of <paramref name="c"/>'s family: Qwen3's q/k norms, a MoE model's router (Mixtral's
    /// block_sparse_moe.gate, Qwen3-MoE's mlp.gate). A MoE model's experts are stored one tensor per expert: see <see cref="Expert"/>.</summary>
    public static string? ToHf(ModelConfig c, string canonical)
    {
        var arch = c.Architecture;
        if (canonical.StartsWith("blk.", StringComparison.Ordinal))
        {
            int dot = canonical.IndexOf('.', 4);
            if (dot < 0 || !int.TryParse(canonical.AsSpan(4, dot - 4), out int layer) || layer < 0) return null;
            string part = canonical[(dot + 1)..];
            string? hf = arch == Architecture.Llama ? LlamaBlock(part, c) : OptBlock(part);
            if (hf is null) return null;
            return arch == Architecture.Llama ? $"model.layers.{layer}.{hf}" : $"model.decoder.layers.{layer}.{hf}";
        }
        return (arch, canonical) switch
        {
            (Architecture.Llama, TensorNames.TokenEmbedding) => "model.embed_tokens.weight",
            (Architecture.Llama, TensorNames.OutputNorm) => "model.norm.weight",
            (Architecture.Opt, TensorNames.TokenEmbedding) => "model.decoder.embed_tokens.weight",
            (Architecture.Opt, TensorNames.PositionEmbedding) => "model.decoder.embed_positions.weight",
            (Architecture.Opt, TensorNames.OutputNorm) => "model.decoder.final_layer_norm.weight",
            (Architecture.Opt, TensorNames.OutputNormBias) => "model.decoder.final_layer_norm.bias",
            (_, TensorNames.Output) => "lm_head.weight",
            _ => null,
        };
    }

    /// <summary>The Hugging Face name of expert <paramref name="expert"/>'s part of layer <paramref name="layer"/>'s experts tensor
    /// <paramref name="experts"/> (ffn_gate_exps, ffn_up_exps, ffn_down_exps): Mixtral's w1 / w3 / w2, Qwen3-MoE's gate_proj / up_proj / down_proj.</summary>
    public static string Expert(ModelConfig c, int layer, string experts, int expert)
    {
        bool qwen = c.Variant == LlamaVariant.Qwen3;
        string w = experts switch
        {
            TensorNames.FfnGateExperts => qwen ? "gate_proj" : "w1",
            TensorNames.FfnUpExperts => qwen ? "up_proj" : "w3",
            TensorNames.FfnDownExperts => qwen ? "down_proj" : "w2",
            _ => throw new ArgumentException($"{experts} is not an experts tensor"),
        };
        return qwen ? $"model.layers.{layer}.mlp.experts.{expert}.{w}.weight" : $"model.layers.{layer}.block_sparse_moe.experts.{expert}.{w}.weight";
    }

    /// <summary>True for a MoE model's experts tensors (stored one tensor per expert in Hugging Face checkpoints).</summary>
    public static bool IsExperts(string canonical) =>
        canonical.EndsWith("." + TensorNames.FfnGateExperts, StringComparison.Ordinal)
        || canonical.EndsWith("." + TensorNames.FfnUpExperts, StringComparison.Ordinal)
        || canonical.EndsWith("." + TensorNames.FfnDownExperts, StringComparison.Ordinal);

    private static string? LlamaBlock(string part, ModelConfig c) => part switch
    {
        TensorNames.AttnQNorm => "self_attn.q_norm.weight",
        TensorNames.AttnKNorm => "self_attn.k_norm.weight",
        TensorNames.FfnRouter => c.Variant == LlamaVariant.Qwen3 ? "mlp.gate.weight" : "block_sparse_moe.gate.weight",
        TensorNames.AttnNorm => "input_layernorm.weight",
        TensorNames.AttnQ => "self_attn.q_proj.weight",
        TensorNames.AttnK => "self_attn.k_proj.weight",
        TensorNames.AttnV => "self_attn.v_proj.weight",
        TensorNames.AttnOutput => "self_attn.o_proj.weight",
        TensorNames.FfnNorm => "post_attention_layernorm.weight",
        TensorNames.FfnGate => "mlp.gate_proj.weight",
        TensorNames.FfnUp => "mlp.up_proj.weight",
        TensorNames.FfnDown => "mlp.down_proj.weight",
        _ => null,
    };

    private static string? OptBlock(string part) => part switch
    {
        TensorNames.AttnNorm => "self_attn_layer_norm.weight",
        TensorNames.AttnNormBias => "self_attn_layer_norm.bias",
        TensorNames.AttnQ => "self_attn.q_proj.weight",
        TensorNames.AttnQBias => "self_attn.q_proj.bias",
        TensorNames.AttnK => "self_attn.k_proj.weight",
        TensorNames.AttnKBias => "self_attn.k_proj.bias",
        TensorNames.AttnV => "self_attn.v_proj.weight",
        TensorNames.AttnVBias => "self_attn.v_proj.bias",
        TensorNames.AttnOutput => "self_attn.out_proj.weight",
        TensorNames.AttnOutputBias => "self_attn.out_proj.bias",
        // OPT's per-layer "final_layer_norm" is the norm before the FFN.
        TensorNames.FfnNorm => "final_layer_norm.weight",
        TensorNames.FfnNormBias => "final_layer_norm.bias",
        TensorNames.FfnUp => "fc1.weight",
        TensorNames.FfnUpBias => "fc1.bias",
        TensorNames.FfnDown => "fc2.weight",
        TensorNames.FfnDownBias => "fc2.bias",
        _ => null,
    };

    /// <summary>True for the Llama tensors whose rows HF stores in the rotate-half RoPE order (not Qwen3's: it rotates halves itself).</summary>
    public static bool IsRopePermuted(ModelConfig c, string canonical) =>
        c.Architecture == Architecture.Llama && !c.RopeHalves
        && canonical.StartsWith("blk.", StringComparison.Ordinal)
        && (canonical.EndsWith("." + TensorNames.AttnQ, StringComparison.Ordinal)
            || canonical.EndsWith("." + TensorNames.AttnK, StringComparison.Ordinal));

    /// <inheritdoc cref="IsRopePermuted(ModelConfig, string)"/>
    public static bool IsRopePermuted(Architecture arch, string canonical) =>
        arch == Architecture.Llama
        && canonical.StartsWith("blk.", StringComparison.Ordinal)
        && (canonical.EndsWith("." + TensorNames.AttnQ, StringComparison.Ordinal)
            || canonical.EndsWith("." + TensorNames.AttnK, StringComparison.Ordinal));
}

/// <summary>
/// The q/k row permutation between FlashLm's canonical RoPE layout and Hugging Face Llama's.
/// <para>
/// FlashLm (like Meta's checkpoints, llama2.c and GGUF) rotates interleaved pairs: within a head of size
/// hs, rows (2i, 2i+1) are the two components of rotation pair i (i = 0 .. hs/2 - 1). HF's Llama
/// ("rotate_half") rotates rows (i, i + hs/2) instead, so its conversion script reorders each head's rows
/// as view(hs/2, 2).transpose: HF row j*(hs/2) + i holds canonical row 2i + j (j = 0, 1). In words: HF
/// first lists every pair's first element, then every pair's second element.
/// </para>
/// </summary>
public static class RopePermutation
{
    /// <summary>The canonical row stored at HF row <paramref name="hfRow"/> (heads of <paramref name="headSize"/> rows).</summary>
    public static long CanonicalRowOfHfRow(long hfRow, int headSize)
    {
        int half = headSize / 2;
        long head = hfRow / headSize;
        int r = (int)(hfRow % headSize);
        int j = r / half, i = r % half;
        return head * headSize + 2 * i + j;
    }

    /// <summary>The HF row that stores canonical row <paramref name="canonicalRow"/>.</summary>
    public static long HfRowOfCanonicalRow(long canonicalRow, int headSize)
    {
        int half = headSize / 2;
        long head = canonicalRow / headSize;
        int r = (int)(canonicalRow % headSize);
        return head * headSize + (r % 2) * half + r / 2;
    }

    /// <summary>
    /// Reorders HF-layout rows (row-major, <paramref name="cols"/> wide) into the canonical layout:
    /// destination row CanonicalRowOfHfRow(r) = source row r. Works one head at a time through a scratch copy.
    /// </summary>
    public static void HfToCanonical<T>(Span<T> rows, int cols, int headSize)
    {
        int headElems = checked(headSize * cols);
        if (headSize % 2 != 0 || rows.Length % headElems != 0)
            throw new ArgumentException($"{rows.Length} elements are not whole heads of {headSize} rows x {cols}");
        var scratch = new T[headElems];
        for (int h = 0; h < rows.Length; h += headElems)
        {
            var head = rows.Slice(h, headElems);
            head.CopyTo(scratch);
            for (int r = 0; r < headSize; r++)
            {
                int dst = (int)CanonicalRowOfHfRow(r, headSize);
                scratch.AsSpan(r * cols, cols).CopyTo(head.Slice(dst * cols, cols));
            }
        }
    }
}
