using Xunit;
using System.Runtime.InteropServices;
using FlashLm.Formats;
using Architecture = FlashLm.Formats.Architecture;
using FlashLm.Formats.FlashLayout;
using FlashLm.Formats.Llama2c;

namespace FlashLm.Tests;

/// <summary>stories260K converted once to the flash layout (F32), shared by the tests below.</summary>
public sealed class Stories260KLayoutFixture : IDisposable
{
    private readonly TempDir _tmp = new();
    public string Folder { get; } = "";

    public Stories260KLayoutFixture()
    {
        if (SharedModels.Dir is null) return;
        Folder = _tmp.Sub("stories260K.flash");
        using var src = OpenSource();
        FlashLayoutWriter.Convert(src, Folder);
    }

    public static Llama2cModel OpenSource() =>
        new(SharedModels.File("stories260K", "stories260K.bin"), SharedModels.File("stories260K", "tok512.bin"));

    public void Dispose() => _tmp.Dispose();
}

public sealed class FlashLayoutStoriesTests(Stories260KLayoutFixture fx) : IClassFixture<Stories260KLayoutFixture>
{
    [RequiresSharedModelsFact]
    public void EveryTensorReadsBackBitIdenticalToTheLlama2cSource()
    {
        using var src = Stories260KLayoutFixture.OpenSource();
        using var flash = new FlashLayoutModel(fx.Folder);
        Assert.Equal("flash", flash.Format);
        Assert.Equal(src.Config, flash.Config);
        Assert.Equal(DType.F32, flash.DType);
        Assert.Equal(src.Tensors.Keys.Order(), flash.Tensors.Keys.Order());
        foreach (var name in src.Tensors.Keys)
            TensorAssert.BitIdentical(src.Read(name), flash.Read(name), name);
        flash.Verify();
    }

    [RequiresSharedModelsFact]
    public void BundleHoldsGateRowUpRowAndDownColumnOfItsNeuron()
    {
        using var src = Stories260KLayoutFixture.OpenSource();
        using var flash = new FlashLayoutModel(fx.Folder);
        var ffn = flash.Ffn;
        int dim = src.Config.Dim, hid = src.Config.HiddenDim;
        Assert.Equal(["gate", "up", "down"], ffn.Parts.Select(p => p.Name));
        Assert.Equal([0L, dim * 4L, 2 * dim * 4L], ffn.Parts.Select(p => p.Offset));
        using var h = File.OpenHandle(ffn.FilePath);
        var bundle = new byte[ffn.BundleStride];
        for (int l = 0; l < src.Config.Layers; l++)
        {
            var gate = src.ReadF32(TensorNames.Block(l, TensorNames.FfnGate));
            var up = src.ReadF32(TensorNames.Block(l, TensorNames.FfnUp));
            var down = src.ReadF32(TensorNames.Block(l, TensorNames.FfnDown)); // [dim, hid]
            for (int i = 0; i < hid; i++)
            {
                Assert.Equal(bundle.Length, RandomAccess.Read(h, bundle, ffn.BundleOffset(l, i)));
                var f = MemoryMarshal.Cast<byte, float>(bundle.AsSpan(0, (int)ffn.BundleBytes));
                Assert.True(f[..dim].SequenceEqual(gate.AsSpan(i * dim, dim)), $"layer {l} neuron {i}: gate row");
                Assert.True(f.Slice(dim, dim).SequenceEqual(up.AsSpan(i * dim, dim)), $"layer {l} neuron {i}: up row");
                for (int j = 0; j < dim; j++)
                    Assert.Equal(down[j * hid + i], f[2 * dim + j]);
                Assert.True(bundle.AsSpan((int)ffn.BundleBytes).IndexOfAnyExcept((byte)0) < 0, $"layer {l} neuron {i}: padding is not zero");
            }
        }
    }

