using FlashLm.Formats.FlashLayout;
using FlashLm.Models.Sampling;
using FlashLm.Runtime;
using FlashLm.Runtime.Config;
using Xunit;

namespace FlashLm.Tests.Runtime;

/// <summary>
/// The default predictor (auto) is deployable: nothing it uses lives outside the budget. Without trained predictors it takes
/// gate-resident selection when the model is sparse and the gates fit beside a quarter of every layer's neurons (exact:
/// the oracle's computation, its weights read checked and counted in the budget), and otherwise reads every neuron (exact
/// with the thresholds applied in compute, no FFN weights read at start).
/// </summary>
public sealed class DefaultPredictorTests : IClassFixture<SyntheticFlashFixture>
{
    private readonly SyntheticFlashFixture _f;

    public DefaultPredictorTests(SyntheticFlashFixture f) => _f = f;

    private long GateBytes => FlashRuntime.GateResidentBytes(_f.Ffn, _f.Layout.Config.Architecture);

    private (byte[] Text, List<FlashLm.Runtime.Session.TokenStats> Stats) Oracle(string sparsity)
    {
        using var oracle = FlashRuntime.Open(_f.Folder, FlashPipelineTests.Settings(sparsity, "predictor=oracle"), 24);
        Assert.True(oracle.OracleBytes > 0);
        Assert.Equal(0, oracle.Plan.PredictorBytes); // the oracle is outside the budget
        return FlashPipelineTests.RunFlash(oracle, "the robot", 24, SamplingOptions.Greedy);
    }

    [Fact]
    public void Auto_takes_gate_resident_selection_when_it_fits_and_prints_what_the_exact_oracle_prints()
    {
        using var auto = FlashRuntime.Open(_f.Folder, FlashPipelineTests.Settings("sparsity=0.5"), 24);
        Assert.Equal(PredictorKind.Auto, auto.Settings.Predictor);
        Assert.StartsWith("gate-resident", auto.Plan.Predictor);
        Assert.Equal(0, auto.OracleBytes);
        Assert.Equal(GateBytes, auto.Plan.PredictorBytes);
        Assert.True(auto.Plan.Weights >= GateBytes, "the gates are counted with the DRAM-resident weights");
        var (text, stats) = FlashPipelineTests.RunFlash(auto, "the robot", 24, SamplingOptions.Greedy);
        var (expected, oracleStats) = Oracle("sparsity=0.5");
        Assert.Equal(expected, text);
        // Exactly the oracle's sets, so strictly fewer neurons than every neuron of every layer.
        Assert.Equal(oracleStats.Select(s => s.NeuronsActive), stats.Select(s => s.NeuronsActive));
        Assert.All(stats, s => Assert.True(s.NeuronsActive < _f.Layout.Config.HiddenDim * _f.Layout.Config.Layers));
    }

    [Fact]
    public void Auto_reads_every_neuron_for_a_dense_model_and_builds_no_gates()
    {
        using var auto = FlashRuntime.Open(_f.Folder, FlashPipelineTests.Settings("sparsity=0"), 24);
        Assert.Equal("all", auto.Plan.Predictor);
        Assert.Equal(0, auto.Plan.PredictorBytes);
        var (_, stats) = FlashPipelineTests.RunFlash(auto, "the robot", 24, SamplingOptions.Greedy);
        Assert.All(stats, s => Assert.Equal(_f.Layout.Config.HiddenDim * _f.Layout.Config.Layers, s.NeuronsActive));
    }

    [Fact]
    public void Auto_reads_every_neuron_when_the_gates_would_leave_too_small_a_cache_and_prints_the_same()
    {
        // A budget that holds the gates beside an eighth of every layer's neurons only (auto wants a quarter).
        using var probe = FlashRuntime.Open(_f.Folder, FlashPipelineTests.Settings("sparsity=0.5", "predictor=all"), 24);
        long withoutGates = probe.Plan.Total - probe.Plan.CacheRows; // weights, KV, buffers
        long rowBytes = probe.Plan.CacheRows / probe.Plan.RowsPerLayer;
        long budget = withoutGates + GateBytes + rowBytes * (_f.Ffn.Neurons / 8);
        using var auto = FlashRuntime.Open(_f.Folder, FlashPipelineTests.Settings("sparsity=0.5", $"dram-budget={budget}"), 24);
        Assert.Equal("all", auto.Plan.Predictor);
        Assert.Equal(0, auto.Plan.PredictorBytes);
        var (text, _) = FlashPipelineTests.RunFlash(auto, "the robot", 24, SamplingOptions.Greedy);
        Assert.Equal(Oracle("sparsity=0.5").Text, text);
        // The same budget with the gates forced: they are counted, so fewer cache rows remain.
        using var gate = FlashRuntime.Open(_f.Folder, FlashPipelineTests.Settings("sparsity=0.5", $"dram-budget={budget}", "predictor=gate"), 24);
        Assert.StartsWith("gate-resident", gate.Plan.Predictor);
        Assert.True(gate.Plan.RowsPerLayer < auto.Plan.RowsPerLayer, $"{gate.Plan.RowsPerLayer} rows with the gates, {auto.Plan.RowsPerLayer} without");
        Assert.True(gate.Plan.Total <= budget);
    }

