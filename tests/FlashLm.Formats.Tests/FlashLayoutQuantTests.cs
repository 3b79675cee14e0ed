using System.Text.Json.Nodes;
using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Formats.Gguf;
using Xunit;
using Xunit.Abstractions;

namespace FlashLm.Tests;

/// <summary>Quantized sources become quantized layouts: gate/up blocks copied, down columns re-quantized, types recorded.</summary>
public sealed class FlashLayoutQuantTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _tmp = new();

    public void Dispose() => _tmp.Dispose();

    private (QuantTestModel Source, string Folder, ConvertReport Report) Convert(ModelConfig config, DType ffn, DType? down = null, DType? downType = null,
        string name = "layout")
    {
        var source = new QuantTestModel(_tmp.File(name + ".bin"), config, QuantTestModel.Types(ffn, down), seed: 3);
        var folder = _tmp.Sub(name);
        var report = FlashLayoutWriter.Convert(source, folder, downType: downType);
        return (source, folder, report);
    }

    private static byte[] Bundle(FlashLayoutModel flash, int layer, int neuron)
    {
        var ffn = flash.Ffn;
        var bytes = new byte[ffn.BundleBytes];
        using var f = File.OpenRead(ffn.FilePath);
        f.Position = ffn.BundleOffset(layer, neuron);
        f.ReadExactly(bytes);
        return bytes;
    }

    private static float[] Column(QuantTestModel source, int layer, int neuron)
    {
        var c = source.Config;
        var down = source.ReadF32(TensorNames.Block(layer, TensorNames.FfnDown)); // [dim, hid]
        return Enumerable.Range(0, c.Dim).Select(j => down[(long)j * c.HiddenDim + neuron]).ToArray();
    }

    [Theory]
    [InlineData(DType.Q4_0, 64)]
    [InlineData(DType.Q8_0, 64)]
    [InlineData(DType.Q4_K, 256)]
    public void Gate_and_up_rows_in_ffn_bin_are_the_sources_blocks_byte_for_byte(DType type, int dim)
    {
        var (source, folder, _) = Convert(QuantTestModel.Llama(dim), type, down: dim % 256 == 0 ? DType.Q6_K : type);
        using var _ = source;
        using var flash = new FlashLayoutModel(folder);
        var ffn = flash.Ffn;
        long rowBytes = DTypeInfo.ByteCount(type, dim);
        for (int l = 0; l < ffn.Layers; l++)
            foreach (var part in new[] { "gate", "up" })
            {
                var raw = source.Raw(TensorNames.Block(l, FlashLayoutWriter.PartTensor(part)));
                var p = ffn.Part(part)!;
                Assert.Equal(type, p.DType);
                Assert.Equal(rowBytes, p.Bytes);
                for (int n = 0; n < ffn.Neurons; n++)
                    Assert.True(raw.AsSpan((int)(n * rowBytes), (int)rowBytes).SequenceEqual(Bundle(flash, l, n).AsSpan((int)p.Offset, (int)rowBytes)),
                        $"layer {l} neuron {n}: the {part} row differs from the source's blocks");
            }
    }

    [Theory]
    [InlineData(DType.Q4_0, 64, null)]
    [InlineData(DType.Q4_K, 256, null)]
    [InlineData(DType.Q4_K, 256, DType.Q6_K)]
    [InlineData(DType.Q4_K, 256, DType.Q4_K)]
    public void Down_parts_are_the_source_columns_requantized_and_dequantize_within_that_error(DType type, int dim, DType? downType)
    {
        var (source, folder, report) = Convert(QuantTestModel.Llama(dim), type, downType: downType);
        using var _ = source;
        using var flash = new FlashLayoutModel(folder);
        var ffn = flash.Ffn;
        var down = ffn.Part("down")!;
        var want = downType ?? DType.Q8_0;
        Assert.Equal(want, down.DType);
        var back = new float[dim];
        double err = 0, norm = 0;
        for (int l = 0; l < ffn.Layers; l++)
            for (int n = 0; n < ffn.Neurons; n++)
            {
                var column = Column(source, l, n);
                var part = Bundle(flash, l, n).AsSpan((int)down.Offset, (int)down.Bytes);
                // Exactly the column re-quantized by the reference quantizer...
                Assert.True(QuantTestModel.Quantize(want, column).AsSpan().SequenceEqual(part), $"layer {l} neuron {n}: down part is not the re-quantized column");
                // ...and within that type's error of the source column.
                Dequant.ToF32(want, part, back);
                for (int j = 0; j < dim; j++)
                {
                    err += (back[j] - column[j]) * (double)(back[j] - column[j]);
                    norm += column[j] * (double)column[j];
                }
            }
        double rel = Math.Sqrt(err / norm);
        // Loose for K types: a column takes one element from each source row, so its 16- or 32-element groups mix rows of very
        // different scales (the random source blocks have random scales), which costs a K type more than real weights would.
        double bound = want switch { DType.Q8_0 => 0.01, DType.Q6_K => 0.05, _ => 0.15 };
        Assert.InRange(rel, 1e-6, bound);
        // The report (and the manifest) carry the same measure, per layer.
        var e = report.DownError!;
        Assert.Equal(want, e.DownType);
        Assert.Equal(ffn.Layers, e.ColumnRelRms.Count);
        Assert.InRange(e.MaxColumnRelRms, rel * 0.5, bound);
        Assert.InRange(e.MaxOutputRelRms, 1e-7, bound);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "manifest.json")))!;
        Assert.Equal(want.ToString(), (string)json["ffn"]!["down_requant"]!["dtype"]!);
        Assert.Equal(ffn.Layers, json["ffn"]!["down_requant"]!["column_rel_rms"]!.AsArray().Count);
    }

    [RequiresSharedModelsFact]
    public void Stories260K_in_Q8_0_converts_with_a_down_error_below_a_percent()
    {
        // Real trained weights: stories260K re-written as Q8_0 GGUF (gate/up Q8_0; down's rows of 172 are not whole blocks,
        // so it stays F16 as llama.cpp would leave it), converted: its down columns go F16 -> Q8_0.
        var gguf = _tmp.File("stories.q8_0.gguf");
        using (var src = new FlashLm.Formats.Llama2c.Llama2cModel(SharedModels.StoriesBin, SharedModels.Tok512)) GgufWriter.Copy(src, gguf, DType.Q8_0);
        using var q8 = ModelLoader.Open(gguf);
        var report = FlashLayoutWriter.Convert(q8, _tmp.Sub("stories-q8"));
        var e = report.DownError!;
        output.WriteLine($"stories260K Q8_0: bundle {report.BundleBytes} B, stride {report.BundleStride} B; {e}");
        output.WriteLine($"per layer column {string.Join(", ", e.ColumnRelRms.Select(v => v.ToString("0.00e+0")))}; output {string.Join(", ", e.OutputRelRms.Select(v => v.ToString("0.00e+0")))}");
        Assert.Equal([DType.F16], e.SourceTypes);
        Assert.InRange(e.MaxColumnRelRms, 1e-4, 0.01);
        Assert.InRange(e.MaxOutputRelRms, 1e-5, 0.01);
    }

    [Fact]
    public void The_error_a_down_type_adds_grows_as_its_bits_shrink()
    {
        // A synthetic Q4_K GGUF (every matrix Q4_K, as the writer's quantizer makes it) converted with each down type.
        var config = QuantTestModel.Llama(512, hidden: 1024, layers: 2, vocab: 512);
        var f32 = _tmp.File("synth.gguf");
        FlashLm.Formats.Synth.SyntheticModel.WriteGguf(f32, config, DType.F32, 5);
        var q4k = _tmp.File("synth.q4_k.gguf");
        using (var src = ModelLoader.Open(f32)) GgufWriter.Copy(src, q4k, DType.Q4_K);
        using var source = ModelLoader.Open(q4k);
        var errors = new List<(DType Type, DownRequantError Error, long Stride)>();
        foreach (var type in FlashLayoutRules.DownTypes)
        {
            var report = FlashLayoutWriter.Convert(source, _tmp.Sub($"down-{type}"), downType: type);
            errors.Add((type, report.DownError!, report.BundleStride));
            output.WriteLine($"Q4_K source, dim 512: bundle {report.BundleBytes} B, stride {report.BundleStride} B; {report.DownError}");
        }
        Assert.All(errors, e => Assert.Equal([DType.Q4_K], e.Error.SourceTypes));
        // Q8_0 < Q6_K < Q5_K < Q4_K, and Q8_0 adds well under a percent.
        for (int i = 1; i < errors.Count; i++)
        {
            Assert.True(errors[i].Error.MaxColumnRelRms > errors[i - 1].Error.MaxColumnRelRms, $"{errors[i].Type} vs {errors[i - 1].Type}");
            Assert.True(errors[i].Error.MaxOutputRelRms > errors[i - 1].Error.MaxOutputRelRms, $"{errors[i].Type} vs {errors[i - 1].Type} (output)");
        }
        Assert.InRange(errors[0].Error.MaxColumnRelRms, 1e-4, 0.01);
        // For scale: the error the source's own Q4_K quantization made of down (against the F32 weights it came from).
        double err = 0, norm = 0;
        using (var original = ModelLoader.Open(f32))
            for (int l = 0; l < config.Layers; l++)
            {
                var a = original.ReadF32(TensorNames.Block(l, TensorNames.FfnDown));
                var b = source.ReadF32(TensorNames.Block(l, TensorNames.FfnDown));
                for (int i = 0; i < a.Length; i++)
                {
                    err += (a[i] - b[i]) * (double)(a[i] - b[i]);
                    norm += a[i] * (double)a[i];
                }
            }
        double own = Math.Sqrt(err / norm);
        output.WriteLine($"the Q4_K source's own error of down against F32: {own:0.00e+0}");
        Assert.True(errors[0].Error.MaxColumnRelRms < own / 5, $"Q8_0 adds {errors[0].Error.MaxColumnRelRms}, the source's own Q4_K error is {own}");
    }

    [Theory]
    // Llama-7B (dim 4096): F16 is 3 x 8192 = 24576 B. Q4_0 and Q4_K rows are 2304 B, Q8_0 4352 B, Q6_K 3360 B, Q5_K 2816 B.
    [InlineData(DType.Q4_0, DType.Q8_0, 8960, 12288)]
    [InlineData(DType.Q4_K, DType.Q8_0, 8960, 12288)]
    [InlineData(DType.Q8_0, DType.Q8_0, 13056, 16384)]
    [InlineData(DType.Q4_K, DType.Q6_K, 7968, 8192)]
    [InlineData(DType.Q4_K, DType.Q5_K, 7424, 8192)]
    [InlineData(DType.Q4_K, DType.Q4_K, 6912, 8192)]
    public void Llama_7B_bundles_take_the_bytes_the_block_sizes_give(DType rows, DType down, long bundle, long stride)
    {
        long row = DTypeInfo.ByteCount(rows, 4096);
        FlashLayoutRules.PartOffsets([row, row, DTypeInfo.ByteCount(down, 4096)], quantized: true, out long bytes);
        Assert.Equal(bundle, bytes);
        Assert.Equal(stride, FlashLayoutRules.BundleStride(bytes));
    }

    [Fact]
    public void Bundle_bytes_of_a_Q4_0_and_a_Q4_K_model_are_what_the_block_sizes_give()
    {
        // Q4_0, dim 64: gate 2 blocks x 18 = 36 B at 0; up 36 B at 48 (16-aligned); down Q8_0 2 x 34 = 68 B at 96: 164 B, stride 256.
        var (s1, f1, r1) = Convert(QuantTestModel.Llama(64), DType.Q4_0, name: "q4_0");
        s1.Dispose();
        using (var flash = new FlashLayoutModel(f1))
        {
            Assert.True(flash.Ffn.Quantized);
            Assert.Equal(new long[] { 0, 48, 96 }, flash.Ffn.Parts.Select(p => p.Offset));
            Assert.Equal(new long[] { 36, 36, 68 }, flash.Ffn.Parts.Select(p => p.Bytes));
            Assert.Equal(164, flash.Ffn.BundleBytes);
            Assert.Equal(256, flash.Ffn.BundleStride);
            Assert.Equal(DType.Q4_0, flash.DType);
            Assert.Equal(r1.DownError!.ColumnRelRms.Select(e => Math.Round(e, 8)), flash.DownRequant!.ColumnRelRms);
            Assert.Equal(DType.Q8_0, flash.DownRequant.DownType);
        }
        Assert.Equal(164, r1.BundleBytes);
        // Q4_K, dim 256: 144 + 144 + Q8_0 8 x 34 = 272: 560 B, stride 1024; with --down-type Q4_K: 3 x 144 = 432 B, stride 512.
        var (s2, f2, _) = Convert(QuantTestModel.Llama(256), DType.Q4_K, name: "q4_k");
        s2.Dispose();
        using (var flash = new FlashLayoutModel(f2))
        {
            Assert.Equal(new long[] { 0, 144, 288 }, flash.Ffn.Parts.Select(p => p.Offset));
            Assert.Equal(560, flash.Ffn.BundleBytes);
            Assert.Equal(1024, flash.Ffn.BundleStride);
        }
        var (s3, f3, _) = Convert(QuantTestModel.Llama(256), DType.Q4_K, downType: DType.Q4_K, name: "q4_k-down-q4_k");
        s3.Dispose();
        using (var flash = new FlashLayoutModel(f3))
        {
            Assert.Equal(432, flash.Ffn.BundleBytes);
            Assert.Equal(512, flash.Ffn.BundleStride);
        }
    }

    [Fact]
    public void Types_round_trip_through_the_manifest_and_DRAM_tensors_stay_in_their_source_types()
    {
        var (source, folder, _) = Convert(QuantTestModel.Llama(64), DType.Q4_0, down: DType.Q8_0);
        using var _ = source;
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "manifest.json")))!;
        Assert.Equal("Q4_0", (string)json["dtype"]!);
        var parts = json["ffn"]!["bundle_parts"]!.AsArray();
        Assert.Equal(new[] { "Q4_0", "Q4_0", "Q8_0" }, parts.Select(p => (string)p!["dtype"]!));
        Assert.Equal(new long[] { 36, 36, 68 }, parts.Select(p => (long)p!["bytes"]!));
        using var flash = new FlashLayoutModel(folder);
        foreach (var t in source.Tensors.Values.Where(t => !TensorNames.IsFfnMatrix(t.Name)))
        {
            var stored = flash.Info(t.Name);
            Assert.Equal(t.DType, stored.DType);
            Assert.Equal(t.ByteLength, stored.ByteLength);
            // The stored bytes are the source's bytes, and read back to the same values.
            var bytes = new byte[stored.ByteLength];
            using (var f = File.OpenRead(flash.DramPath))
            {
                f.Position = stored.Offset;
                f.ReadExactly(bytes);
            }
            Assert.True(source.Raw(t.Name).AsSpan().SequenceEqual(bytes), $"{t.Name}: dram.bin holds other bytes than the source");
            Assert.Equal(source.ReadF32(t.Name), flash.ReadF32(t.Name));
        }
        // FFN matrices read back dense: gate/up exactly the source's values, down the re-quantized columns.
        Assert.Equal(source.ReadF32("blk.1.ffn_gate.weight"), flash.ReadF32("blk.1.ffn_gate.weight"));
        Assert.Equal(DType.Q8_0, flash.Info("blk.1.ffn_down.weight").DType);
        var downDense = flash.ReadF32("blk.1.ffn_down.weight");
        var col = new float[64];
        Dequant.ToF32(DType.Q8_0, QuantTestModel.Quantize(DType.Q8_0, Column(source, 1, 7)), col);
        Assert.Equal(col, Enumerable.Range(0, 64).Select(j => downDense[j * 40 + 7]));
    }

    [Fact]
    public void Verify_checks_a_quantized_layout_and_finds_a_flipped_byte()
    {
        var (source, folder, _) = Convert(QuantTestModel.Llama(64), DType.Q4_0);
        source.Dispose();
        using (var flash = new FlashLayoutModel(folder))
        {
            var ok = LayoutVerifier.Run(flash);
            Assert.True(ok.Ok, string.Join("\n", ok.Problems));
            Assert.True(ok.BundleLevel);
            flash.Verify();
        }
        long at;
        using (var flash = new FlashLayoutModel(folder)) at = flash.Ffn.BundleOffset(1, 5) + flash.Ffn.Part("down")!.Offset + 3;
        using (var f = File.Open(Path.Combine(folder, "ffn.bin"), FileMode.Open, FileAccess.ReadWrite))
        {
            f.Position = at;
            int b = f.ReadByte();
            f.Position = at;
            f.WriteByte((byte)(b ^ 1));
        }
        using (var flash = new FlashLayoutModel(folder))
        {
            var bad = LayoutVerifier.Run(flash);
            Assert.Equal(1, bad.Bad);
            Assert.Contains("layer 1 neuron 5", bad.Problems[0]);
            var e = Assert.Throws<ModelFormatException>(() => flash.Read("blk.1.ffn_down.weight"));
            Assert.Contains("neuron 5", e.Message);
        }
    }

    [Fact]
    public void A_K_down_type_needs_dim_a_multiple_of_256()
    {
        using var source = new QuantTestModel(_tmp.File("m.bin"), QuantTestModel.Llama(64), QuantTestModel.Types(DType.Q4_0), 1);
        var e = Assert.Throws<ArgumentException>(() => FlashLayoutWriter.Convert(source, _tmp.Sub("out"), downType: DType.Q6_K));
        Assert.Contains("multiple of 256", e.Message);
        Assert.Contains("64", e.Message);
        var e2 = Assert.Throws<ArgumentException>(() => FlashLayoutWriter.Convert(source, _tmp.Sub("out"), downType: DType.Q4_0));
        Assert.Contains("Q8_0, Q6_K, Q5_K, Q4_K", e2.Message);
        Assert.False(Directory.Exists(_tmp.Sub("out")));
    }

    [Fact]
    public void Gate_types_that_differ_between_layers_are_refused_naming_the_tensor()
    {
        using var source = new QuantTestModel(_tmp.File("m.bin"), QuantTestModel.Llama(64),
            (name, shape) => name == "blk.1.ffn_gate.weight" ? DType.Q8_0 : QuantTestModel.Types(DType.Q4_0)(name, shape), 1);
        var e = Assert.Throws<ModelFormatException>(() => FlashLayoutWriter.Convert(source, _tmp.Sub("out")));
        Assert.Equal("blk.1.ffn_gate.weight", e.Key);
        Assert.Contains("Q8_0", e.Message);
        Assert.Contains("Q4_0", e.Message);
    }

    [Fact]
    public void Asking_for_F32_dequantizes_and_a_down_type_needs_a_quantized_layout()
    {
        using var source = new QuantTestModel(_tmp.File("m.bin"), QuantTestModel.Llama(64), QuantTestModel.Types(DType.Q4_0), 1);
        var report = FlashLayoutWriter.Convert(source, _tmp.Sub("f32"), DType.F32);
        Assert.False(report.Quantized);
        using (var flash = new FlashLayoutModel(_tmp.Sub("f32")))
        {
            Assert.False(flash.Ffn.Quantized);
            Assert.Equal(DType.F32, flash.Ffn.Part("gate")!.DType);
            Assert.Equal(source.ReadF32("blk.0.ffn_up.weight"), flash.ReadF32("blk.0.ffn_up.weight"));
        }
        Assert.Throws<ArgumentException>(() => FlashLayoutWriter.Convert(source, _tmp.Sub("x"), DType.F16, downType: DType.Q8_0));
        using var f16 = new RandomModel(_tmp.File("f16.bin"), RandomModel.Llama(), DType.F16, 2);
        var e = Assert.Throws<ArgumentException>(() => FlashLayoutWriter.Convert(f16, _tmp.Sub("y"), downType: DType.Q8_0));
        Assert.Contains("not quantized", e.Message);
    }

    [Fact]
    public void An_F16_layout_records_its_part_types_and_stays_packed()
    {
        using var source = new RandomModel(_tmp.File("f16.bin"), RandomModel.Llama(), DType.F16, 2);
        var report = FlashLayoutWriter.Convert(source, _tmp.Sub("f16"));
        Assert.False(report.Quantized);
        Assert.Null(report.DownError);
        using var flash = new FlashLayoutModel(_tmp.Sub("f16"));
        Assert.False(flash.Ffn.Quantized);
        Assert.Equal(2, flash.Ffn.ElementSize);
        Assert.Equal(new long[] { 0, 32, 64 }, flash.Ffn.Parts.Select(p => p.Offset));
        Assert.All(flash.Ffn.Parts, p => Assert.Equal((DType.F16, 32L), (p.DType, p.Bytes)));
    }

    [Fact]
    public void A_layout_without_part_types_still_opens()
    {
        // Layouts written before parts recorded dtype and bytes.
        using var source = new RandomModel(_tmp.File("f16.bin"), RandomModel.Llama(), DType.F16, 2);
        var folder = _tmp.Sub("old");
        FlashLayoutWriter.Convert(source, folder);
        var path = Path.Combine(folder, "manifest.json");
        var m = JsonNode.Parse(File.ReadAllText(path))!;
        foreach (var p in m["ffn"]!["bundle_parts"]!.AsArray())
        {
            p!.AsObject().Remove("dtype");
            p.AsObject().Remove("bytes");
        }
        File.WriteAllText(path, m.ToJsonString());
        using var flash = new FlashLayoutModel(folder);
        Assert.All(flash.Ffn.Parts, p => Assert.Equal(DType.F16, p.DType));
        Assert.Equal(source.ReadF32("blk.1.ffn_down.weight"), flash.ReadF32("blk.1.ffn_down.weight"));
    }

    public static TheoryData<string, string> BadQuantFields => new()
    {
        { "part-dtype-missing", "ffn.bundle_parts[2]" },
        { "part-dtype-unquantized", "ffn.bundle_parts[2].dtype" },
        { "part-bytes", "ffn.bundle_parts[1].bytes" },
        { "part-offset-unaligned", "ffn.bundle_parts[1].offset" },
        { "top-dtype-not-first-part", "dtype" },
        { "dram-dtype-unknown", "dram.tensors[1].dtype" },
        { "dram-bytes", "dram.tensors[1].bytes" },
    };

    [Theory]
    [MemberData(nameof(BadQuantFields))]
    public void A_quantized_manifest_with_a_bad_field_names_the_key(string mutation, string key)
    {
        var (source, folder, _) = Convert(QuantTestModel.Llama(64), DType.Q4_0);
        source.Dispose();
        var path = Path.Combine(folder, "manifest.json");
        var m = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        var parts = m["ffn"]!["bundle_parts"]!.AsArray();
        var dram = m["dram"]!["tensors"]!.AsArray();
        switch (mutation)
        {
            case "part-dtype-missing": parts[2]!.AsObject().Remove("dtype"); break;
            case "part-dtype-unquantized":
                parts[2]!["dtype"] = "F16";
                parts[2]!["bytes"] = 128;
                break;
            case "part-bytes": parts[1]!["bytes"] = 34; break;
            case "part-offset-unaligned": parts[1]!["offset"] = 36; break;
            case "top-dtype-not-first-part": m["dtype"] = "Q8_0"; break;
            case "dram-dtype-unknown": dram[1]!["dtype"] = "IQ2_XXS"; break;
            case "dram-bytes": dram[1]!["bytes"] = (long)dram[1]!["bytes"]! + 2; break;
            default: throw new ArgumentException(mutation);
        }
        File.WriteAllText(path, m.ToJsonString());
        var e = Assert.Throws<ModelFormatException>(() => new FlashLayoutModel(folder));
        Assert.Equal(key, e.Key);
        Assert.Equal(path, e.FilePath);
    }
}