    [RequiresSharedModelsFact]
    public void OffsetsAndStridesAreAlignedForDirectIo()
    {
        using var flash = new FlashLayoutModel(fx.Folder);
        var ffn = flash.Ffn;
        Assert.Equal(3 * 64 * 4, ffn.BundleBytes); // 768 B
        Assert.Equal(1024, ffn.BundleStride);
        Assert.Equal(0, new FileInfo(ffn.FilePath).Length % FlashLayoutRules.PageSize);
        long previousEnd = 0;
        for (int l = 0; l < ffn.Layers; l++)
        {
            Assert.Equal(0, ffn.LayerOffset(l) % FlashLayoutRules.PageSize);
            Assert.True(ffn.LayerOffset(l) >= previousEnd);
            previousEnd = ffn.LayerOffset(l) + ffn.LayerBytes;
            for (int i = 0; i < ffn.Neurons; i++)
            {
                long at = ffn.BundleOffset(l, i);
                Assert.Equal(ffn.LayerOffset(l) + i * ffn.BundleStride, at);
                Assert.True(at % FlashLayoutRules.PageSize + ffn.BundleBytes <= FlashLayoutRules.PageSize, $"bundle {l}/{i} straddles a page");
            }
        }
        foreach (var t in flash.Tensors.Values.Where(t => t.FilePath == flash.DramPath))
            Assert.Equal(0, t.Offset % FlashLayoutRules.DramAlignment);
        Assert.DoesNotContain(flash.Tensors.Values, t => t.FilePath == flash.DramPath && TensorNames.IsFfnMatrix(t.Name));
        Assert.All(flash.Tensors.Values, t => Assert.Equal(TensorNames.IsFfnMatrix(t.Name), flash.IsOnFlash(t.Name)));
        Assert.All(flash.Tensors.Values.Where(t => flash.IsOnFlash(t.Name)), t => Assert.Equal(flash.Ffn.FilePath, t.FilePath));
    }

    [RequiresSharedModelsFact]
    public void TokenizerRoundTripsThroughTheLayoutFolder()
    {
        using var src = Stories260KLayoutFixture.OpenSource();
        using var flash = new FlashLayoutModel(fx.Folder);
        Assert.Equal(src.Tokenizer.Kind, flash.Tokenizer.Kind);
        Assert.Equal(src.Tokenizer.VocabSize, flash.Tokenizer.VocabSize);
        foreach (var prompt in new[] { "Once upon a time", "", "Lily's big, red ball!\n123", "héllo wörld ✓" })
            Assert.Equal(src.Tokenizer.Encode(prompt, true), flash.Tokenizer.Encode(prompt, true));
        Assert.Equal([1, 403, 407, 261, 378], flash.Tokenizer.Encode("Once upon a time", true));
        for (int id = 0; id < src.Tokenizer.VocabSize; id++)
        {
            Assert.Equal(src.Tokenizer.Piece(1, id), flash.Tokenizer.Piece(1, id));
            Assert.Equal(src.Tokenizer.Piece(300, id), flash.Tokenizer.Piece(300, id));
            Assert.Equal(src.Tokenizer.TokenText(id), flash.Tokenizer.TokenText(id));
        }
    }

    [RequiresSharedModelsFact]
    public void F32ToF16ConversionRoundsEveryValueLikeTheHalfCast()
    {
        using var tmp = new TempDir();
        using var src = Stories260KLayoutFixture.OpenSource();
        FlashLayoutWriter.Convert(src, tmp.Sub("f16"), DType.F16);
        using var flash = new FlashLayoutModel(tmp.Sub("f16"));
        Assert.Equal(DType.F16, flash.DType);
        Assert.Equal(3 * 64 * 2, flash.Ffn.BundleBytes);
        Assert.Equal(512, flash.Ffn.BundleStride);
        foreach (var name in src.Tensors.Keys)
        {
            var actual = flash.Read(name);
            if (src.Info(name).Shape.Length == 1)
            {
                // Vectors (norms) stay F32, exactly.
                Assert.Equal(DType.F32, actual.DType);
                Assert.Equal(src.ReadF32(name), actual.F32!);
                continue;
            }
            var expected = src.ReadF32(name).Select(v => (Half)v).ToArray();
            Assert.Equal(DType.F16, actual.DType);
            Assert.True(MemoryMarshal.AsBytes(expected.AsSpan()).SequenceEqual(MemoryMarshal.AsBytes(actual.F16!.AsSpan())), name);
        }
        flash.Verify();
    }
}

public sealed class FlashLayoutTests
{
    [Theory]
    [InlineData(768, 1024)]       // stories260K F32: 3 x 64 x 4
    [InlineData(384, 512)]
    [InlineData(96, 128)]
    [InlineData(4096, 4096)]
    [InlineData(4097, 8192)]
    [InlineData(16384, 16384)]    // OPT-6.7B F16: 2 x 4096 x 2
    [InlineData(24576, 24576)]    // Llama-7B F16: 3 x 4096 x 2
    [InlineData(6144, 8192)]
    public void BundleStrideIsPowerOfTwoBelowAPageElseWholePages(long bundleBytes, long stride)
    {
        Assert.Equal(stride, FlashLayoutRules.BundleStride(bundleBytes));
        Assert.True(FlashLayoutRules.IsValidStride(bundleBytes, stride));
        Assert.False(FlashLayoutRules.IsValidStride(bundleBytes, bundleBytes - 1));
        Assert.False(FlashLayoutRules.IsValidStride(bundleBytes, stride + 2));
    }

    public static TheoryData<string, int> RandomSources => new()
    {
        { "opt-f32", 0 },
        { "llama-f16", 1 },
        { "opt-f16", 2 },
        { "llama-bf16", 3 },
        { "llama-wide-f16", 4 },
    };

