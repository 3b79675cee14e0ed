using System.Text.Json.Nodes;
using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Runtime;
using FlashLm.Runtime.Config;
using Xunit;

namespace FlashLm.Tests.Layout;

/// <summary>Per-bundle checksums: written by convert, loaded at start, checked by verify; old layouts refused by the runtime.</summary>
public sealed class BundleChecksumTests
{
    [Fact]
    public void Convert_stores_one_checksum_per_bundle_that_matches_its_bytes_and_offset()
    {
        using var layout = new SyntheticLayout(wide: false);
        using var model = new FlashLayoutModel(layout.Folder);
        Assert.True(model.HasBundleChecksums);
        Assert.True(FlashLayoutModel.IsCurrentLayoutFolder(layout.Folder));
        var sums = model.LoadBundleChecksums();
        var ffn = File.ReadAllBytes(layout.FfnPath);
        Assert.Equal(BundleChecksums.FileBytes(model.Ffn), new FileInfo(sums.FilePath).Length);
        for (int l = 0; l < model.Ffn.Layers; l++)
            for (int n = 0; n < model.Ffn.Neurons; n += 37)
            {
                long at = model.Ffn.BundleOffset(l, n);
                var bundle = ffn.AsSpan((int)at, (int)model.Ffn.BundleBytes);
                Assert.Equal(BundleChecksums.Compute(bundle, at), sums.Expected(l, n));
                Assert.Null(sums.Check(bundle, at));
                // The seed is the offset: the right bytes presented as another bundle's do not pass.
                Assert.NotNull(sums.Check(bundle, model.Ffn.BundleOffset(l, (n + 1) % model.Ffn.Neurons)));
            }
    }

    [Fact]
    public void TryLocate_maps_bundle_starts_to_layer_and_neuron_and_rejects_any_other_offset()
    {
        using var layout = new SyntheticLayout(wide: true);
        using var model = new FlashLayoutModel(layout.Folder);
        var ffn = model.Ffn;
        Assert.True(ffn.TryLocate(ffn.BundleOffset(1, 5), out int l, out int n));
        Assert.Equal((1, 5), (l, n));
        Assert.True(ffn.TryLocate(ffn.LayerOffset(0), out l, out n));
        Assert.Equal((0, 0), (l, n));
        Assert.False(ffn.TryLocate(ffn.BundleOffset(1, 5) + 64, out _, out _));
        Assert.False(ffn.TryLocate(ffn.LayerOffset(1) + ffn.LayerBytes, out _, out _));
        Assert.False(ffn.TryLocate(-4096, out _, out _));
    }

    [Fact]
    public void Verify_reports_a_flipped_bundle_by_file_layer_neuron_and_offset_and_counts_every_bad_one()
    {
        using var layout = new SyntheticLayout(wide: true);
        long first, second;
        using (var model = new FlashLayoutModel(layout.Folder))
        {
            Assert.True(LayoutVerifier.Run(model).Ok);
            first = model.Ffn.BundleOffset(1, 7);
            second = model.Ffn.BundleOffset(0, 100);
        }
        SyntheticLayout.FlipBit(layout.FfnPath, first + 1000, 3);
        SyntheticLayout.FlipBit(layout.FfnPath, second + 5, 0);
        using (var model = new FlashLayoutModel(layout.Folder))
        {
            var result = LayoutVerifier.Run(model, maxProblems: 1);
            Assert.True(result.BundleLevel);
            Assert.Equal(2, result.Bad);
            var problem = Assert.Single(result.Problems); // listed in file order: layer 0 first
            Assert.Contains("ffn.bin", problem);
            Assert.Contains("layer 0 neuron 100", problem);
            Assert.Contains($"offset {second}", problem);
            // The dense read of the FFN matrix checks the bundles too.
            var e = Assert.Throws<ModelFormatException>(() => model.Read(TensorNames.Block(1, TensorNames.FfnUp)));
            Assert.Contains("layer 1 neuron 7", e.Message);
        }
    }

    [Fact]
    public void A_corrupt_checksum_file_is_refused_naming_it()
    {
        using var layout = new SyntheticLayout(wide: false);
        SyntheticLayout.FlipBit(Path.Combine(layout.Folder, BundleChecksums.DefaultFile), 12);
        using var model = new FlashLayoutModel(layout.Folder);
        var e = Assert.Throws<ModelFormatException>(() => model.LoadBundleChecksums());
        Assert.Contains(BundleChecksums.DefaultFile, e.Message);
        Assert.Contains("checksum mismatch", e.Message);
    }

    [Fact]
    public void A_layout_written_before_bundle_checksums_is_refused_by_the_runtime_with_a_reconvert_message_and_verified_by_sections()
    {
        using var layout = new SyntheticLayout(wide: false);
        var manifest = Path.Combine(layout.Folder, FlashLayoutRules.ManifestFile);
        var json = JsonNode.Parse(File.ReadAllText(manifest))!.AsObject();
        json["ffn"]!.AsObject().Remove("bundle_checksums");
        File.WriteAllText(manifest, json.ToJsonString());
        File.Delete(Path.Combine(layout.Folder, BundleChecksums.DefaultFile));

        Assert.True(FlashLayoutModel.IsLayoutFolder(layout.Folder));
        Assert.False(FlashLayoutModel.IsCurrentLayoutFolder(layout.Folder)); // caches of converted models convert it again
        using (var model = new FlashLayoutModel(layout.Folder))
        {
            Assert.False(model.HasBundleChecksums);
            var result = LayoutVerifier.Run(model);
            Assert.True(result.Ok);
            Assert.False(result.BundleLevel); // never reported as checked per bundle
        }
        var e = Assert.Throws<ModelFormatException>(() => FlashRuntime.Open(layout.Folder, RuntimeSettings.Compose([], ["predictor=all"]), 16));
        Assert.Contains("re-convert", e.Message);
        Assert.Contains("before per-bundle checksums", e.Message);
    }

    [Fact]
    public void An_unknown_checksum_algorithm_is_refused_naming_the_key()
    {
        using var layout = new SyntheticLayout(wide: false);
        var manifest = Path.Combine(layout.Folder, FlashLayoutRules.ManifestFile);
        var json = JsonNode.Parse(File.ReadAllText(manifest))!.AsObject();
        json["ffn"]!["bundle_checksums"]!["algorithm"] = "crc32";
        File.WriteAllText(manifest, json.ToJsonString());
        var e = Assert.Throws<ModelFormatException>(() => new FlashLayoutModel(layout.Folder));
        Assert.Contains("ffn.bundle_checksums.algorithm", e.Message);
    }

    [Fact]
    public void The_oracle_part_read_equals_the_verified_dense_read()
    {
        using var layout = new SyntheticLayout(wide: true);
        using var model = new FlashLayoutModel(layout.Folder);
        foreach (var part in new[] { FlashLayoutRules.Gate, FlashLayoutRules.Down })
        {
            var name = TensorNames.Block(1, part == FlashLayoutRules.Gate ? TensorNames.FfnGate : TensorNames.FfnDown);
            TensorAssert.BitIdentical(model.Read(name), model.ReadFfnPartUnverified(1, part), name);
        }
    }
}