    [Fact]
    public void A_budget_too_small_for_the_gates_is_refused_naming_what_it_must_hold()
    {
        using var probe = FlashRuntime.Open(_f.Folder, FlashPipelineTests.Settings("sparsity=0.5", "predictor=all"), 24);
        long minimumWithout = probe.Plan.Total - probe.Plan.CacheRows + probe.Plan.CacheRows / probe.Plan.RowsPerLayer * 16;
        var e = Assert.Throws<DramBudgetException>(() =>
            FlashRuntime.Open(_f.Folder, FlashPipelineTests.Settings("sparsity=0.5", $"dram-budget={minimumWithout + GateBytes / 2}", "predictor=gate"), 24));
        Assert.Contains("DRAM-resident weights", e.Message);
    }
}

/// <summary>
/// Lookahead with gate-resident selection guesses layer N+1's set by applying layer N+1's resident gate to layer N's FFN
/// input; the guess is scored against the set layer N+1 then used. A wrong guess costs bytes, never output.
/// </summary>
public sealed class GateLookaheadTests : IClassFixture<SyntheticFlashFixture>
{
    private readonly SyntheticFlashFixture _f;

    public GateLookaheadTests(SyntheticFlashFixture f) => _f = f;

    private (byte[] Text, List<FlashLm.Runtime.Session.TokenStats> Stats, string Predictor) Run(params string[] settings)
    {
        using var rt = FlashRuntime.Open(_f.Folder, FlashPipelineTests.Settings(["sparsity=0.5", "predictor=gate", .. settings]), 24);
        var (text, stats) = FlashPipelineTests.RunFlash(rt, "the robot", 24, SamplingOptions.Greedy);
        return (text, stats, rt.Plan.Predictor);
    }

    [Fact]
    public void The_gate_guess_is_scored_and_changes_no_output()
    {
        var (off, offStats, offName) = Run("lookahead=off");
        Assert.Equal("gate-resident", offName);
        Assert.All(offStats, s => Assert.Null(s.LookaheadGuessed));

        var (gate, stats, name) = Run("lookahead=on");
        Assert.Equal("gate-resident (gate guess ahead)", name);
        Assert.Equal(off, gate);
        foreach (var s in stats)
        {
            // Every layer but the first had a guess made during the layer before.
            Assert.NotNull(s.LookaheadGuessed);
            Assert.InRange(s.LookaheadGuessHits!.Value, 0, Math.Min(s.LookaheadGuessed!.Value, s.LookaheadGuessTruth!.Value));
            Assert.True(s.LookaheadGuessTruth <= s.NeuronsActive, "the scored layers are a subset of the token's layers");
        }
        // Layer 1..L-1's sets: the truth summed over the scored layers is the token's total minus layer 0's.
        Assert.Contains(stats, s => s.LookaheadGuessTruth < s.NeuronsActive);

        var (previous, prevStats, prevName) = Run("lookahead=on", "lookahead-guess=previous");
        Assert.Equal("gate-resident", prevName);
        Assert.Equal(off, previous);
        // The first position has no previous token: nothing guessed for it.
        Assert.True(prevStats[0].LookaheadGuessed is null or 0);
    }

    [Fact]
    public void A_gate_guess_without_resident_gates_is_refused_naming_the_key()
    {
        var e = Assert.Throws<SettingsException>(() =>
            FlashRuntime.Open(_f.Folder, FlashPipelineTests.Settings("sparsity=0.5", "predictor=all", "lookahead-guess=gate"), 24));
        Assert.Equal("flashlm.lookahead-guess", e.Key);
        e = Assert.Throws<SettingsException>(() => RuntimeSettings.From(FlashPipelineTests.Settings("lookahead-guess=sometimes")));
        Assert.Equal("flashlm.lookahead-guess", e.Key);
        Assert.Contains("sometimes", e.Message);
    }
}
