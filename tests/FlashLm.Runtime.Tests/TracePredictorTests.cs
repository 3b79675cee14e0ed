using FlashLm.Formats;
using FlashLm.Models.Sampling;
using FlashLm.Runtime;
using FlashLm.Runtime.Config;
using FlashLm.Runtime.Predict;
using Xunit;

namespace FlashLm.Tests.Runtime;

/// <summary>
/// Trace-driven selection (the bench's predictor rungs on synthetic models): a trace recorded with the oracle replays, degraded
/// to a stated recall and over-selection, while a rank-r predictor's weights are counted in the budget and its products run.
/// </summary>
public sealed class TracePredictorTests : IClassFixture<SyntheticFlashFixture>
{
    private readonly SyntheticFlashFixture _f;

    public TracePredictorTests(SyntheticFlashFixture f) => _f = f;

    private const int Positions = 24;

    /// <summary>Records the oracle's exact sets along a greedy run of "the robot" into a trace file.</summary>
    private (string File, byte[] Text, List<FlashLm.Runtime.Session.TokenStats> Stats) Record(TempDir dir)
    {
        var recorder = new TraceRecorder();
        using var oracle = FlashRuntime.Open(_f.Folder, FlashPipelineTests.Settings("sparsity=0.5", "predictor=oracle", "lookahead=off"), Positions,
            new RuntimeHooks { Record = recorder });
        var (text, stats) = FlashPipelineTests.RunFlash(oracle, "the robot", Positions, SamplingOptions.Greedy);
        var c = oracle.Config;
        var file = dir.File("run.flmtrace");
        recorder.ToTrace(c.Layers, c.HiddenDim, [1, 2, 3], oracle.Thresholds).Save(file);
        return (file, text, stats);
    }

    private FlashRuntime Replay(string file, double recall, double over, params string[] more) =>
        FlashRuntime.Open(_f.Folder, FlashPipelineTests.Settings([
            .. more, // the first of two settings of a key wins
            "sparsity=0.5", "predictor=trace", $"trace.file={file}", FormattableString.Invariant($"trace.recall={recall}"),
            FormattableString.Invariant($"trace.over-selection={over}"), "trace.rank=8", "lookahead=off"]), Positions);

    [Fact]
    public void At_full_recall_and_no_over_selection_the_replay_prints_what_the_oracle_printed_and_pays_its_predictor_inside_the_budget()
    {
        using var dir = new TempDir();
        var (file, expected, oracleStats) = Record(dir);
        using var replay = Replay(file, 1, 1);
        Assert.StartsWith("trace-driven selection at recall 1, over-selection 1, rank-8 predictor cost", replay.Plan.Predictor);
        Assert.Equal(0, replay.OracleBytes);
        var c = _f.Layout.Config;
        // The stand-in rank-8 predictor's F32 weights (A: 8 x dim, B: neurons x 8, bias) are inside the plan.
        long standIn = 4L * c.Layers * (8L * c.Dim + 8L * c.HiddenDim + c.HiddenDim);
        Assert.True(replay.Plan.PredictorBytes >= standIn, $"predictor bytes {replay.Plan.PredictorBytes}, stand-in alone {standIn}");
        Assert.True(replay.Plan.Weights >= replay.Plan.PredictorBytes);
        var (text, stats) = FlashPipelineTests.RunFlash(replay, "the robot", Positions, SamplingOptions.Greedy);
        Assert.Equal(expected, text);
        Assert.Equal(oracleStats.Select(s => s.NeuronsActive), stats.Select(s => s.NeuronsActive));
        Assert.All(stats.Where(s => !s.Prefill), s => Assert.True(s.PredictMs > 0, "the stand-in predictor's products are timed"));
    }

    [Fact]
    public void With_lookahead_a_second_stand_in_guesses_layer_n_plus_1_from_the_trace_and_is_counted_too()
    {
        using var dir = new TempDir();
        var (file, expected, _) = Record(dir);
        using var plain = Replay(file, 1, 1);
        using var ahead = Replay(file, 1, 1, "lookahead=on");
        Assert.EndsWith("(and as lookahead)", ahead.Plan.Predictor);
        Assert.True(ahead.Plan.PredictorBytes > 1.9 * plain.Plan.PredictorBytes, $"{ahead.Plan.PredictorBytes} vs {plain.Plan.PredictorBytes}");
        var (text, stats) = FlashPipelineTests.RunFlash(ahead, "the robot", Positions, SamplingOptions.Greedy);
        Assert.Equal(expected, text);
        // At full recall and no over-selection the guess for layer N+1 is exactly the set it then uses.
        var decode = stats.Where(s => !s.Prefill && s.LookaheadGuessed is > 0).ToList();
        Assert.NotEmpty(decode);
        Assert.All(decode, s => Assert.Equal(s.LookaheadGuessed, s.LookaheadGuessHits));
        Assert.All(decode, s => Assert.Equal(s.LookaheadGuessTruth, s.LookaheadGuessHits));
        // Degraded, the guess (its own draws) still holds about recall^2 of the exact set that the layer's set holds too: its
        // hits are at least that share of the exact neurons, so precision is at least recall^2 / over-selection.
        using var degraded = Replay(file, 0.975, 2, "lookahead=on");
        var (_, dstats) = FlashPipelineTests.RunFlash(degraded, "the robot", Positions, SamplingOptions.Greedy);
        var d2 = dstats.Where(s => !s.Prefill && s.LookaheadGuessed is > 0).ToList();
        double precision = d2.Sum(s => (double)s.LookaheadGuessHits!.Value) / d2.Sum(s => s.LookaheadGuessed!.Value);
        Assert.True(precision >= 0.975 * 0.975 / 2 * 0.95, $"lookahead guess precision {precision:P1} at recall 0.975, over-selection 2");
        // lookahead-guess = previous keeps the previous token's sets instead (no second stand-in).
        using var previous = Replay(file, 1, 1, "lookahead=on", "lookahead-guess=previous");
        Assert.Equal(plain.Plan.PredictorBytes, previous.Plan.PredictorBytes);
    }

