namespace FlashLm.Formats;

/// <summary>The decoder families FlashLm runs.</summary>
public enum Architecture
{
    /// <summary>Llama-2 style: RMSNorm, RoPE (interleaved pairs), grouped-query attention, SwiGLU FFN, no biases.</summary>
    Llama,
    /// <summary>OPT: learned positions (offset 2), LayerNorm with bias, biased attention, ReLU FFN with biases.</summary>
    Opt,
}

/// <summary>
/// The activation of a Llama (gated) FFN: down(act(gate x) * (up x)). SiLU is Llama's own (SwiGLU); ReLU and FATReLU are the
/// ReLU-fied variants (ProSparse, ReluLLaMA): relu(g) = g if g &gt; 0 else 0, fatrelu(g) = g if g &gt; t else 0 (vLLM's
/// FatreluAndMul: torch.nn.functional.threshold(g, t, 0)). OPT's FFN is ReLU with biases whatever this says.
/// </summary>
public enum FfnActivation
{
    Silu,
    Relu,
    FatRelu,
}

/// <summary>The names activations go by in files: Hugging Face's hidden_act, the flashlm.ffn_activation GGUF key, the manifest.</summary>
public static class FfnActivations
{
    public static string Name(FfnActivation a) => a switch
    {
        FfnActivation.Relu => "relu",
        FfnActivation.FatRelu => "fatrelu",
        _ => "silu",
    };

    /// <summary>The activation named <paramref name="name"/>, or null when FlashLm does not run it.</summary>
    public static FfnActivation? Parse(string? name) => name switch
    {
        "silu" => FfnActivation.Silu,
        "relu" => FfnActivation.Relu,
        "fatrelu" => FfnActivation.FatRelu,
        _ => null,
    };

    /// <summary>The names <see cref="Parse"/> knows, for error messages.</summary>
    public const string Known = "silu, relu or fatrelu";
}

/// <summary>
/// The members of the Llama family FlashLm runs (all RMSNorm, RoPE, grouped-query attention, gated FFN). Llama (and
/// Mixtral, a Llama with experts) rotates interleaved pairs of each head, as GGUF llama files store q and k; Qwen3 (and
/// Qwen3-MoE) normalises every head of q and k with RMSNorm before rotating the two halves of each head (NeoX style),
/// and its head width is its own (not dim / heads).
/// </summary>
public enum LlamaVariant
{
    Llama,
    Qwen3,
}

/// <summary>Hyper-parameters of a decoder-only model; the same record for every source format.</summary>
public sealed record ModelConfig
{
    public required Architecture Architecture { get; init; }
    /// <summary>Model (residual stream) width.</summary>
    public required int Dim { get; init; }
    /// <summary>FFN width: the number of neurons per layer.</summary>
    public required int HiddenDim { get; init; }
    public required int Layers { get; init; }
    public required int Heads { get; init; }
    public required int KvHeads { get; init; }
    public required int VocabSize { get; init; }
    /// <summary>Largest number of positions (KV cache length).</summary>
    public required int ContextLength { get; init; }
    public float NormEps { get; init; } = 1e-5f;
    public float RopeTheta { get; init; } = 10000f;
    /// <summary>True when the LM head is the token embedding (no separate output.weight).</summary>
    public bool TiedEmbeddings { get; init; }
    /// <summary>OPT only: positions are looked up at pos + PositionOffset in the learned table.</summary>
    public int PositionOffset { get; init; }
    /// <summary>Llama only: the FFN activation (SiLU unless the source says otherwise).</summary>
    public FfnActivation Activation { get; init; } = FfnActivation.Silu;
    /// <summary>FATReLU only: the threshold t of fatrelu(g) = g if g &gt; t else 0 (Hugging Face's hidden_act_param); 0 otherwise.</summary>
    public float ActivationThreshold { get; init; }

    /// <summary>Llama family only: which member (see <see cref="LlamaVariant"/>).</summary>
    public LlamaVariant Variant { get; init; } = LlamaVariant.Llama;
    /// <summary>Width of one attention head when the model sets it apart from dim / heads (Qwen3's head_dim); 0: dim / heads.</summary>
    public int HeadDim { get; init; }
    /// <summary>Mixture of experts: experts per layer (0: a dense FFN). Each expert is a gated FFN of <see cref="HiddenDim"/> neurons.</summary>
    public int Experts { get; init; }
    /// <summary>Mixture of experts: experts the router picks per token (its top k).</summary>
    public int ExpertsUsed { get; init; }

