using System.Text;
using System.Text.Json.Nodes;
using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Formats.Gguf;
using FlashLm.Formats.HuggingFace;
using FlashLm.Formats.Synth;
using Xunit;

namespace FlashLm.Tests;

/// <summary>
/// The FFN activation of ReLU-fied Llama models (ProSparse, ReluLLaMA) through every format: Hugging Face's hidden_act and
/// hidden_act_param, FlashLm's own GGUF keys (flashlm.ffn_activation, ignored by llama.cpp) and the manifest's ffn_activation;
/// an activation FlashLm does not run is refused naming the file and the key.
/// </summary>
public sealed class ReluActivationFormatTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static readonly ModelConfig Small = SyntheticShapes.Get("tiny-relu") with { Layers = 2, ContextLength = 64 };
    private static readonly ModelConfig SmallFatRelu = Small with { Activation = FfnActivation.FatRelu, ActivationThreshold = 0.25f };

    private string WriteHf(ModelConfig c)
    {
        var folder = _dir.Sub("hf");
        SyntheticModel.WriteHf(folder, c, DType.F32, seed: 5);
        return folder;
    }

    private static string WriteGguf(string path, ModelConfig c)
    {
        SyntheticModel.WriteGguf(path, c, DType.F32, seed: 5);
        return path;
    }

    private static void PatchConfig(string folder, Action<JsonNode> patch)
    {
        var path = Path.Combine(folder, HfNames.ConfigFile);
        var c = JsonNode.Parse(File.ReadAllText(path))!;
        patch(c);
        File.WriteAllText(path, c.ToJsonString());
    }

    [Fact]
    public void Hf_config_says_relu_or_fatrelu_with_its_threshold_and_the_reader_keeps_both()
    {
        var folder = WriteHf(SmallFatRelu);
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, HfNames.ConfigFile)))!;
        Assert.Equal("fatrelu", cfg["hidden_act"]!.GetValue<string>());
        Assert.Equal(0.25, cfg["hidden_act_param"]!.GetValue<double>(), 6);
        using (var m = new HfModel(folder))
        {
            Assert.Equal(FfnActivation.FatRelu, m.Config.Activation);
            Assert.Equal(0.25f, m.Config.ActivationThreshold);
            Assert.True(m.Config.ReluGated);
            Assert.Equal(0.25f, m.Config.DefaultThreshold);
        }
        // Plain relu (ReluLLaMA); hidden_act_param is FATReLU's alone and ignored otherwise.
        PatchConfig(folder, c => c["hidden_act"] = "relu");
        using (var m = new HfModel(folder))
        {
            Assert.Equal(FfnActivation.Relu, m.Config.Activation);
            Assert.Equal(0f, m.Config.ActivationThreshold);
        }
        // fatrelu without hidden_act_param: threshold 0 (vLLM's MiniCPM default).
        PatchConfig(folder, c =>
        {
            c["hidden_act"] = "fatrelu";
            c.AsObject().Remove("hidden_act_param");
        });
        using (var m = new HfModel(folder))
        {
            Assert.Equal(FfnActivation.FatRelu, m.Config.Activation);
            Assert.Equal(0f, m.Config.ActivationThreshold);
        }
    }

    [Fact]
    public void ProSparse_architecture_name_reads_as_llama()
    {
        var folder = WriteHf(SmallFatRelu);
        PatchConfig(folder, c => c["architectures"] = new JsonArray("SparseLlamaForCausalLM"));
        using var m = new HfModel(folder);
        Assert.Equal(Architecture.Llama, m.Config.Architecture);
        Assert.Equal(FfnActivation.FatRelu, m.Config.Activation);
    }

    [Theory]
    [InlineData("hidden_act", "gelu")]
    [InlineData("hidden_act", "dReLU")]
    [InlineData("hidden_act_param", "high")]
    public void Unknown_activation_or_a_bad_threshold_is_refused_naming_config_json_and_the_key(string key, string value)
    {
        var folder = WriteHf(SmallFatRelu);
        PatchConfig(folder, c => c[key] = value);
        var e = Assert.Throws<ModelFormatException>(() => new HfModel(folder).Dispose());
        Assert.Equal(Path.Combine(folder, HfNames.ConfigFile), e.FilePath);
        Assert.Equal(key, e.Key);
        if (key == "hidden_act")
        {
            Assert.Contains(value, e.Message);
            Assert.Contains("silu, relu or fatrelu", e.Message);
        }
    }

    [Fact]
    public void Gguf_carries_the_activation_under_flashlm_keys_and_a_silu_file_has_none()
    {
        var relu = WriteGguf(_dir.File("fat.gguf"), SmallFatRelu);
        var g = new GgufFile(relu);
        Assert.Equal("fatrelu", g.GetString(GgufKeys.FfnActivation));
        Assert.Equal(0.25f, g.GetFloat(GgufKeys.FfnActivationThreshold));
        using (var m = new GgufModel(relu))
        {
            Assert.Equal(FfnActivation.FatRelu, m.Config.Activation);
            Assert.Equal(0.25f, m.Config.ActivationThreshold);
        }
        var silu = WriteGguf(_dir.File("silu.gguf"), Small with { Activation = FfnActivation.Silu });
        var s = new GgufFile(silu);
        Assert.False(s.Has(GgufKeys.FfnActivation));
        Assert.False(s.Has(GgufKeys.FfnActivationThreshold));
        using (var m = new GgufModel(silu)) Assert.Equal(FfnActivation.Silu, m.Config.Activation);
    }

    [Fact]
    public void Gguf_with_an_unknown_activation_is_refused_naming_the_key()
    {
        var path = WriteGguf(_dir.File("relu.gguf"), Small);
        var bytes = File.ReadAllBytes(path);
        // The key's value is the string "relu" right after it (u32 type, u64 length): make it "gelu", same length.
        int at = IndexOf(bytes, Encoding.UTF8.GetBytes(GgufKeys.FfnActivation));
        int value = IndexOf(bytes, "relu"u8.ToArray(), at);
        bytes[value] = (byte)'g';
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<ModelFormatException>(() => new GgufModel(path).Dispose());
        Assert.Equal(path, e.FilePath);
        Assert.Equal(GgufKeys.FfnActivation, e.Key);
        Assert.Contains("gelu", e.Message);
    }

    [Fact]
    public void Flash_layout_keeps_the_activation_and_refuses_an_unknown_one()
    {
        var gguf = WriteGguf(_dir.File("fat.gguf"), SmallFatRelu);
        var folder = _dir.File("fat.flash");
        using (var source = ModelLoader.Open(gguf)) FlashLayoutWriter.Convert(source, folder);
        var manifestPath = Path.Combine(folder, FlashLayoutRules.ManifestFile);
        var manifest = JsonNode.Parse(File.ReadAllText(manifestPath))!;
        Assert.Equal("fatrelu", manifest["ffn_activation"]!.GetValue<string>());
        using (var layout = new FlashLayoutModel(folder))
        {
            Assert.Equal(FfnActivation.FatRelu, layout.Config.Activation);
            Assert.Equal(0.25f, layout.Config.ActivationThreshold);
        }
        // Calibrated thresholds are written into the same manifest: the activation stays.
        FlashLayoutWriter.WriteThresholds(folder, [0.5, 0.75]);
        using (var layout = new FlashLayoutModel(folder)) Assert.Equal(FfnActivation.FatRelu, layout.Config.Activation);

        manifest = JsonNode.Parse(File.ReadAllText(manifestPath))!;
        manifest["ffn_activation"] = "gelu";
        File.WriteAllText(manifestPath, manifest.ToJsonString());
        var e = Assert.Throws<ModelFormatException>(() => new FlashLayoutModel(folder).Dispose());
        Assert.Equal(manifestPath, e.FilePath);
        Assert.Equal("ffn_activation", e.Key);
    }

    [Fact]
    public void A_silu_layout_manifest_has_no_activation_key()
    {
        var gguf = WriteGguf(_dir.File("silu.gguf"), Small with { Activation = FfnActivation.Silu });
        var folder = _dir.File("silu.flash");
        using (var source = ModelLoader.Open(gguf)) FlashLayoutWriter.Convert(source, folder);
        var manifest = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, FlashLayoutRules.ManifestFile)))!.AsObject();
        Assert.False(manifest.ContainsKey("ffn_activation"));
        Assert.False(manifest.ContainsKey("ffn_activation_threshold"));
        using var layout = new FlashLayoutModel(folder);
        Assert.Equal(FfnActivation.Silu, layout.Config.Activation);
    }

    [Fact]
    public void A_threshold_on_a_non_fatrelu_config_is_refused()
    {
        var e = Assert.Throws<ModelFormatException>(() => (Small with { ActivationThreshold = 0.1f }).Validate("x.json"));
        Assert.Equal("hidden_act_param", e.Key);
    }

    private static int IndexOf(byte[] haystack, byte[] needle, int from = 0)
    {
        int i = haystack.AsSpan(from).IndexOf(needle);
        Assert.True(i >= 0, "pattern not found");
        return from + i;
    }
}
