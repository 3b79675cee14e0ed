using System.Text;
using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Formats.Synth;
using FlashLm.Models;
using FlashLm.Models.Llama;
using FlashLm.Models.Sampling;
using FlashLm.Models.Sparsity;
using FlashLm.Runtime;
using Xunit;
using static FlashLm.Tests.FlashPipelineTests;

namespace FlashLm.Tests;

/// <summary>The tiny-relu shape (a ReLU-fied Llama, random weights, F32) in flash layout, made once per test class.</summary>
public sealed class ReluLayoutFixture : IDisposable
{
    private readonly TempDir _dir = new();

    public ReluLayoutFixture() => Folder = SyntheticModels.WriteLayout(_dir.File("tiny-relu.flash"), SyntheticShapes.Get("tiny-relu"), seed: 23);

    public string Folder { get; }

    public void Dispose() => _dir.Dispose();
}

/// <summary>
/// The flash path on a ReLU / FATReLU Llama is exact: it prints what the dense model with the same activation and thresholds
/// prints, reading only the neurons whose gate . x passes the threshold (about half by themselves, a tenth once calibrated
/// to 90 %), with the oracle and with gate-resident selection.
/// </summary>
public sealed class ReluFlashTests(ReluLayoutFixture f) : IClassFixture<ReluLayoutFixture>
{
    private const string Prompt = "Once upon a time";
    private const int Steps = 64;

    private static string Dense(ModelSource source, float[]? thresholds)
    {
        var net = new LlamaModel(source, new DenseSwiGlu(source, thresholds));
        var output = new MemoryStream();
        Generator.Run(net, source.Tokenizer, Prompt, Steps, new Sampler(source.Config.VocabSize, SamplingOptions.Greedy, new XorShiftRandom(0)), p => output.Write(p));
        output.Write("\n"u8);
        return Encoding.UTF8.GetString(output.ToArray());
    }

    private (string Text, double Active) Flash(string predictor, float[]? thresholds)
    {
        using var runtime = FlashRuntime.Open(f.Folder, Settings($"predictor={predictor}"), Steps, thresholds: thresholds);
        if (thresholds is null) Assert.Equal(Enumerable.Repeat(0f, runtime.Config.Layers), runtime.Thresholds!); // the model's own ReLU threshold
        var (stdout, stats) = RunFlash(runtime, Prompt, Steps, SamplingOptions.Greedy);
        var c = runtime.Config;
        return (Encoding.UTF8.GetString(stdout), stats.Average(s => s.NeuronsActive) / ((double)c.Layers * c.HiddenDim));
    }

    [Theory]
    [InlineData("oracle")]
    [InlineData("gate")]
    public void Relu_flash_prints_what_the_dense_relu_model_prints_reading_about_half_the_neurons(string predictor)
    {
        using var source = new FlashLayoutModel(f.Folder);
        Assert.Equal(FfnActivation.Relu, source.Config.Activation);
        var expected = Dense(source, null);
        var (text, active) = Flash(predictor, null);
        Assert.Equal(expected, text);
        Assert.InRange(active, 0.4, 0.6);
    }

    [Theory]
    [InlineData("oracle")]
    [InlineData("gate")]
    public void Calibrated_to_90_percent_the_flash_path_prints_what_the_dense_fatrelu_model_prints(string predictor)
    {
        using var source = new FlashLayoutModel(f.Folder);
        var thresholds = Calibrator.Calibrate(source, Calibrator.Sequences(source, null, 128), 0.9).Thresholds;
        Assert.All(thresholds, t => Assert.True(t > 0));
        var expected = Dense(source, thresholds);
        var (text, active) = Flash(predictor, thresholds);
        Assert.Equal(expected, text);
        Assert.InRange(active, 0.05, 0.15);
        // The thresholds matter: the 90 % model prints something else than the plain ReLU one.
        Assert.NotEqual(Dense(source, null), expected);
    }

    [Fact]
    public void Layout_thresholds_written_by_calibration_are_what_a_run_without_a_target_uses()
    {
        using var dir = new TempDir();
        var folder = SyntheticModels.WriteLayout(dir.File("relu.flash"), SyntheticShapes.Get("tiny-relu") with { Layers = 2 }, seed: 29);
        float[] thresholds;
        using (var source = new FlashLayoutModel(folder))
            thresholds = Calibrator.Calibrate(source, Calibrator.Sequences(source, null, 64), 0.9).Thresholds;
        FlashLayoutWriter.WriteThresholds(folder, thresholds.Select(t => (double)t).ToArray());
        using var runtime = FlashRuntime.Open(folder, Settings("predictor=gate"), 16);
        Assert.Equal(thresholds, runtime.Thresholds!);
        Assert.Equal(FfnActivation.Relu, runtime.Config.Activation);
    }
}
