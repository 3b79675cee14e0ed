using FlashLm.Formats;
using FlashLm.Formats.Synth;
using FlashLm.Models;
using Xunit;
using Xunit.Abstractions;

namespace FlashLm.Tests;

/// <summary>
/// FlashLm's dense Llama and OPT forward passes match <see cref="ScalarReference"/> (double precision, loops
/// only) on synthetic models written by <see cref="SyntheticModel"/>, through every reader path: Hugging
/// Face folders (Llama with its rotate-half q/k permutation, OPT with biases and learned positions) and GGUF.
/// </summary>
public sealed class ScalarReferenceTests(ITestOutputHelper output)
{
    private static readonly ModelConfig SmallLlama = new()
    {
        Architecture = Architecture.Llama, Dim = 64, HiddenDim = 160, Layers = 2, Heads = 4, KvHeads = 2,
        VocabSize = 384, ContextLength = 32,
    };

    private static readonly ModelConfig SmallOpt = new()
    {
        Architecture = Architecture.Opt, Dim = 64, HiddenDim = 256, Layers = 2, Heads = 4, KvHeads = 4,
        VocabSize = 320, ContextLength = 32, TiedEmbeddings = true, PositionOffset = 2,
    };

    private const int Positions = 12;

    /// <summary>Relative tolerance: |ours - reference| &lt;= Tolerance * max(1, max |reference logit|) at each position.</summary>
    private const double Tolerance = 1e-5;

    [Theory]
    [InlineData("llama", DType.F32)]
    [InlineData("llama", DType.F16)]
    [InlineData("opt", DType.F32)]
    [InlineData("opt", DType.F16)]
    public void Dense_forward_of_a_synthetic_hf_folder_matches_the_scalar_reference(string arch, DType dtype)
    {
        var config = arch == "llama" ? SmallLlama : SmallOpt;
        using var dir = new TempDir();
        var folder = dir.Sub("model");
        SyntheticModel.WriteHf(folder, config, dtype, seed: 11);
        using var source = ModelLoader.Open(folder);
        Assert.Equal("huggingface", source.Format);
        Assert.Equal(config with { NormEps = source.Config.NormEps, RopeTheta = source.Config.RopeTheta }, source.Config);
        Assert.Equal(dtype, source.Info(TensorNames.Block(0, TensorNames.FfnUp)).DType);
        Compare(source);
    }

    [Theory]
    [InlineData(DType.F32)]
    [InlineData(DType.F16)]
    public void Dense_forward_of_a_synthetic_gguf_matches_the_scalar_reference(DType dtype)
    {
        using var dir = new TempDir();
        var path = dir.File("small.gguf");
        SyntheticModel.WriteGguf(path, SmallLlama with { TiedEmbeddings = true }, dtype, seed: 12);
        using var source = ModelLoader.Open(path);
        Assert.Equal("gguf", source.Format);
        Assert.True(source.Config.TiedEmbeddings);
        Compare(source);
    }

    /// <summary>
    /// The same seed written as GGUF and as a Hugging Face folder gives the same model: the HF writer's
    /// rotate-half permutation of q/k and the reader's inverse cancel, and both tokenizers encode alike.
    /// </summary>
    [Fact]
    public void Same_seed_as_gguf_and_as_hf_folder_gives_the_same_logits_and_tokens()
    {
        using var dir = new TempDir();
        SyntheticModel.WriteGguf(dir.File("m.gguf"), SmallLlama, DType.F32, seed: 21);
        SyntheticModel.WriteHf(dir.Sub("hf"), SmallLlama, DType.F32, seed: 21);
        using var gguf = ModelLoader.Open(dir.File("m.gguf"));
        using var hf = ModelLoader.Open(dir.Sub("hf"));
        foreach (var text in new[] { "The robot", "Mia went home happy, and the robot sat by the door.", "storm 42!" })
            Assert.Equal(gguf.Tokenizer.Encode(text, true), hf.Tokenizer.Encode(text, true));
        AssertSameLogits(gguf, hf);
    }

