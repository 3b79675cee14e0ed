using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Formats.Synth;
using FlashLm.Models.Predictors;
using Xunit;

namespace FlashLm.Tests.Cli;

/// <summary>`flashlm calibrate` refuses arguments it cannot honour with one line, and says what it stores.</summary>
public class CalibrateArgumentTests
{
    private static string TinyLayout(TempDir dir)
    {
        var gguf = dir.File("tiny.gguf");
        SyntheticModel.WriteGguf(gguf, SyntheticShapes.Get("tiny"), DType.F32, 3);
        using (var source = ModelLoader.Open(gguf)) FlashLayoutWriter.Convert(source, dir.File("layout"));
        return dir.File("layout");
    }

    private static void OneLineError(CliRunner.Result r, params string[] expected)
    {
        Assert.Equal(1, r.ExitCode);
        Assert.DoesNotContain("   at ", r.Stderr);
        Assert.DoesNotContain("Exception", r.Stderr);
        foreach (var e in expected) Assert.Contains(e, r.Stderr);
    }

    /// <summary>A mixture of experts is sparse by its router: calibrate records how often each expert is chosen (stored as the
    /// layout's activity, what pin = auto ranks by) and refuses thresholds and predictors, naming the option.</summary>
    [Fact]
    public void A_moe_layout_records_expert_frequencies_and_refuses_thresholds()
    {
        using var dir = new TempDir();
        var gguf = dir.File("moe.gguf");
        var config = SyntheticShapes.Get("qwen3moe-tiny");
        SyntheticModel.WriteGguf(gguf, config, DType.F32, 3);
        using (var source = ModelLoader.Open(gguf)) FlashLayoutWriter.Convert(source, dir.File("layout"));
        OneLineError(CliRunner.Run("calibrate", dir.File("layout"), "--sparsity", "0.5"), "mixture of experts", "--sparsity");
        OneLineError(CliRunner.Run("calibrate", dir.File("layout"), "--rank", "8"), "mixture of experts", "--rank");
        var r = CliRunner.Run("calibrate", dir.File("layout"), "--tokens", "32");
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("recorded expert frequencies on 32 positions", r.Stderr);
        using var layout = new FlashLayoutModel(dir.File("layout"));
        var activity = layout.LoadActivity();
        Assert.NotNull(activity);
        Assert.Equal(32, activity.Positions);
        foreach (var f in activity.Frequencies)
            Assert.Equal(config.ExpertsUsed, Enumerable.Range(0, config.Experts).Sum(e => (double)f[e * config.HiddenDim]), 4);
    }

    [Theory]
    [InlineData("0")]
    [InlineData("-5")]
    [InlineData("1")]
    public void Too_few_tokens_are_refused(string tokens)
    {
        using var dir = new TempDir();
        var r = CliRunner.Run("calibrate", TinyLayout(dir), "--tokens", tokens);
        OneLineError(r, $"--tokens {tokens}", "at least 2");
    }

    [Theory]
    [InlineData("--lookahead")]
    [InlineData("--epochs", "3")]
    [InlineData("--recall", "0.9")]
    public void Predictor_options_without_rank_are_refused(params string[] option)
    {
        using var dir = new TempDir();
        var r = CliRunner.Run(["calibrate", TinyLayout(dir), "--tokens", "64", .. option]);
        OneLineError(r, option[0], "--rank");
    }

    [Theory]
    [InlineData("--rank", "0")]
    [InlineData("--rank", "-3")]
    [InlineData("--sparsity", "1.5")]
    public void Out_of_range_values_are_refused(string option, string value)
    {
        using var dir = new TempDir();
        var r = CliRunner.Run("calibrate", TinyLayout(dir), "--tokens", "64", option, value);
        OneLineError(r, $"{option} {value}");
    }

    [Fact]
    public void A_rank_above_the_model_width_is_clamped_and_the_stored_rank_is_said()
    {
        using var dir = new TempDir();
        var layout = TinyLayout(dir);
        var c = SyntheticShapes.Get("tiny");
        int stored = Math.Min(c.Dim, c.HiddenDim);
        var r = CliRunner.Run("calibrate", layout, "--tokens", "64", "--rank", "100000", "--epochs", "1");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains($"--rank 100000 is more than min(dim {c.Dim}, neurons {c.HiddenDim}); training and storing rank {stored}", r.Stderr);
        Assert.Contains($"(rank {stored})", r.Stderr);
        using var model = new FlashLayoutModel(layout);
        var predictor = PredictorStore.Load(model, PredictorKind.SameLayer);
        Assert.NotNull(predictor);
        Assert.All(predictor.LayerWeights, w => Assert.Equal(stored, w.Rank));
    }
}
