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

    /// <summary>A Llama model whose FFN is ReLU or FATReLU: a neuron is active iff gate . x &gt; a threshold, and a = (gate . x) * (up . x).</summary>
    public bool ReluGated => Architecture == Architecture.Llama && Activation != FfnActivation.Silu;

    /// <summary>
    /// The per-layer threshold a run uses when none is calibrated: for ReLU/FATReLU the model's own gate threshold (0 for ReLU),
    /// for SiLU 0 (|silu(g)| &gt;= 0: every neuron active).
    /// </summary>
    public float DefaultThreshold => ReluGated ? ActivationThreshold : 0f;

    public int HeadSize => Dim / Heads;
    public int KvDim => HeadSize * KvHeads;

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
        Require(Heads > 0 && Dim % Heads == 0, "n_heads", $"dim {Dim} is not divisible by n_heads {Heads}");
        Require(KvHeads > 0 && Heads % KvHeads == 0, "n_kv_heads", $"n_heads {Heads} is not a multiple of n_kv_heads {KvHeads}");
        Require(VocabSize > 0 && VocabSize <= 1 << 24, "vocab_size", $"vocab size {VocabSize} is out of range");
        Require(ContextLength > 0 && ContextLength <= 1 << 22, "context_length", $"context length {ContextLength} is out of range");
        Require(Architecture != Architecture.Llama || HeadSize % 2 == 0, "head_size", $"RoPE needs an even head size, got {HeadSize}");
        Require(Architecture == Architecture.Llama || Activation == FfnActivation.Silu, "hidden_act", $"a {FfnActivations.Name(Activation)} activation applies to Llama models only (OPT's FFN is ReLU with biases)");
        Require(float.IsFinite(ActivationThreshold) && (Activation == FfnActivation.FatRelu || ActivationThreshold == 0), "hidden_act_param",
            $"activation threshold {ActivationThreshold} (only FATReLU has one, and it must be finite)");
    }
}
