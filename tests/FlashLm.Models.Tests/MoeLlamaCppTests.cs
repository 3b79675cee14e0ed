using FlashLm.Bench;
using FlashLm.Formats;
using FlashLm.Formats.Gguf;
using FlashLm.Formats.Synth;
using Xunit;
using Xunit.Abstractions;

namespace FlashLm.Tests;

/// <summary>
/// Mixtral-style experts, Qwen3 and Qwen3-MoE in files llama.cpp's own quantizer wrote: FlashLm's dense model follows
/// llama.cpp's greedy continuation teacher-forced (flashlm-bench fidelity), with the same bar as the Llama files of
/// <see cref="LlamaCppQuantTests"/> (the target, or within 5 points of llama.cpp's agreement with itself; the mean logit
/// difference within 1.5x llama.cpp's own). The experts tensors stay 3-D in the file and quantized in DRAM.
/// </summary>
public sealed class MoeLlamaCppTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Theory]
    [InlineData("mixtral-tiny", "F16", 99.0)]
    [InlineData("mixtral-tiny", "Q8_0", 99.0)]
    [InlineData("mixtral-tiny", "Q4_K_M", 97.0)]
    [InlineData("qwen3-tiny", "Q4_K_M", 97.0)]
    [InlineData("qwen3moe-tiny", "F16", 99.0)]
    [InlineData("qwen3moe-tiny", "Q4_K_M", 97.0)]
    [InlineData("qwen3moe-tiny", "Q2_K", 97.0)]
    public void FlashLm_dense_follows_llama_cpp_on_its_own_file(string shape, string preset, double target)
    {
        var config = SyntheticShapes.Get(shape);
        var path = _dir.File($"{shape}.F16.gguf");
        SyntheticModel.WriteGguf(path, config, DType.F16, seed: 42);
        if (preset != "F16")
        {
            var quantized = _dir.File($"{shape}.{preset}.gguf");
            LlamaCppQuantizer.Quantize(path, quantized, preset, threads: 2);
            path = quantized;
            var experts = new GgufFile(path).TensorInfos.Where(t => t.Name.EndsWith("_exps.weight", StringComparison.Ordinal)).ToList();
            Assert.Equal(config.MoE ? 3 * config.Layers : 0, experts.Count);
            Assert.All(experts, t => Assert.NotEqual(GgmlType.F16, t.Type)); // quantized, and read as such
        }
        output.WriteLine($"{shape} {preset}: {QuantizeCommand.TypeMix(path)}");
        var x = Fidelity.Measure(path, Fidelity.DefaultPrompt, 256, threads: 2);
        output.WriteLine(Fidelity.Header);
        output.WriteLine(Fidelity.Row(x));
        LlamaCppQuantTests.MeetsFidelityBar(x, $"{shape} {preset}", target);
    }

    /// <summary>Bad MoE files are refused naming the file and the tensor or key: experts tensors that do not match
    /// expert_count, a router of the wrong shape, more experts used than there are.</summary>
    [Fact]
    public void Moe_files_whose_experts_do_not_match_are_refused_naming_the_tensor()
    {
        var config = SyntheticShapes.Get("mixtral-tiny");
        // expert_count says 4; a file written for 3 experts per tensor does not match it.
        var three = _dir.File("three.gguf");
        SyntheticModel.WriteGguf(three, config with { Experts = 3 }, DType.F32, seed: 1);
        var lied = _dir.File("lied.gguf");
        PatchUInt32(three, lied, "llama.expert_count", 4);
        var e = Assert.Throws<ModelFormatException>(() => ModelLoader.Open(lied));
        Assert.Contains("lied.gguf", e.Message);
        Assert.Contains("blk.0.ffn_gate_inp.weight", e.Message); // the router comes first: 3 experts' logits, 4 expected
        Assert.Contains("[3, 256]", e.Message);
        Assert.Contains("[4, 256]", e.Message);
        // A router of the right shape before experts tensors of the wrong one: the first experts tensor is named.
        var router = _dir.File("router.gguf");
        SyntheticModel.WriteGguf(router, config with { Experts = 4 }, DType.F32, seed: 1);
        var shrunk = _dir.File("shrunk.gguf");
        PatchUInt32(router, shrunk, "llama.feed_forward_length", 128);
        e = Assert.Throws<ModelFormatException>(() => ModelLoader.Open(shrunk));
        Assert.Contains("blk.0.ffn_gate_exps.weight", e.Message);
        Assert.Contains("[4, 256, 256]", e.Message);
        // More experts used than exist.
        var greedy = _dir.File("greedy.gguf");
        PatchUInt32(three, greedy, "llama.expert_used_count", 7);
        e = Assert.Throws<ModelFormatException>(() => ModelLoader.Open(greedy));
        Assert.Contains("greedy.gguf", e.Message);
        Assert.Contains("expert_used_count", e.Message + e.Key);
    }

    /// <summary>Rewrites one UInt32 metadata value of a GGUF file (found by its key's bytes; the value follows the type tag).</summary>
    private static void PatchUInt32(string from, string to, string key, uint value)
    {
        var bytes = File.ReadAllBytes(from);
        var k = System.Text.Encoding.UTF8.GetBytes(key);
        int at = bytes.AsSpan().IndexOf(k);
        Assert.True(at > 0, $"{key} not found");
        int tag = at + k.Length;
        Assert.Equal(4u, BitConverter.ToUInt32(bytes, tag)); // GGUF type 4: UINT32
        BitConverter.TryWriteBytes(bytes.AsSpan(tag + 4), value);
        File.WriteAllBytes(to, bytes);
    }
}
