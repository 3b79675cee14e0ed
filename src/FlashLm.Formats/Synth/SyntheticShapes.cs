namespace FlashLm.Formats.Synth;

/// <summary>Named model shapes for synthetic models (real models' hyper-parameters, random weights).</summary>
public static class SyntheticShapes
{
    public static IReadOnlyDictionary<string, ModelConfig> All { get; } = new Dictionary<string, ModelConfig>(StringComparer.OrdinalIgnoreCase)
    {
        // Small enough for tests and the README's default run; big enough to have real structure.
        ["tiny"] = new() { Architecture = Architecture.Llama, Dim = 128, HiddenDim = 352, Layers = 4, Heads = 4, KvHeads = 2, VocabSize = 512, ContextLength = 256 },
        // tiny with every weight row a multiple of 256 elements, so llama.cpp's K-quants (Q2_K..Q6_K, 256-element super-blocks)
        // apply to every matrix instead of falling back to other types; context 512 holds a 256-position fidelity run.
        ["tiny-k"] = new() { Architecture = Architecture.Llama, Dim = 256, HiddenDim = 768, Layers = 4, Heads = 4, KvHeads = 2, VocabSize = 512, ContextLength = 512 },
        // ReLU-fied Llama shapes (ProSparse / ReluLLaMA style: down(relu(gate x) * up x)), the same weights as their SiLU
        // namesakes for a seed. Random weights leave about half the gate pre-activations at or below 0 (about 50 % natural
        // sparsity); 90 % comes from a FATReLU threshold, which calibration sets (see Calibrator).
        ["tiny-relu"] = new() { Architecture = Architecture.Llama, Dim = 128, HiddenDim = 352, Layers = 4, Heads = 4, KvHeads = 2, VocabSize = 512, ContextLength = 256, Activation = FfnActivation.Relu },
        ["opt-tiny"] = new() { Architecture = Architecture.Opt, Dim = 128, HiddenDim = 512, Layers = 4, Heads = 4, KvHeads = 4, VocabSize = 512, ContextLength = 256, TiedEmbeddings = true, PositionOffset = 2 },
        // TinyLlama-1.1B.
        ["llama-1b"] = new() { Architecture = Architecture.Llama, Dim = 2048, HiddenDim = 5632, Layers = 22, Heads = 32, KvHeads = 4, VocabSize = 32000, ContextLength = 2048 },
        // Llama-2-7B.
        ["llama-7b"] = new() { Architecture = Architecture.Llama, Dim = 4096, HiddenDim = 11008, Layers = 32, Heads = 32, KvHeads = 32, VocabSize = 32000, ContextLength = 4096 },
        ["llama-1b-relu"] = new() { Architecture = Architecture.Llama, Dim = 2048, HiddenDim = 5632, Layers = 22, Heads = 32, KvHeads = 4, VocabSize = 32000, ContextLength = 2048, Activation = FfnActivation.Relu },
        ["llama-7b-relu"] = new() { Architecture = Architecture.Llama, Dim = 4096, HiddenDim = 11008, Layers = 32, Heads = 32, KvHeads = 32, VocabSize = 32000, ContextLength = 4096, Activation = FfnActivation.Relu },
        // Mixture of experts and Qwen3, small (tests): rows of 256 elements, so every llama-quantize type applies. Mixtral is a
        // llama with experts (interleaved RoPE); Qwen3 normalises each q and k head and rotates halves, and its head width
        // (128 here) is set apart from dim / heads (64), so its attention is wider than the residual stream, as in Qwen3-30B-A3B.
        // (Small Qwen3s tie their embeddings; random tied embeddings make a model that repeats one token, so these do not.)
        ["mixtral-tiny"] = new() { Architecture = Architecture.Llama, Dim = 256, HiddenDim = 256, Layers = 4, Heads = 4, KvHeads = 2, VocabSize = 512, ContextLength = 512, Experts = 4, ExpertsUsed = 2 },
        ["qwen3-tiny"] = new() { Architecture = Architecture.Llama, Variant = LlamaVariant.Qwen3, Dim = 256, HiddenDim = 768, Layers = 4, Heads = 4, KvHeads = 2, HeadDim = 128, VocabSize = 512, ContextLength = 512, RopeTheta = 1e6f, NormEps = 1e-6f },
        ["qwen3moe-tiny"] = new() { Architecture = Architecture.Llama, Variant = LlamaVariant.Qwen3, Dim = 256, HiddenDim = 256, Layers = 4, Heads = 4, KvHeads = 2, HeadDim = 128, VocabSize = 512, ContextLength = 512, RopeTheta = 1e6f, NormEps = 1e-6f, Experts = 8, ExpertsUsed = 2 },
        // Bench shapes of MoE models, as qwen3moe files: OLMoE-1B-7B's proportions (64 experts of 1024, 8 used, 16 layers) and
        // Qwen3-30B-A3B's (128 experts of 768, 8 used, 48 layers). Vocabularies are the synthetic tokenizer's, not theirs.
        ["olmoe-1b-7b"] = new() { Architecture = Architecture.Llama, Variant = LlamaVariant.Qwen3, Dim = 2048, HiddenDim = 1024, Layers = 16, Heads = 16, KvHeads = 16, HeadDim = 128, VocabSize = 32000, ContextLength = 4096, RopeTheta = 1e4f, NormEps = 1e-5f, Experts = 64, ExpertsUsed = 8 },
        // OLMoE-1B-7B's layer with half its layers (8 of 16): the bench's MoE shape on a disk that holds F16, Q4_K_M and a layout at once.
        ["olmoe-1b-7b-8l"] = new() { Architecture = Architecture.Llama, Variant = LlamaVariant.Qwen3, Dim = 2048, HiddenDim = 1024, Layers = 8, Heads = 16, KvHeads = 16, HeadDim = 128, VocabSize = 32000, ContextLength = 4096, RopeTheta = 1e4f, NormEps = 1e-5f, Experts = 64, ExpertsUsed = 8 },
        // Qwen3-30B-A3B's layer (128 experts of 768, 8 used, 32 heads of 128 over dim 2048, 4 kv heads) with 4 of its 48 layers.
        ["qwen3-30b-a3b-4l"] = new() { Architecture = Architecture.Llama, Variant = LlamaVariant.Qwen3, Dim = 2048, HiddenDim = 768, Layers = 4, Heads = 32, KvHeads = 4, HeadDim = 128, VocabSize = 32000, ContextLength = 4096, RopeTheta = 1e6f, NormEps = 1e-6f, Experts = 128, ExpertsUsed = 8 },
        ["qwen3-30b-a3b"] = new() { Architecture = Architecture.Llama, Variant = LlamaVariant.Qwen3, Dim = 2048, HiddenDim = 768, Layers = 48, Heads = 32, KvHeads = 4, HeadDim = 128, VocabSize = 32000, ContextLength = 4096, RopeTheta = 1e6f, NormEps = 1e-6f, Experts = 128, ExpertsUsed = 8 },
        // OPT-125m and OPT-6.7B.
        ["opt-125m"] = new() { Architecture = Architecture.Opt, Dim = 768, HiddenDim = 3072, Layers = 12, Heads = 12, KvHeads = 12, VocabSize = 50272, ContextLength = 2048, TiedEmbeddings = true, PositionOffset = 2 },
        ["opt-6.7b"] = new() { Architecture = Architecture.Opt, Dim = 4096, HiddenDim = 16384, Layers = 32, Heads = 32, KvHeads = 32, VocabSize = 50272, ContextLength = 2048, TiedEmbeddings = true, PositionOffset = 2 },
    };

    public static ModelConfig Get(string name) =>
        All.TryGetValue(name, out var c) ? c : throw new ArgumentException($"unknown shape '{name}' (known: {string.Join(", ", All.Keys)})");
}
