using System.Buffers.Binary;
using FlashLm.Formats;
using FlashLm.Formats.Gguf;
using Xunit;

namespace FlashLm.Tests;

/// <summary>
/// Quantized GGUF import: every accepted type loads as its own blocks and reads as their dequantized values; other
/// types, rows that end inside a block, cut files and overlapping tensors are refused naming file, tensor and offset.
/// </summary>
public sealed class GgufQuantImportTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    public static TheoryData<DType> Types => [.. GgufQuantFiles.Types];

    [Theory]
    [MemberData(nameof(Types))]
    public void Every_accepted_type_loads_as_its_blocks_and_reads_as_their_dequantized_values(DType type)
    {
        var path = _dir.File($"{type}.gguf");
        var written = GgufQuantFiles.Write(path, type);
        using var m = new GgufModel(path);
        Assert.Equal(GgufQuantFiles.Shape, m.Config);
        foreach (var info in m.File.TensorInfos.Where(t => written.ContainsKey(t.Name)))
            Assert.Equal(GgmlTypes.FromDType(type), info.Type);
        foreach (var (name, blocks) in written)
        {
            var t = m.Info(name);
            Assert.Equal(type, t.DType);
            Assert.Equal(blocks.LongLength, t.ByteLength);
            var data = m.Read(name);
            Assert.True(data.IsQuantized, name);
            Assert.Equal(type, data.DType);
            Assert.Null(data.F32);
            Assert.Equal(blocks, data.Blocks);
            Assert.Equal(blocks.LongLength, data.ByteLength);
            Assert.Equal(t.Elements, data.Length);
            var want = new float[t.Elements];
            Dequant.ToF32(type, blocks, want);
            var got = m.ReadF32(name);
            Assert.True(want.AsSpan().SequenceEqual(got), $"{name}: ReadF32 differs from Dequant.ToF32 of the blocks");
            Assert.All(got, v => Assert.True(float.IsFinite(v)));
        }
        Assert.Equal(DType.F32, m.Info(TensorNames.Block(0, TensorNames.AttnNorm)).DType);
    }

    public static TheoryData<GgmlType, string> Refused => new()
    {
        { GgmlType.IQ2_XXS, "IQ2_XXS" },
        { GgmlType.TQ1_0, "TQ1_0" },
        { GgmlType.TQ2_0, "TQ2_0" },
        { GgmlType.IQ4_NL, "IQ4_NL" },
        { GgmlType.IQ4_XS, "IQ4_XS" },
        { GgmlType.MXFP4, "MXFP4" },
        { GgmlType.Q8_K, "Q8_K" },
        { GgmlType.I32, "I32" },
        { (GgmlType)31, "type id 31" }, // Q4_0_4_4, removed from GGUF
    };

    [Theory]
    [MemberData(nameof(Refused))]
    public void Other_types_are_refused_naming_tensor_type_and_offset(GgmlType type, string name)
    {
        var path = _dir.File("q4k.gguf");
        GgufQuantFiles.Write(path, DType.Q4_K);
        // A 1-D F32 norm of 256 values holds 1024 bytes: room for 256 values of any of these types.
        var t = new GgufFile(path).TensorInfos.Single(x => x.Name == "blk.1.attn_norm.weight");
        var bytes = File.ReadAllBytes(path);
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan((int)GgufQuantFiles.TypeFieldOffset(t)), (uint)type);
        var bad = _dir.File($"{name.Replace(' ', '_')}.gguf");
        File.WriteAllBytes(bad, bytes);

        var e = Assert.Throws<ModelFormatException>(() => { using var m = new GgufModel(bad); });
        Assert.Equal(bad, e.FilePath);
        Assert.Equal(t.Name, e.Key);
        Assert.Equal(t.InfoOffset, e.Offset);
        Assert.Contains($"unsupported ggml type {name}", e.Message);
        Assert.Contains(t.DataOffset.ToString(), e.Message);
        Assert.Contains("Q4_K", e.Message); // the message lists what is readable
    }

    [Theory]
    [InlineData(DType.Q4_K, 384, 256)]
    [InlineData(DType.Q6_K, 500, 256)]
    [InlineData(DType.Q8_0, 500, 32)]
    [InlineData(DType.Q5_1, 272 + 1, 32)]
    public void A_row_that_ends_inside_a_block_is_refused(DType type, int ne0, int block)
    {
        var path = _dir.File("rows.gguf");
        GgufQuantFiles.Write(path, type);
        var t = new GgufFile(path).TensorInfos.Single(x => x.Name == "blk.0.ffn_down.weight"); // ne = [512, 256]
        var bytes = File.ReadAllBytes(path);
        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan((int)GgufQuantFiles.Ne0Offset(t)), (ulong)ne0);
        var bad = _dir.File("rows-bad.gguf");
        File.WriteAllBytes(bad, bytes);

        var e = Assert.Throws<ModelFormatException>(() => { using var m = new GgufModel(bad); });
        Assert.Equal(bad, e.FilePath);
        Assert.Equal(t.Name, e.Key);
        Assert.Equal(GgufQuantFiles.TypeFieldOffset(t), e.Offset);
        Assert.Contains($"{type} tensor's inner dimension ne[0] = {ne0} is not a multiple of its block size {block}", e.Message);
    }

    [Theory]
    [InlineData(DType.Q5_K)]
    [InlineData(DType.Q4_0)]
    public void A_cut_quantized_tensor_is_refused_naming_file_tensor_and_offset(DType type)
    {
        var path = _dir.File("whole.gguf");
        GgufQuantFiles.Write(path, type);
        var g = new GgufFile(path);
        var full = File.ReadAllBytes(path);
        var mid = g.TensorInfos.Single(x => x.Name == "blk.0.ffn_down.weight");
        var last = g.TensorInfos.MaxBy(x => x.DataOffset)!;
        foreach (var (cut, t) in new[] { (mid.DataOffset + 1000, mid), (full.Length - 1L, last) })
        {
            var bad = _dir.File($"cut{cut}.gguf");
            File.WriteAllBytes(bad, full[..(int)cut]);
            var e = Assert.Throws<ModelFormatException>(() => { using var m = new GgufModel(bad); });
            Assert.Equal(bad, e.FilePath);
            Assert.Contains(bad, e.Message);
            Assert.Equal(t.Name, e.Key);
            Assert.Equal(t.InfoOffset, e.Offset);
            Assert.Contains("corrupted or incomplete", e.Message);
            Assert.Contains($"{type} tensor data", e.Message);
            Assert.Contains($"({cut} bytes)", e.Message);
        }
    }

    [Fact]
    public void Tensors_whose_data_overlap_are_refused()
    {
        var path = _dir.File("overlap.gguf");
        GgufQuantFiles.Write(path, DType.Q6_K);
        var g = new GgufFile(path);
        var a = g.TensorInfos.Single(x => x.Name == "blk.0.ffn_up.weight");
        var b = g.TensorInfos.Single(x => x.Name == "blk.0.ffn_down.weight");
        var bytes = File.ReadAllBytes(path);
        // b's relative offset field follows its type field; point it inside a's data.
        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan((int)GgufQuantFiles.TypeFieldOffset(b) + 4), a.RelativeOffset + 64);
        var bad = _dir.File("overlap-bad.gguf");
        File.WriteAllBytes(bad, bytes);
        var e = Assert.Throws<ModelFormatException>(() => { using var m = new GgufModel(bad); });
        Assert.Equal(b.Name, e.Key);
        Assert.Contains("overlaps tensor 'blk.0.ffn_up.weight'", e.Message);
    }

    [Fact]
    public void Copy_keeps_quantized_blocks_bit_for_bit_and_widens_on_request()
    {
        var path = _dir.File("src.gguf");
        var written = GgufQuantFiles.Write(path, DType.Q3_K);
        using var src = new GgufModel(path);
        var same = _dir.File("same.gguf");
        GgufWriter.Copy(src, same);
        var f32 = _dir.File("f32.gguf");
        GgufWriter.Copy(src, f32, DType.F32);
        using var a = new GgufModel(same);
        using var b = new GgufModel(f32);
        foreach (var (name, blocks) in written)
        {
            Assert.Equal(blocks, a.Read(name).Blocks);
            Assert.Equal(DType.F32, b.Info(name).DType);
            Assert.Equal(src.ReadF32(name), b.ReadF32(name));
        }
        Assert.Equal(11L, a.File.GetInteger("general.file_type")); // LLAMA_FTYPE_MOSTLY_Q3_K_S
    }

    [Theory]
    [InlineData(DType.Q8_0)]
    [InlineData(DType.Q4_K)]
    [InlineData(DType.Q5_K)]
    [InlineData(DType.Q6_K)]
    public void Writer_quantizes_values_as_dequant_does(DType type)
    {
        var c = GgufQuantFiles.Shape;
        var specs = TensorNames.Expected(c).Select(e => new TensorSpec(e.Name, e.Shape.Length == 1 ? DType.F32 : type, e.Shape)).ToList();
        static float Value(long i) => MathF.Sin(i * 0.37f) * (1 + i % 7) * 0.01f;
        var path = _dir.File($"{type}.gguf");
        GgufWriter.Write(path, c, Formats.Synth.SyntheticModel.Vocab(c), specs, (spec, first, chunk) => { for (int i = 0; i < chunk.Length; i++) chunk[i] = Value(first + i); });
        using var m = new GgufModel(path);
        foreach (var s in specs.Where(x => x.DType == type))
        {
            var values = new float[s.Elements];
            for (int i = 0; i < values.Length; i++) values[i] = Value(i);
            var want = new byte[s.ByteLength];
            Dequant.Quantize(type, values, want);
            Assert.Equal(want, m.Read(s.Name).Blocks);
        }
    }

    [Fact]
    public void Writer_refuses_types_it_cannot_quantize_and_leaves_no_file()
    {
        var c = GgufQuantFiles.Shape;
        var specs = TensorNames.Expected(c).Select(e => new TensorSpec(e.Name, e.Shape.Length == 1 ? DType.F32 : DType.Q4_0, e.Shape)).ToList();
        var path = _dir.File("q40.gguf");
        var e = Assert.Throws<ArgumentException>(() => GgufWriter.Write(path, c, Formats.Synth.SyntheticModel.Vocab(c), specs, (_, _, _) => { }));
        Assert.Contains("no quantizer for Q4_0", e.Message);
        Assert.Contains(specs.First(x => x.DType == DType.Q4_0).Name, e.Message);
        Assert.False(File.Exists(path));

        // A filler that fails half way: the partial file is removed.
        var q8 = specs.Select(s => s with { DType = s.DType == DType.Q4_0 ? DType.Q8_0 : s.DType }).ToList();
        Assert.Throws<InvalidOperationException>(() => GgufWriter.Write(path, c, Formats.Synth.SyntheticModel.Vocab(c), q8,
            (spec, _, _) => { if (spec.Name.StartsWith("blk.1.", StringComparison.Ordinal)) throw new InvalidOperationException("source went away"); }));
        Assert.False(File.Exists(path));
    }
}