    private static RandomModel MakeSource(string kind, string file) => kind switch
    {
        "opt-f32" => new RandomModel(file, RandomModel.Opt(), DType.F32, 1),
        "llama-f16" => new RandomModel(file, RandomModel.Llama(), DType.F16, 2),
        "opt-f16" => new RandomModel(file, RandomModel.Opt(), DType.F16, 3),
        "llama-bf16" => new RandomModel(file, RandomModel.Llama(), DType.BF16, 4),
        // bundle 3 x 1024 x 2 = 6144 B: stride 8192, two pages per bundle.
        "llama-wide-f16" => new RandomModel(file, RandomModel.Llama(dim: 1024, hidden: 12, layers: 1), DType.F16, 5),
        _ => throw new ArgumentException(kind),
    };

    [Theory]
    [MemberData(nameof(RandomSources))]
    public void RandomSourceRoundTripsBitIdentical(string kind, int _)
    {
        using var tmp = new TempDir();
        using var src = MakeSource(kind, tmp.Sub("model.bin"));
        FlashLayoutWriter.Convert(src, tmp.Sub("layout"));
        Assert.True(FlashLayoutModel.IsLayoutFolder(tmp.Sub("layout")));
        using var flash = new FlashLayoutModel(tmp.Sub("layout"));
        // Default dtype: F16 only when everything was F16; BF16 widens to F32 exactly as Read does.
        Assert.Equal(src.StoredType == DType.F16 ? DType.F16 : DType.F32, flash.DType);
        Assert.Equal(src.Config, flash.Config);
        Assert.Equal(src.Tensors.Keys.Order(), flash.Tensors.Keys.Order());
        foreach (var name in src.Tensors.Keys)
            TensorAssert.BitIdentical(src.Read(name), flash.Read(name), name);
        flash.Verify();

        var ffn = flash.Ffn;
        Assert.Equal(FlashLayoutRules.BundleStride(ffn.BundleBytes), ffn.BundleStride);
        if (src.Config.Architecture == Architecture.Opt)
        {
            Assert.Equal(["up", "down"], ffn.Parts.Select(p => p.Name));
            Assert.Null(ffn.Part("gate"));
            // OPT's FFN biases are tiny and needed every token: they stay in dram.bin.
            Assert.Equal(flash.DramPath, flash.Info(TensorNames.Block(0, TensorNames.FfnUpBias)).FilePath);
            Assert.Equal(flash.DramPath, flash.Info(TensorNames.Block(0, TensorNames.FfnDownBias)).FilePath);
            Assert.Equal(flash.DramPath, flash.Info(TensorNames.PositionEmbedding).FilePath);
        }
        if (ffn.BundleBytes >= FlashLayoutRules.PageSize)
            Assert.Equal(0, ffn.BundleStride % FlashLayoutRules.PageSize);

        // One bundle, read directly: up row 3 and down column 3 of the last layer.
        int l = src.Config.Layers - 1, n = 3, dim = ffn.Dim;
        var up = src.ReadF32(TensorNames.Block(l, TensorNames.FfnUp));
        var down = src.ReadF32(TensorNames.Block(l, TensorNames.FfnDown));
        var raw = new byte[ffn.BundleBytes];
        using (var h = File.OpenHandle(ffn.FilePath)) RandomAccess.Read(h, raw, ffn.BundleOffset(l, n));
        float[] bundle = flash.DType == DType.F32
            ? MemoryMarshal.Cast<byte, float>(raw).ToArray()
            : MemoryMarshal.Cast<byte, Half>(raw).ToArray().Select(x => (float)x).ToArray();
        int upAt = (int)(ffn.Part("up")!.Offset / ffn.ElementSize), downAt = (int)(ffn.Part("down")!.Offset / ffn.ElementSize);
        for (int j = 0; j < dim; j++)
        {
            Assert.Equal(up[n * dim + j], bundle[upAt + j]);
            Assert.Equal(down[j * ffn.Neurons + n], bundle[downAt + j]);
        }
    }