    /// <summary>ReLU-fied Llama (ProSparse / ReluLLaMA): relu(gate x) * up x, and FATReLU's threshold, through both readers.</summary>
    [Theory]
    [InlineData("relu", "hf", DType.F32)]
    [InlineData("fatrelu", "hf", DType.F16)]
    [InlineData("relu", "gguf", DType.F16)]
    [InlineData("fatrelu", "gguf", DType.F32)]
    public void Dense_relu_and_fatrelu_llama_match_the_scalar_reference(string act, string format, DType dtype)
    {
        // Gate pre-activations of the synthetic weights are about N(0, 1): FATReLU at 0.5 leaves about 70 % of them out.
        var config = act == "relu"
            ? SmallLlama with { Activation = FfnActivation.Relu }
            : SmallLlama with { Activation = FfnActivation.FatRelu, ActivationThreshold = 0.5f };
        using var dir = new TempDir();
        var path = format == "hf" ? dir.Sub("model") : dir.File("model.gguf");
        if (format == "hf") SyntheticModel.WriteHf(path, config, dtype, seed: 14);
        else SyntheticModel.WriteGguf(path, config, dtype, seed: 14);
        using var source = ModelLoader.Open(path);
        Assert.Equal(config.Activation, source.Config.Activation);
        Assert.Equal(config.ActivationThreshold, source.Config.ActivationThreshold);
        Compare(source);
        // The activation matters: ReLU's logits are not SiLU's, FATReLU's are not plain ReLU's (same weights).
        var other = new ScalarReference(source, act == "relu"
            ? source.Config with { Activation = FfnActivation.Silu }
            : source.Config with { Activation = FfnActivation.Relu, ActivationThreshold = 0 });
        var token = Tokens(source)[0];
        var a = other.Forward(token);
        var b = new ScalarReference(source).Forward(token);
        Assert.True(a.Zip(b).Max(p => Math.Abs(p.First - p.Second)) > 1e-4, $"the {act} reference agrees with the other activation's: the activation was not applied");
    }

    /// <summary>
    /// Mixtral (a llama with experts), Qwen3 (per-head q/k norms, rotated halves, a head width apart from dim / heads) and
    /// Qwen3-MoE as GGUF: the dense model, its experts in DRAM, matches the reference. The router's choice is checked too:
    /// every position uses the configured number of experts, and more than one expert set occurs (the routing is live).
    /// </summary>
    [Theory]
    [InlineData("mixtral-tiny", DType.F32)]
    [InlineData("mixtral-tiny", DType.F16)]
    [InlineData("qwen3-tiny", DType.F32)]
    [InlineData("qwen3-tiny", DType.F16)]
    [InlineData("qwen3moe-tiny", DType.F32)]
    [InlineData("qwen3moe-tiny", DType.F16)]
    public void Dense_moe_and_qwen3_ggufs_match_the_scalar_reference(string shape, DType dtype)
    {
        var config = SyntheticShapes.Get(shape);
        using var dir = new TempDir();
        var path = dir.File("model.gguf");
        SyntheticModel.WriteGguf(path, config, dtype, seed: 15);
        using var source = ModelLoader.Open(path);
        Assert.Equal(config with { NormEps = source.Config.NormEps, RopeTheta = source.Config.RopeTheta }, source.Config);
        Compare(source);
        if (!config.MoE) return;
        var moe = new FlashLm.Models.Llama.DenseMoe(source);
        var sets = new HashSet<string>();
        moe.ObserveRouting = (_, chosen, weights) =>
        {
            Assert.Equal(config.ExpertsUsed, chosen.Length);
            Assert.Equal(1.0, weights.ToArray().Sum(), 5);
            sets.Add(string.Join(",", chosen.ToArray()));
        };
        var net = Transformers.Create(source, moe);
        var state = net.CreateState(Positions);
        var tokens = Tokens(source);
        for (int pos = 0; pos < tokens.Length; pos++) net.Forward(state, tokens[pos], pos);
        Assert.True(sets.Count > 1, "every layer and position routed to the same experts");
    }

    /// <summary>
    /// Mixtral, Qwen3 and Qwen3-MoE as Hugging Face folders (MixtralForCausalLM: block_sparse_moe with w1/w3/w2 per expert and
    /// q/k in rotate-half order; Qwen3ForCausalLM: q_norm / k_norm, head_dim, q/k as they are; Qwen3MoeForCausalLM: mlp.gate
    /// and gate/up/down_proj per expert): the same seed as GGUF gives the same model, and it matches the scalar reference.
    /// </summary>
    [Theory]
    [InlineData("mixtral-tiny")]
    [InlineData("qwen3-tiny")]
    [InlineData("qwen3moe-tiny")]
    public void Moe_and_qwen3_hf_folders_load_as_their_gguf_twins(string shape)
    {
        var config = SyntheticShapes.Get(shape);
        using var dir = new TempDir();
        SyntheticModel.WriteGguf(dir.File("m.gguf"), config, DType.F32, seed: 23);
        SyntheticModel.WriteHf(dir.Sub("hf"), config, DType.F32, seed: 23);
        using var gguf = ModelLoader.Open(dir.File("m.gguf"));
        using var hf = ModelLoader.Open(dir.Sub("hf"));
        Assert.Equal("huggingface", hf.Format);
        Assert.Equal(gguf.Config with { NormEps = hf.Config.NormEps, RopeTheta = hf.Config.RopeTheta }, hf.Config);
        if (config.MoE)
        {
            var name = TensorNames.Block(1, TensorNames.FfnDownExperts);
            Assert.Equal(gguf.ReadF32(name), hf.ReadF32(name));
            Assert.Equal(gguf.ReadSlab(name, 3).F32, hf.ReadSlab(name, 3).F32);
        }
        AssertSameLogits(gguf, hf);
        Compare(hf);
    }

