using FlashLm.Formats.FlashLayout;
using Xunit;

namespace FlashLm.Tests.Layout;

/// <summary>`flashlm verify LAYOUT`: exit 0 on a sound layout; exit 1 listing bad bundles by layer, neuron and offset.</summary>
public sealed class VerifyCommandTests
{
    [Fact]
    public void Verify_passes_a_sound_layout_and_fails_a_flipped_bundle_naming_layer_neuron_and_offset()
    {
        using var layout = new SyntheticLayout(wide: false);
        var ok = CliRunner.Run("verify", layout.Folder);
        Assert.True(ok.ExitCode == 0, ok.Stderr);
        Assert.Contains("all good", ok.Stderr);
        Assert.Contains("every bundle", ok.Stderr);

        long offset;
        using (var model = new FlashLayoutModel(layout.Folder)) offset = model.Ffn.BundleOffset(1, 42);
        SyntheticLayout.FlipBit(layout.FfnPath, offset + 17, 6);
        var bad = CliRunner.Run("verify", layout.Folder);
        Assert.Equal(1, bad.ExitCode);
        Assert.Contains("layer 1 neuron 42", bad.Stderr);
        Assert.Contains($"offset {offset}", bad.Stderr);
        Assert.Contains("1 bad", bad.Stderr);
    }

    [Fact]
    public void Generate_on_a_flipped_bundle_fails_with_one_line_naming_layer_neuron_and_offset()
    {
        using var layout = new SyntheticLayout(wide: false);
        long offset;
        using (var model = new FlashLayoutModel(layout.Folder)) offset = model.Ffn.BundleOffset(0, 3);
        SyntheticLayout.FlipBit(layout.FfnPath, offset + 5, 2);
        // predictor all: every neuron of every layer is read, so the bad bundle is read at the first token.
        var r = CliRunner.Run("generate", "--model", layout.Folder, "--mode", "flash", "-n", "4", "--temperature", "0", "--predictor", "all");
        Assert.Equal(1, r.ExitCode);
        var error = r.Stderr.Split('\n').Single(l => l.StartsWith("flashlm: error:"));
        Assert.Contains("loader:", error);
        Assert.Contains("layer 0 neuron 3", error);
        Assert.Contains($"offset {offset}", error);
        Assert.DoesNotContain("Unhandled exception", r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr); // no stack trace
    }

    [Fact]
    public void With_verify_reads_off_a_flipped_bundle_is_not_checked()
    {
        using var layout = new SyntheticLayout(wide: false);
        long offset;
        using (var model = new FlashLayoutModel(layout.Folder)) offset = model.Ffn.BundleOffset(0, 3);
        SyntheticLayout.FlipBit(layout.FfnPath, offset + 5, 2);
        // The switch trusts the disk: the same run that fails with the check on (above) completes with it off.
        var r = CliRunner.Run("generate", "--model", layout.Folder, "--mode", "flash", "-n", "4", "--temperature", "0", "--predictor", "all",
            "--set", "loader.verify-reads=off");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.DoesNotContain("checksum mismatch", r.Stderr);
    }
}
