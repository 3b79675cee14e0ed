using FlashLm.Models.Sampling;
using FlashLm.Runtime;
using FlashLm.Runtime.Config;
using Xunit;

namespace FlashLm.Tests.Runtime;

/// <summary>
/// The default predictor (auto) is deployable: with no trained predictors in the layout it reads every neuron (exact with the
/// thresholds applied in compute), builds no oracle (which would read the gate rows of ffn.bin at start and hold them
/// outside the budget), and prints exactly what the oracle's exact active sets print.
/// </summary>
public sealed class DefaultPredictorTests : IClassFixture<SyntheticFlashFixture>
{
    private readonly SyntheticFlashFixture _f;

    public DefaultPredictorTests(SyntheticFlashFixture f) => _f = f;

    [Fact]
    public void The_default_builds_no_oracle_and_prints_what_the_exact_oracle_prints()
    {
        using var auto = FlashRuntime.Open(_f.Folder, FlashPipelineTests.Settings("sparsity=0.5"), 24);
        Assert.Equal(PredictorKind.Auto, auto.Settings.Predictor);
        Assert.Equal(0, auto.OracleBytes);
        var (text, stats) = FlashPipelineTests.RunFlash(auto, "the robot", 24, SamplingOptions.Greedy);

        using var oracle = FlashRuntime.Open(_f.Folder, FlashPipelineTests.Settings("sparsity=0.5", "predictor=oracle"), 24);
        Assert.True(oracle.OracleBytes > 0);
        var (expected, _) = FlashPipelineTests.RunFlash(oracle, "the robot", 24, SamplingOptions.Greedy);
        Assert.Equal(expected, text);
        // Every neuron is named for every layer (no trained predictor to narrow it down).
        Assert.All(stats, s => Assert.Equal(_f.Layout.Config.HiddenDim * _f.Layout.Config.Layers, s.NeuronsActive));
    }
}