    /// <summary>Top-k of the router: the largest first, ties to the lower expert, against a sort.</summary>
    [Fact]
    public void Router_top_k_picks_the_largest_scores_with_ties_to_the_lower_expert()
    {
        var rnd = new Random(3);
        for (int round = 0; round < 500; round++)
        {
            int n = rnd.Next(1, 40), k = rnd.Next(1, n + 1);
            var scores = Enumerable.Range(0, n).Select(_ => (float)rnd.Next(6)).ToArray(); // many ties
            var chosen = new int[k];
            FlashLm.Models.Llama.DenseMoe.TopK(scores, chosen);
            Assert.Equal(Enumerable.Range(0, n).OrderByDescending(e => scores[e]).ThenBy(e => e).Take(k), chosen);
        }
    }

    /// <summary>The reference itself agrees with llama.cpp, an implementation it shares no code with: Llama, and the experts
    /// of Mixtral, Qwen3's attention and Qwen3-MoE's router as llama.cpp computes them.</summary>
    [Theory]
    [InlineData("tiny")]
    [InlineData("mixtral-tiny")]
    [InlineData("qwen3-tiny")]
    [InlineData("qwen3moe-tiny")]
    public void Scalar_reference_matches_llama_cpp_on_a_synthetic_gguf(string shape)
    {
        using var dir = new TempDir();
        var path = dir.File("tiny.gguf");
        SyntheticModel.WriteGguf(path, SyntheticShapes.Get(shape), DType.F32, seed: 13);
        using var source = ModelLoader.Open(path);
        var tokens = Tokens(source);
        var reference = new ScalarReference(source);
        using var llama = new LlamaCppRunner(path);
        var theirs = llama.Logits(tokens);
        double worst = 0;
        for (int pos = 0; pos < tokens.Length; pos++)
        {
            var ours = reference.Forward(tokens[pos]);
            for (int i = 0; i < ours.Length; i++) worst = Math.Max(worst, Math.Abs(ours[i] - theirs[pos][i]));
        }
        output.WriteLine($"max |reference - llama.cpp| = {worst:E2}");
        Assert.True(worst < 1e-3, $"scalar reference differs from llama.cpp by up to {worst}");
    }

    /// <summary>The dense models of a GGUF and a Hugging Face folder of the same seed give the same logits (within 1e-4) at every position.</summary>
    private static void AssertSameLogits(ModelSource gguf, ModelSource hf)
    {
        var a = Transformers.Create(gguf);
        var b = Transformers.Create(hf);
        var sa = a.CreateState(Positions);
        var sb = b.CreateState(Positions);
        var tokens = Tokens(gguf);
        for (int pos = 0; pos < tokens.Length; pos++)
        {
            var la = a.Forward(sa, tokens[pos], pos);
            var lb = b.Forward(sb, tokens[pos], pos);
            float worst = 0;
            for (int i = 0; i < la.Length; i++) worst = MathF.Max(worst, MathF.Abs(la[i] - lb[i]));
            Assert.True(worst < 1e-4f, $"position {pos}: GGUF and HF logits differ by {worst}");
        }
    }

    private void Compare(ModelSource source)
    {
        var tokens = Tokens(source);
        var reference = new ScalarReference(source);
        var net = Transformers.Create(source);
        var state = net.CreateState(tokens.Length);
        double worstRelative = 0;
        for (int pos = 0; pos < tokens.Length; pos++)
        {
            var expected = reference.Forward(tokens[pos]);
            var actual = net.Forward(state, tokens[pos], pos);
            double scale = Math.Max(1, expected.Max(Math.Abs)), worst = 0;
            for (int i = 0; i < expected.Length; i++) worst = Math.Max(worst, Math.Abs(actual[i] - expected[i]));
            worstRelative = Math.Max(worstRelative, worst / scale);
            Assert.True(worst <= Tolerance * scale, $"position {pos}: logits differ by {worst} (largest reference logit {scale})");
        }
        output.WriteLine($"{source.Format} {source.Config.Architecture}: worst relative logit error {worstRelative:E2} over {tokens.Length} positions");
    }

    /// <summary>BOS, a short prompt, then fixed ids spread over the vocabulary, <see cref="Positions"/> in all.</summary>
    private static int[] Tokens(ModelSource source)
    {
        var t = source.Tokenizer.Encode("The robot", addBos: true).ToList();
        for (int i = 0; t.Count < Positions; i++) t.Add((37 + 101 * i) % source.Config.VocabSize);
        return t.Take(Positions).ToArray();
    }
}