    /// <summary>True for a mixture-of-experts model.</summary>
    public bool MoE => Experts > 0;
    /// <summary>FFN neurons per layer: <see cref="HiddenDim"/>, or every expert's (experts x hidden: in the flash layout, expert e's
    /// neuron i is neuron e x hidden + i, so an expert is a run of consecutive bundles).</summary>
    public int FfnNeurons => MoE ? checked(Experts * HiddenDim) : HiddenDim;
    /// <summary>Qwen3: q and k are RMS-normalised per head (weights attn_q_norm / attn_k_norm) before RoPE.</summary>
    public bool QkNorm => Architecture == Architecture.Llama && Variant == LlamaVariant.Qwen3;
    /// <summary>RoPE rotates the two halves of each head (NeoX style, Qwen3) instead of interleaved pairs (Llama).</summary>
    public bool RopeHalves => Architecture == Architecture.Llama && Variant == LlamaVariant.Qwen3;

    /// <summary>The model's family in messages: llama, qwen3, qwen3moe or opt, with its experts when it has them ("qwen3moe (8 experts, 2 used)").</summary>
    public string Name => (Architecture == Architecture.Llama ? GgufArchitecture : "opt") + (MoE ? $" ({Experts} experts, {ExpertsUsed} used)" : "");

    /// <summary>The GGUF general.architecture of this model: llama (also Mixtral), qwen3, qwen3moe.</summary>
    public string GgufArchitecture => Variant == LlamaVariant.Qwen3 ? (MoE ? "qwen3moe" : "qwen3") : "llama";

    /// <summary>A Llama model whose FFN is ReLU or FATReLU: a neuron is active iff gate . x &gt; a threshold, and a = (gate . x) * (up . x).</summary>
    public bool ReluGated => Architecture == Architecture.Llama && Activation != FfnActivation.Silu;

    /// <summary>
    /// The per-layer threshold a run uses when none is calibrated: for ReLU/FATReLU the model's own gate threshold (0 for ReLU),
    /// for SiLU 0 (|silu(g)| &gt;= 0: every neuron active).
    /// </summary>
    public float DefaultThreshold => ReluGated ? ActivationThreshold : 0f;

    public int HeadSize => HeadDim > 0 ? HeadDim : Dim / Heads;
    public int KvDim => HeadSize * KvHeads;
    /// <summary>Width of q and of the attention output: heads x head size (dim, unless the head width is set apart).</summary>
    public int QDim => HeadSize * Heads;

    /// <summary>Checks the shape invariants the forward pass relies on; throws naming <paramref name="file"/>.</summary>
    public void Validate(string file)
    {
        void Require(bool ok, string key, string what)
        {
            if (!ok) throw new ModelFormatException(file, what, key);
        }
        Require(Dim > 0, "dim", $"dim must be positive, got {Dim}");
        Require(HiddenDim > 0, "hidden_dim", $"hidden_dim must be positive, got {HiddenDim}");
        Require(Layers > 0 && Layers <= 4096, "n_layers", $"layer count {Layers} is out of range");
        Require(Heads > 0 && (HeadDim > 0 || Dim % Heads == 0), "n_heads", $"dim {Dim} is not divisible by n_heads {Heads}");
        Require(HeadDim >= 0 && HeadDim <= 1 << 16, "head_dim", $"head dim {HeadDim} is out of range");
        Require(KvHeads > 0 && Heads % KvHeads == 0, "n_kv_heads", $"n_heads {Heads} is not a multiple of n_kv_heads {KvHeads}");
        Require(VocabSize > 0 && VocabSize <= 1 << 24, "vocab_size", $"vocab size {VocabSize} is out of range");
        Require(ContextLength > 0 && ContextLength <= 1 << 22, "context_length", $"context length {ContextLength} is out of range");
        Require(Architecture != Architecture.Llama || HeadSize % 2 == 0, "head_size", $"RoPE needs an even head size, got {HeadSize}");
        Require(Architecture == Architecture.Llama || Activation == FfnActivation.Silu, "hidden_act", $"a {FfnActivations.Name(Activation)} activation applies to Llama models only (OPT's FFN is ReLU with biases)");
        Require(Experts >= 0 && Experts <= 1 << 12, "expert_count", $"expert count {Experts} is out of range");
        Require(Experts == 0 ? ExpertsUsed == 0 : ExpertsUsed >= 1 && ExpertsUsed <= Experts, "expert_used_count",
            Experts == 0 ? $"{ExpertsUsed} experts used per token, but the model has no experts" : $"{ExpertsUsed} experts used per token of {Experts}");
        Require(Experts == 0 || Architecture == Architecture.Llama, "expert_count", "experts apply to Llama-family models only");
        Require(Variant == LlamaVariant.Llama || Architecture == Architecture.Llama, "architecture", $"{Variant} is a Llama-family variant");
        Require(Experts == 0 || Activation == FfnActivation.Silu, "hidden_act", "experts are SwiGLU FFNs here (a ReLU-fied MoE is not supported)");
        Require(float.IsFinite(ActivationThreshold) && (Activation == FfnActivation.FatRelu || ActivationThreshold == 0), "hidden_act_param",
            $"activation threshold {ActivationThreshold} (only FATReLU has one, and it must be finite)");
    }
}
