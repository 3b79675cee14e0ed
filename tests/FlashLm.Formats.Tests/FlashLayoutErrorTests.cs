using Xunit;
using System.Text.Json.Nodes;
using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;

namespace FlashLm.Tests;

public sealed class FlashLayoutErrorTests : IDisposable
{
    private readonly TempDir _tmp = new();
    private readonly string _folder;

    public FlashLayoutErrorTests()
    {
        // Llama, F16 (bundle 3 x 16 x 2 = 96 B, stride 128), 2 layers of 40 neurons.
        using var src = new RandomModel(_tmp.Sub("model.bin"), RandomModel.Llama(), DType.F16, 5);
        _folder = _tmp.Sub("layout");
        FlashLayoutWriter.Convert(src, _folder);
    }

    public void Dispose() => _tmp.Dispose();

    private string ManifestPath => Path.Combine(_folder, "manifest.json");
    private string DramPath => Path.Combine(_folder, "dram.bin");
    private string FfnPath => Path.Combine(_folder, "ffn.bin");

    private void EditManifest(Action<JsonObject> edit)
    {
        var root = JsonNode.Parse(File.ReadAllText(ManifestPath))!.AsObject();
        edit(root);
        File.WriteAllText(ManifestPath, root.ToJsonString());
    }

    private static void FlipByte(string file, long offset)
    {
        using var f = File.Open(file, FileMode.Open, FileAccess.ReadWrite);
        f.Position = offset;
        int b = f.ReadByte();
        f.Position = offset;
        f.WriteByte((byte)(b ^ 0x10));
    }

    [Fact]
    public void MissingManifestIsNotALayout()
    {
        File.Delete(ManifestPath);
        Assert.False(FlashLayoutModel.IsLayoutFolder(_folder));
        var e = Assert.Throws<ModelFormatException>(() => new FlashLayoutModel(_folder));
        Assert.Equal(ManifestPath, e.FilePath);
        Assert.Contains("manifest.json is missing", e.Message);
    }

    [Fact]
    public void ManifestThatIsNotJsonIsRejected()
    {
        File.WriteAllText(ManifestPath, "{\"format\": \"flashlm-layout\", \"version\": 1, ");
        var e = Assert.Throws<ModelFormatException>(() => new FlashLayoutModel(_folder));
        Assert.Equal(ManifestPath, e.FilePath);
        Assert.Contains("not valid JSON", e.Message);
    }

    public static TheoryData<string, string> BadFields => new()
    {
        { "format", "format" },
        { "version", "version" },
        { "architecture", "architecture" },
        { "dtype", "dtype" },
        { "dim-as-string", "dim" },
        { "missing-hidden-dim", "hidden_dim" },
        { "negative-dram-offset", "dram.tensors[1].offset" },
        { "unaligned-dram-offset", "dram.tensors[1].offset" },
        { "dram-bytes", "dram.tensors[0].bytes" },
        { "dram-hash", "dram.tensors[0].xxh64" },
        { "dram-overlap", "dram.tensors" },
        { "dram-missing-tensor", "dram.tensors" },
        { "dram-ffn-matrix", "dram.tensors[0].name" },
        { "dram-file-escapes", "dram.file" },
        { "stride-not-aligned", "ffn.bundle_stride" },
        { "stride-too-small", "ffn.bundle_stride" },
        { "bundle-bytes", "ffn.bundle_bytes" },
        { "part-order", "ffn.bundle_parts[0].name" },
        { "part-count", "ffn.bundle_parts" },
        { "layers-count", "ffn.layers" },
        { "layer-label", "ffn.layers[1].layer" },
        { "layer-neurons", "ffn.layers[0].neurons" },
        { "layer-negative-offset", "ffn.layers[0].offset" },
        { "layer-unaligned-offset", "ffn.layers[1].offset" },
        { "layer-overlap", "ffn.layers[1].offset" },
        { "layer-bytes", "ffn.layers[1].bytes" },
        { "thresholds-length", "thresholds" },
        { "tokenizer-kind", "tokenizer.kind" },
        { "tokenizer-file-missing", "tokenizer.files[0]" },
    };

