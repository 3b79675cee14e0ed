using System.Buffers.Binary;
using System.Text.Json.Nodes;
using FlashLm.Formats;
using FlashLm.Formats.HuggingFace;
using Xunit;
using static FlashLm.Tests.HuggingFaceTestModels;

namespace FlashLm.Tests;

/// <summary>Corrupt or unsupported HF folders fail with a ModelFormatException naming the file and key.</summary>
public sealed class HuggingFaceErrorTests : IDisposable
{
    private readonly TempDir _dir = new();
    private string St => Path.Combine(_dir.Path, HfNames.SingleFile);
    private string ConfigPath => Path.Combine(_dir.Path, HfNames.ConfigFile);

    public void Dispose() => _dir.Dispose();

    private ModelFormatException Fails(string expectedFile, string? expectedKey)
    {
        var ex = Assert.Throws<ModelFormatException>(() => new HfModel(_dir.Path).Dispose());
        Assert.Equal(Path.GetFullPath(expectedFile), Path.GetFullPath(ex.FilePath));
        Assert.Equal(expectedKey, ex.Key);
        Assert.Contains(Path.GetFileName(expectedFile), ex.Message);
        return ex;
    }

    private void Truncate(string path, long length)
    {
        using var f = new FileStream(path, FileMode.Open);
        f.SetLength(length);
    }

    private long HeaderLength() => (long)BinaryPrimitives.ReadUInt64LittleEndian(File.ReadAllBytes(St).AsSpan(0, 8));

    [Fact]
    public void Truncated_in_the_header_length()
    {
        WriteOpt(_dir.Path);
        Truncate(St, 5);
        var ex = Fails(St, "header length");
        Assert.Equal(0, ex.Offset);
    }

    [Fact]
    public void Truncated_in_the_header_json()
    {
        WriteOpt(_dir.Path);
        Truncate(St, 8 + HeaderLength() / 2);
        Fails(St, "header length");
    }

    [Fact]
    public void Header_length_beyond_the_file()
    {
        WriteOpt(_dir.Path);
        var b = File.ReadAllBytes(St);
        BinaryPrimitives.WriteUInt64LittleEndian(b, (ulong)b.Length);
        File.WriteAllBytes(St, b);
        Assert.Contains("beyond the end", Fails(St, "header length").Message);
    }

    [Fact]
    public void Header_that_is_not_json()
    {
        WriteOpt(_dir.Path);
        var b = File.ReadAllBytes(St);
        int colon = Array.IndexOf(b, (byte)':', 8);
        b[colon] = (byte)'}';
        File.WriteAllBytes(St, b);
        var ex = Fails(St, "header");
        Assert.Contains("JSON", ex.Message);
        Assert.Equal(colon, ex.Offset);
    }

    [Fact]
    public void Truncated_in_the_data()
    {
        WriteOpt(_dir.Path);
        var last = SafetensorsFile.Open(St).Tensors.Values.MaxBy(t => t.Offset)!;
        Truncate(St, new FileInfo(St).Length - 10);
        var ex = Fails(St, last.Name);
        Assert.Contains("beyond", ex.Message);
        Assert.Equal(last.Offset, ex.Offset);
    }

    [Fact]
    public void Data_offsets_beyond_the_data()
    {
        WriteOpt(_dir.Path);
        const string name = "model.decoder.layers.0.fc1.bias";
        PatchHeader(St, h =>
        {
            var off = h[name]!["data_offsets"]!.AsArray();
            long size = new FileInfo(St).Length;
            off[0] = size;
            off[1] = size + off[1]!.GetValue<long>() - (long)off[0]!.GetValue<long>() + 256;
        });
        Fails(St, name);
    }

    [Fact]
    public void Data_offsets_that_disagree_with_the_shape()
    {
        WriteLlama(_dir.Path);
        const string name = "model.layers.1.mlp.up_proj.weight";
        PatchHeader(St, h => h[name]!["shape"] = new JsonArray(48, 31));
        Assert.Contains("data_offsets span", Fails(St, name).Message);
    }

    [Fact]
    public void Wrong_shape_consistent_with_offsets()
    {
        WriteLlama(_dir.Path);
        const string name = "model.layers.1.mlp.up_proj.weight";
        PatchHeader(St, h => h[name]!["shape"] = new JsonArray(32, 48)); // transposed: same byte count
        var ex = Fails(St, "blk.1.ffn_up.weight");
        Assert.Contains("wrong shape", ex.Message);
    }

