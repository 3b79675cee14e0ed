using System.Buffers.Binary;
using System.Text;
using FlashLm.Formats;
using FlashLm.Formats.Gguf;
using Xunit;

namespace FlashLm.Tests;

/// <summary>Corrupted copies of a GGUF (synthetic, of stories260K's shape) fail with ModelFormatException naming the file, key or tensor, and offset.</summary>
public sealed class GgufErrorTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("flashlm-gguf-bad-");

    public void Dispose() => _dir.Delete(true);

    private string? _source;

    /// <summary>The intact GGUF, written once per test into its own folder.</summary>
    private string Source => _source ??= SyntheticModels.WriteGguf(System.IO.Path.Combine(_dir.FullName, "synthetic.gguf"), SyntheticModels.StoriesShape);

    private byte[] Original() => File.ReadAllBytes(Source);

    private ModelFormatException Open(byte[] bytes, string name)
    {
        var path = System.IO.Path.Combine(_dir.FullName, name);
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<ModelFormatException>(() => { using var m = new GgufModel(path); });
        Assert.Equal(path, e.FilePath);
        Assert.Contains(path, e.Message);
        return e;
    }

    private GgufTensorInfo Tensor(string name) => new GgufFile(Source).TensorInfos.Single(t => t.Name == name);

    /// <summary>Offset of the ne[] array in a tensor info entry.</summary>
    private static long NeOffset(GgufTensorInfo t) => t.InfoOffset + 8 + Encoding.UTF8.GetByteCount(t.Name) + 4;

    [Fact]
    public void Truncation_anywhere_is_reported_with_what_was_being_read()
    {
        var full = Original();
        var g = new GgufFile(Source);
        long tokensAt = g.Get("tokenizer.ggml.tokens").Offset;
        var q = g.TensorInfos.Single(t => t.Name == "blk.0.attn_q.weight");
        var cases = new (long Cut, string Key)[]
        {
            (2, "magic"),
            (12, "tensor_count"),
            (tokensAt + 2000, "tokenizer.ggml.tokens"),
            (q.InfoOffset + 10, $"tensor info #{g.TensorInfos.ToList().IndexOf(q)} name"),
            (NeOffset(q) + 4, "blk.0.attn_q.weight"),
            (q.DataOffset + 100, "blk.0.attn_q.weight"),
            (full.Length - 1, g.TensorInfos.MaxBy(t => t.DataOffset)!.Name), // the last tensor's data
        };
        foreach (var (cut, key) in cases)
        {
            var e = Open(full[..(int)cut], $"cut{cut}.gguf");
            Assert.True(e.Key == key, $"cut at {cut}: key '{e.Key}', expected '{key}' ({e.Message})");
            Assert.NotNull(e.Offset);
            Assert.True(e.Offset <= full.Length, e.Message);
        }
    }

    [Fact]
    public void Bad_magic_and_unsupported_version_are_named()
    {
        var b = Original();
        b[0] = (byte)'X';
        var e = Open(b, "magic.gguf");
        Assert.Equal("magic", e.Key);
        Assert.Equal(0, e.Offset);

        b = Original();
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), 7);
        e = Open(b, "version.gguf");
        Assert.Equal("version", e.Key);
        Assert.Contains("version 7", e.Message);
    }

    [Fact]
    public void Tensor_offset_beyond_the_file_is_named()
    {
        var b = Original();
        var t = Tensor("blk.2.ffn_up.weight");
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan((int)(NeOffset(t) + 8 * t.Ne.Length + 4)), 1UL << 40);
        var e = Open(b, "offset.gguf");
        Assert.Equal("blk.2.ffn_up.weight", e.Key);
        Assert.Equal(t.InfoOffset, e.Offset);
        Assert.Contains("beyond the end of the file", e.Message);
    }

    [Fact]
    public void Wrong_shape_is_named()
    {
        var b = Original();
        var t = Tensor("blk.1.attn_k.weight");   // ne = [64, 32]
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan((int)NeOffset(t) + 8), 16);
        var e = Open(b, "shape.gguf");
        Assert.Equal("blk.1.attn_k.weight", e.Key);
        Assert.Contains("wrong shape [16, 64], expected [32, 64]", e.Message);
        Assert.Equal(t.DataOffset, e.Offset);
    }

    [Fact]
    public void Missing_required_key_is_named()
    {
        var b = Original();
        var at = Encoding.ASCII.GetBytes("llama.embedding_length");
        int i = b.AsSpan().IndexOf(at);
        b[i + at.Length - 1] = (byte)'X';         // llama.embedding_lengtX
        var e = Open(b, "key.gguf");
        Assert.Equal("llama.embedding_length", e.Key);
        Assert.Contains("missing", e.Message);
    }

    [Fact]
    public void Unsupported_architecture_is_named()
    {
        var b = Original();
        var v = new GgufFile(Source).Get("general.architecture");
        int valueAt = (int)v.Offset + 8 + "general.architecture".Length + 4 + 8;
        Encoding.ASCII.GetBytes("gpt2x").CopyTo(b, valueAt);
        var e = Open(b, "arch.gguf");
        Assert.Equal("general.architecture", e.Key);
        Assert.Contains("unsupported architecture 'gpt2x'", e.Message);
    }

    [Fact]
    public void Unsupported_ggml_type_is_named()
    {
        var b = Original();
        var t = Tensor("blk.0.ffn_gate.weight");
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan((int)(NeOffset(t) + 8 * t.Ne.Length)), (uint)GgmlType.Q4_K);
        var e = Open(b, "type.gguf");
        Assert.Equal("blk.0.ffn_gate.weight", e.Key);
        Assert.Contains("Q4_K", e.Message);
    }

    [Fact]
    public void Huge_counts_and_string_lengths_fail_cleanly()
    {
        var b = Original();
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(16), ulong.MaxValue / 2); // kv count
        var e = Open(b, "kvcount.gguf");
        Assert.Equal("metadata_kv_count", e.Key);

        b = Original();
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(24), 1UL << 50);         // first key's length
        e = Open(b, "keylen.gguf");
        Assert.Equal(24, e.Offset);
    }
}