    [Theory]
    [MemberData(nameof(BadFields))]
    public void ManifestWithABadFieldNamesManifestAndKey(string mutation, string key)
    {
        EditManifest(m =>
        {
            var dram = m["dram"]!["tensors"]!.AsArray();
            var ffn = m["ffn"]!.AsObject();
            var layers = ffn["layers"]!.AsArray();
            switch (mutation)
            {
                case "format": m["format"] = "gguf"; break;
                case "version": m["version"] = 2; break;
                case "architecture": m["architecture"] = "gpt-j"; break;
                case "dtype": m["dtype"] = "Q4_K"; break;
                case "dim-as-string": m["dim"] = "16"; break;
                case "missing-hidden-dim": m.Remove("hidden_dim"); break;
                case "negative-dram-offset": dram[1]!["offset"] = -64; break;
                case "unaligned-dram-offset": dram[1]!["offset"] = (long)dram[1]!["offset"]! + 2; break;
                case "dram-bytes": dram[0]!["bytes"] = (long)dram[0]!["bytes"]! - 2; break;
                case "dram-hash": dram[0]!["xxh64"] = "not-a-hash"; break;
                case "dram-overlap": dram[2]!["offset"] = dram[1]!["offset"]!.DeepClone(); break;
                case "dram-missing-tensor": dram.RemoveAt(dram.Count - 1); break;
                case "dram-ffn-matrix": dram[0]!["name"] = "blk.0.ffn_up.weight"; break;
                case "dram-file-escapes": m["dram"]!["file"] = "../dram.bin"; break;
                case "stride-not-aligned": ffn["bundle_stride"] = 3000; break;
                case "stride-too-small": ffn["bundle_stride"] = 64; break;
                case "bundle-bytes": ffn["bundle_bytes"] = 128; break;
                case "part-order":
                    ffn["bundle_parts"]![0]!["name"] = "up";
                    ffn["bundle_parts"]![1]!["name"] = "gate";
                    break;
                case "part-count": ffn["bundle_parts"]!.AsArray().RemoveAt(0); break;
                case "layers-count": layers.RemoveAt(1); break;
                case "layer-label": layers[1]!["layer"] = 0; break;
                case "layer-neurons": layers[0]!["neurons"] = 39; break;
                case "layer-negative-offset": layers[0]!["offset"] = -4096; break;
                case "layer-unaligned-offset": layers[1]!["offset"] = (long)layers[1]!["offset"]! + 128; break;
                case "layer-overlap": layers[1]!["offset"] = 0; break;
                case "layer-bytes": layers[1]!["bytes"] = (long)layers[1]!["bytes"]! + 4096; break;
                case "thresholds-length": m["thresholds"] = new JsonArray(0.5); break;
                case "tokenizer-kind": m["tokenizer"]!["kind"] = ""; break;
                case "tokenizer-file-missing": m["tokenizer"]!["files"] = new JsonArray("vocab.json"); break;
                default: throw new ArgumentException(mutation);
            }
        });
        var e = Assert.Throws<ModelFormatException>(() => new FlashLayoutModel(_folder));
        Assert.Contains("manifest.json", e.Message);
        if (mutation == "tokenizer-file-missing")
            Assert.EndsWith("vocab.json", e.FilePath); // names the missing file itself
        else
            Assert.Equal(ManifestPath, e.FilePath);
        // A missing required field surfaces through System.Text.Json: the key is in the message.
        if (mutation == "missing-hidden-dim") Assert.Contains(key, e.Message);
        else Assert.Equal(key, e.Key);
        Assert.False(string.IsNullOrWhiteSpace(e.Message));
    }