    [Fact]
    public void Degraded_replay_names_the_stated_share_of_the_exact_sets_plus_near_threshold_neurons()
    {
        using var dir = new TempDir();
        var (file, _, _) = Record(dir);
        var trace = ActivationTrace.Load(file);
        var d = new TraceDegradation(0.8, 1.5, 4, 7);
        var p = new TracePredictor(trace, file, d, _f.Layout.Config.Dim);
        Assert.InRange(p.AchievedRecall, 0.78, 0.82);
        Assert.InRange(p.AchievedOverSelection, 1.45, 1.55);
        var x = new float[_f.Layout.Config.Dim];
        long near = 0, added = 0;
        foreach (var (pos, layer, entry) in trace.Entries())
        {
            var set = p.Active(layer, x, pos);
            Assert.Equal(set.Order().ToArray(), set); // ascending
            Assert.Equal(set.Length, set.Distinct().Count());
            var exact = entry.Active.ToHashSet();
            var extra = set.Where(i => !exact.Contains(i)).ToArray();
            int kept = set.Length - extra.Length;
            Assert.Equal((int)Math.Round(0.8 * exact.Count), kept);
            added += extra.Length;
            near += extra.Count(entry.Near.Contains);
        }
        Assert.True(added > 0 && near == added, $"{near} of {added} false positives from the near-threshold lists");
        // Deterministic in the seed, different across seeds.
        var again = new TracePredictor(trace, file, d, _f.Layout.Config.Dim);
        var other = new TracePredictor(trace, file, d with { Seed = 8 }, _f.Layout.Config.Dim);
        var (p0, l0, _) = trace.Entries().Last();
        Assert.Equal(p.Active(l0, x, p0), again.Active(l0, x, p0));
        Assert.Contains(trace.Entries(), e => !p.Active(e.Layer, x, e.Position).SequenceEqual(other.Active(e.Layer, x, e.Position)));
        // A position the trace does not cover fails naming the file, the position and the layer.
        var e = Assert.Throws<InvalidOperationException>(() => p.Active(0, x, trace.Positions + 3));
        Assert.Contains(file, e.Message);
        Assert.Contains($"position {trace.Positions + 3}, layer 0", e.Message);
    }

    [Fact]
    public void A_lower_recall_reads_fewer_of_the_exact_neurons_and_more_over_selection_reads_more()
    {
        using var dir = new TempDir();
        var (file, _, oracleStats) = Record(dir);
        long Active(double recall, double over)
        {
            using var rt = Replay(file, recall, over);
            return FlashPipelineTests.RunFlash(rt, "the robot", Positions, SamplingOptions.Greedy).Stats.Sum(s => (long)s.NeuronsActive);
        }
        long exact = oracleStats.Sum(s => (long)s.NeuronsActive);
        long low = Active(0.5, 0.5), wide = Active(1, 2);
        Assert.InRange(low, (long)(exact * 0.45), (long)(exact * 0.55));
        Assert.InRange(wide, (long)(exact * 1.9), (long)(exact * 2.1));
    }

    [Fact]
    public void A_corrupt_truncated_or_foreign_trace_is_refused_naming_the_file()
    {
        using var dir = new TempDir();
        var (file, _, _) = Record(dir);
        var bytes = File.ReadAllBytes(file);
        var flipped = dir.File("flipped.flmtrace");
        var copy = bytes.ToArray();
        copy[copy.Length / 2] ^= 0x40;
        File.WriteAllBytes(flipped, copy);
        var e = Assert.Throws<ModelFormatException>(() => ActivationTrace.Load(flipped));
        Assert.Contains("flipped.flmtrace", e.Message);
        Assert.Contains("checksum", e.Message);
        var cut = dir.File("cut.flmtrace");
        File.WriteAllBytes(cut, bytes[..(bytes.Length / 3)]);
        Assert.Throws<ModelFormatException>(() => ActivationTrace.Load(cut));
        var foreign = dir.File("foreign.flmtrace");
        File.WriteAllText(foreign, "not a trace at all, just text");
        Assert.Contains("FLMTRC02", Assert.Throws<ModelFormatException>(() => ActivationTrace.Load(foreign)).Message);
        // Opening a runtime on it fails the same way, before anything runs.
        Assert.Throws<ModelFormatException>(() => Replay(flipped, 1, 1));
        // A trace recorded at other thresholds is refused: its sets would not be this model's.
        var other = Assert.Throws<ModelFormatException>(() => FlashRuntime.Open(_f.Folder,
            FlashPipelineTests.Settings("sparsity=0.8", "predictor=trace", $"trace.file={file}"), Positions));
        Assert.Contains("thresholds", other.Message);
    }

    [Theory]
    [InlineData("trace.recall=0", "flashlm.trace.recall")]
    [InlineData("trace.recall=1.5", "flashlm.trace.recall")]
    [InlineData("trace.over-selection=0.5", "flashlm.trace.over-selection")]
    [InlineData("trace.rank=0", "flashlm.trace.rank")]
    [InlineData("trace.seed=-1", "flashlm.trace.seed")]
    [InlineData("predictor=trace", "flashlm.trace.file")]
    public void Bad_trace_settings_are_refused_naming_the_key(string setting, string key)
    {
        var e = Assert.Throws<SettingsException>(() => RuntimeSettings.From(FlashPipelineTests.Settings(setting)));
        Assert.Equal(key, e.Key);
    }
}
