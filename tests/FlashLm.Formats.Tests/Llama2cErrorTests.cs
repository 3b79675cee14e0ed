using System.Buffers.Binary;
using FlashLm.Formats;
using Xunit;

namespace FlashLm.Tests;

/// <summary>Bad llama2.c files give a ModelFormatException naming the file and what is wrong.</summary>
public class Llama2cErrorTests
{
    private static ModelFormatException Fails(string model, string tokenizer) =>
        Assert.Throws<ModelFormatException>(() => ModelLoader.Open(model, tokenizer).Dispose());

    [RequiresSharedModelsTheory]
    [InlineData(10)]
    [InlineData(28)]
    [InlineData(5000)]
    [InlineData(1056000)]
    public void Truncated_model_is_reported_with_file_and_offset(int keep)
    {
        using var dir = new TempDir();
        var path = dir.File("cut.bin");
        File.WriteAllBytes(path, File.ReadAllBytes(SharedModels.StoriesBin)[..keep]);
        var e = Fails(path, SharedModels.Tok512);
        Assert.Contains(path, e.Message);
        Assert.Contains("corrupted or incomplete", e.Message);
    }

    [RequiresSharedModelsTheory]
    [InlineData(0, -64, "dim")]
    [InlineData(2, 100000000, "n_layers")]
    [InlineData(3, 7, "n_heads")]
    [InlineData(4, 3, "n_kv_heads")]
    [InlineData(6, 0, "seq_len")]
    public void Flipped_header_field_is_named(int field, int value, string key)
    {
        using var dir = new TempDir();
        var path = dir.File("bad.bin");
        var bytes = File.ReadAllBytes(SharedModels.StoriesBin);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(field * 4), value);
        File.WriteAllBytes(path, bytes);
        var e = Fails(path, SharedModels.Tok512);
        Assert.Contains(path, e.Message);
        Assert.Contains(key, e.Message);
    }

    [RequiresSharedModelsFact]
    public void Header_that_needs_more_bytes_than_the_file_is_refused()
    {
        using var dir = new TempDir();
        var path = dir.File("big.bin");
        var bytes = File.ReadAllBytes(SharedModels.StoriesBin);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(4), 344); // hidden_dim 172 -> 344
        File.WriteAllBytes(path, bytes);
        var e = Fails(path, SharedModels.Tok512);
        Assert.Contains("needs", e.Message);
        Assert.Contains(path, e.Message);
    }

    [RequiresSharedModelsFact]
    public void Missing_tokenizer_is_named()
    {
        var e = Fails(SharedModels.StoriesBin, "/nonexistent/tok.bin");
        Assert.Contains("/nonexistent/tok.bin", e.Message);
    }

    [RequiresSharedModelsFact]
    public void Truncated_tokenizer_names_the_token()
    {
        using var dir = new TempDir();
        var path = dir.File("tok.bin");
        File.WriteAllBytes(path, File.ReadAllBytes(SharedModels.Tok512)[..3000]);
        var e = Fails(SharedModels.StoriesBin, path);
        Assert.Contains(path, e.Message);
        Assert.Contains("token", e.Message);
    }

    [Fact]
    public void Missing_model_file_is_named()
    {
        var e = Assert.Throws<ModelFormatException>(() => ModelLoader.Open("/nonexistent/model.bin"));
        Assert.Contains("/nonexistent/model.bin", e.Message);
    }
}