    [Theory]
    [InlineData("dram")]
    [InlineData("ffn")]
    public void OffsetNearTheEndOfTheRangeIsBoundsCheckedWithoutOverflow(string which)
    {
        long huge = long.MaxValue / 8192 * 4096; // aligned for both files; offset + bytes would overflow a naive check
        EditManifest(m =>
        {
            if (which == "dram") m["dram"]!["tensors"]![0]!["offset"] = long.MaxValue - 63;
            else m["ffn"]!["layers"]![1]!["offset"] = huge * 2;
        });
        var e = Assert.Throws<ModelFormatException>(() => new FlashLayoutModel(_folder));
        Assert.Equal(which == "dram" ? DramPath : FfnPath, e.FilePath);
        Assert.Contains("corrupted or incomplete", e.Message);
    }

    [Fact]
    public void TruncatedFfnFileIsReportedOnOpenWithTheLayerSection()
    {
        long size = new FileInfo(FfnPath).Length;
        using (var f = File.Open(FfnPath, FileMode.Open)) f.SetLength(size / 2);
        var e = Assert.Throws<ModelFormatException>(() => new FlashLayoutModel(_folder));
        Assert.Equal(FfnPath, e.FilePath);
        Assert.Contains("corrupted or incomplete", e.Message);
        Assert.Equal("ffn layer 1", e.Key);
        Assert.NotNull(e.Offset);
    }

    [Fact]
    public void TruncatedDramFileIsReportedOnOpenWithTheTensor()
    {
        long size = new FileInfo(DramPath).Length;
        using (var f = File.Open(DramPath, FileMode.Open)) f.SetLength(size - 10);
        var e = Assert.Throws<ModelFormatException>(() => new FlashLayoutModel(_folder));
        Assert.Equal(DramPath, e.FilePath);
        Assert.Contains("corrupted or incomplete", e.Message);
        Assert.Equal("output.weight", e.Key); // the last tensor written
    }

    [Fact]
    public void FlippedByteInADramTensorFailsItsReadNamingTheTensor()
    {
        string name = TensorNames.Block(1, TensorNames.AttnQ);
        long offset;
        using (var flash = new FlashLayoutModel(_folder)) offset = flash.Info(name).Offset;
        FlipByte(DramPath, offset + 7);

        using var model = new FlashLayoutModel(_folder); // opening does not hash everything
        var e = Assert.Throws<ModelFormatException>(() => model.Read(name));
        Assert.Equal(DramPath, e.FilePath);
        Assert.Equal(name, e.Key);
        Assert.Equal(offset, e.Offset);
        Assert.Contains("checksum mismatch", e.Message);
        Assert.Contains(name, e.Message);
        model.Read(TensorNames.Block(0, TensorNames.AttnQ)); // neighbours still read
        var v = Assert.Throws<ModelFormatException>(model.Verify);
        Assert.Equal(name, v.Key);
    }

    [Fact]
    public void FlippedByteInFfnFileIsCaughtByVerify()
    {
        long at;
        using (var flash = new FlashLayoutModel(_folder)) at = flash.Ffn.BundleOffset(1, 17) + 5;
        FlipByte(FfnPath, at);

        using var model = new FlashLayoutModel(_folder);
        model.Ffn.VerifyLayer(0);
        var e = Assert.Throws<ModelFormatException>(model.Verify);
        Assert.Equal(FfnPath, e.FilePath);
        Assert.Equal("ffn layer 1", e.Key);
        Assert.Equal(model.Ffn.LayerOffset(1), e.Offset);
        Assert.Contains("checksum mismatch", e.Message);
        // The dense read of that layer's matrices also refuses the corrupted section.
        var r = Assert.Throws<ModelFormatException>(() => model.Read(TensorNames.Block(1, TensorNames.FfnUp)));
        Assert.Equal(FfnPath, r.FilePath);
        model.Read(TensorNames.Block(0, TensorNames.FfnUp));
    }

    [Fact]
    public void FolderThatDoesNotExistIsAFormatError()
    {
        var e = Assert.Throws<ModelFormatException>(() => new FlashLayoutModel(_tmp.Sub("nope")));
        Assert.Contains("not found", e.Message);
        Assert.False(FlashLayoutModel.IsLayoutFolder(_tmp.Sub("nope")));
    }
}