    [Fact]
    public void ConvertOfAThreeLayerModelReportsProgressUpToTheTotal()
    {
        using var tmp = new TempDir();
        // bundle 3 x 704 x 4 = 8448 B: stride 12288 (three pages).
        using var src = new RandomModel(tmp.Sub("model.bin"), RandomModel.Llama(dim: 704, hidden: 600, layers: 3), DType.F32, 11);
        var reports = new List<(long done, long total)>();
        FlashLayoutWriter.Convert(src, tmp.Sub("layout"), progress: new SyncProgress(reports.Add));
        using var flash = new FlashLayoutModel(tmp.Sub("layout"));
        Assert.Equal(12288, flash.Ffn.BundleStride);

        long dramBytes = flash.Tensors.Values.Where(t => t.FilePath == flash.DramPath).Sum(t => t.ByteLength);
        long total = dramBytes + 3 * flash.Ffn.LayerBytes;
        Assert.True(reports.Count > 3);
        Assert.All(reports, r => Assert.Equal(total, r.total));
        Assert.Equal((total, total), reports[^1]);
        for (int i = 1; i < reports.Count; i++) Assert.True(reports[i].done >= reports[i - 1].done);
        // Progress must move during the FFN (per chunk), not jump from DRAM straight to the end.
        Assert.Contains(reports, r => r.done > dramBytes && r.done < total);
        foreach (var name in src.Tensors.Keys)
            TensorAssert.BitIdentical(src.Read(name), flash.Read(name), name);
    }

    [Fact]
    public void ThresholdsAreNullUntilWrittenAndRoundTrip()
    {
        using var tmp = new TempDir();
        using var src = new RandomModel(tmp.Sub("model.bin"), RandomModel.Llama(layers: 3), DType.F32, 1);
        var folder = tmp.Sub("layout");
        FlashLayoutWriter.Convert(src, folder);
        using (var flash = new FlashLayoutModel(folder)) Assert.Null(flash.Thresholds);
        Assert.Contains("\"thresholds\": null", File.ReadAllText(Path.Combine(folder, "manifest.json")));

        FlashLayoutWriter.WriteThresholds(folder, [0.125, 1e-7, 3.5]);
        using (var flash = new FlashLayoutModel(folder)) Assert.Equal([0.125, 1e-7, 3.5], flash.Thresholds!);
        Assert.Throws<ArgumentException>(() => FlashLayoutWriter.WriteThresholds(folder, [0.1]));
        Assert.Throws<ArgumentException>(() => FlashLayoutWriter.WriteThresholds(folder, [0.1, double.NaN, 0.2]));
        FlashLayoutWriter.WriteThresholds(folder, null);
        using (var flash = new FlashLayoutModel(folder)) Assert.Null(flash.Thresholds);
    }

    [Fact]
    public void ConvertReplacesALayoutButRefusesAnOtherNonEmptyFolder()
    {
        using var tmp = new TempDir();
        using var src = new RandomModel(tmp.Sub("model.bin"), RandomModel.Llama(), DType.F32, 1);
        var folder = tmp.Sub("layout");
        FlashLayoutWriter.Convert(src, folder);
        FlashLayoutWriter.Convert(src, folder, DType.F16); // replaces the F32 layout
        using (var flash = new FlashLayoutModel(folder)) Assert.Equal(DType.F16, flash.DType);

        var other = tmp.Sub("precious");
        Directory.CreateDirectory(other);
        File.WriteAllText(Path.Combine(other, "notes.txt"), "keep me");
        Assert.Throws<IOException>(() => FlashLayoutWriter.Convert(src, other));
        Assert.Equal("keep me", File.ReadAllText(Path.Combine(other, "notes.txt")));
        Assert.False(FlashLayoutModel.IsLayoutFolder(other));

        var empty = tmp.Sub("empty");
        Directory.CreateDirectory(empty);
        FlashLayoutWriter.Convert(src, empty);
        Assert.True(FlashLayoutModel.IsLayoutFolder(empty));
        // Only the model file and the three folders: no temp or old folders left behind.
        Assert.Equal(["empty", "layout", "precious"], Directory.GetDirectories(tmp.Path).Select(Path.GetFileName).Order());
    }

    [Fact]
    public void InterruptedConvertLeavesNoLayoutBehind()
    {
        using var tmp = new TempDir();
        using var src = new FailingModel(tmp.Sub("model.bin"), RandomModel.Llama(), TensorNames.Block(1, TensorNames.FfnDown));
        var folder = tmp.Sub("layout");
        var e = Assert.Throws<IOException>(() => FlashLayoutWriter.Convert(src, folder));
        Assert.Contains("simulated", e.Message);
        Assert.False(Directory.Exists(folder));
        Assert.Empty(Directory.GetDirectories(tmp.Path));
    }

    [Fact]
    public void ConvertRejectsStorageTypesTheLayoutDoesNotHold()
    {
        using var tmp = new TempDir();
        using var src = new RandomModel(tmp.Sub("model.bin"), RandomModel.Llama(), DType.F32, 1);
        Assert.Throws<ArgumentException>(() => FlashLayoutWriter.Convert(src, tmp.Sub("layout"), DType.Q8_0));
        Assert.False(Directory.Exists(tmp.Sub("layout")));
    }

    private sealed class SyncProgress(Action<(long, long)> report) : IProgress<(long done, long total)>
    {
        public void Report((long done, long total) value) => report(value);
    }
}