    [Fact]
    public void Unsupported_dtype_names_the_tensor_and_dtype()
    {
        WriteLlama(_dir.Path);
        const string name = "model.norm.weight";
        PatchHeader(St, h => h[name]!["dtype"] = "I32");
        var ex = Fails(St, name);
        Assert.Contains("I32", ex.Message);
    }

    [Fact]
    public void Missing_tensor()
    {
        WriteLlama(_dir.Path);
        PatchHeader(St, h => h.Remove("model.layers.0.mlp.gate_proj.weight"));
        var ex = Fails(_dir.Path, "model.layers.0.mlp.gate_proj.weight");
        Assert.Contains("blk.0.ffn_gate.weight", ex.Message);
    }

    [Fact]
    public void Missing_lm_head_when_untied()
    {
        WriteLlama(_dir.Path);
        var cfg = JsonNode.Parse(File.ReadAllText(ConfigPath))!;
        Assert.False(cfg["tie_word_embeddings"]!.GetValue<bool>());
        PatchHeader(St, h => h.Remove("lm_head.weight"));
        Fails(_dir.Path, "lm_head.weight");
    }

    [Fact]
    public void Missing_shard_named_by_the_index()
    {
        WriteOpt(_dir.Path, DType.F32, 16 << 10);
        var shard = Directory.GetFiles(_dir.Path, "model-00002-of-*.safetensors").Single();
        File.Delete(shard);
        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(_dir.Path, HfNames.IndexFile)))!["weight_map"]!.AsObject();
        var ex = Assert.Throws<ModelFormatException>(() => new HfModel(_dir.Path).Dispose());
        Assert.Equal(Path.Combine(_dir.Path, HfNames.IndexFile), ex.FilePath);
        Assert.Contains(Path.GetFileName(shard), ex.Message);
        Assert.NotNull(ex.Key);
        Assert.Equal(Path.GetFileName(shard), index[ex.Key!]!.GetValue<string>());
    }

    [Fact]
    public void Unsupported_architecture()
    {
        WriteLlama(_dir.Path);
        PatchConfig(c => c["architectures"] = new JsonArray("MistralForCausalLM"));
        Assert.Contains("MistralForCausalLM", Fails(ConfigPath, "architectures").Message);
    }

    [Fact]
    public void Missing_architectures_key()
    {
        WriteLlama(_dir.Path);
        PatchConfig(c => c.AsObject().Remove("architectures"));
        Fails(ConfigPath, "architectures");
    }

    [Fact]
    public void Missing_required_config_key()
    {
        WriteOpt(_dir.Path);
        PatchConfig(c => c.AsObject().Remove("ffn_dim"));
        Fails(ConfigPath, "ffn_dim");
    }

    [Theory]
    [InlineData("do_layer_norm_before", false)]
    [InlineData("word_embed_proj_dim", 16)]
    [InlineData("activation_function", "gelu")]
    public void Unsupported_opt_variants(string key, object value)
    {
        WriteOpt(_dir.Path);
        PatchConfig(c => c[key] = JsonValue.Create(value));
        Assert.Contains("unsupported", Fails(ConfigPath, key).Message);
    }

    [Fact]
    public void Missing_config_json()
    {
        WriteOpt(_dir.Path);
        File.Delete(ConfigPath);
        Fails(ConfigPath, null);
    }

    [Fact]
    public void Missing_safetensors()
    {
        WriteOpt(_dir.Path);
        File.Delete(St);
        Fails(_dir.Path, HfNames.SingleFile);
    }

    [Theory]
    [InlineData(false, "vocab.json")]
    [InlineData(false, "merges.txt")]
    [InlineData(true, "tokenizer.model")]
    public void Missing_tokenizer_file(bool llama, string file)
    {
        if (llama) WriteLlama(_dir.Path); else WriteOpt(_dir.Path);
        File.Delete(Path.Combine(_dir.Path, file));
        Assert.Contains(file, Fails(_dir.Path, file).Message);
    }

    private void PatchConfig(Action<JsonNode> patch)
    {
        var c = JsonNode.Parse(File.ReadAllText(ConfigPath))!;
        patch(c);
        File.WriteAllText(ConfigPath, c.ToJsonString());
    }
}
