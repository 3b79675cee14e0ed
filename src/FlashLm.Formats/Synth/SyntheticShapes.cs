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
        // OPT-125m and OPT-6.7B.
        ["opt-125m"] = new() { Architecture = Architecture.Opt, Dim = 768, HiddenDim = 3072, Layers = 12, Heads = 12, KvHeads = 12, VocabSize = 50272, ContextLength = 2048, TiedEmbeddings = true, PositionOffset = 2 },
        ["opt-6.7b"] = new() { Architecture = Architecture.Opt, Dim = 4096, HiddenDim = 16384, Layers = 32, Heads = 32, KvHeads = 32, VocabSize = 50272, ContextLength = 2048, TiedEmbeddings = true, PositionOffset = 2 },
    };

    public static ModelConfig Get(string name) =>
        All.TryGetValue(name, out var c) ? c : throw new ArgumentException($"unknown shape '{name}' (known: {string.Join(", ", All.Keys)})");
}
