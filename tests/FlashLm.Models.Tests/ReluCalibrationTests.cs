using FlashLm.Formats;
using FlashLm.Formats.Synth;
using FlashLm.Models;
using FlashLm.Models.Llama;
using FlashLm.Models.Predictors;
using FlashLm.Models.Sparsity;
using Xunit;
using Xunit.Abstractions;

namespace FlashLm.Tests;

/// <summary>
/// Activation sparsity of a ReLU-fied Llama (the tiny-relu shape, random weights): about half its neurons are inactive by
/// themselves; calibration to a higher target makes it a FATReLU model with a per-layer threshold that reaches the target;
/// a target below its natural sparsity leaves it as it is; predictor training data follows the same rule.
/// </summary>
public sealed class ReluCalibrationTests : IDisposable
{
    private readonly ITestOutputHelper _output;
    private readonly TempDir _dir = new();
    private readonly ModelSource _source;
    private readonly List<int[]> _sequences;

    public ReluCalibrationTests(ITestOutputHelper output)
    {
        _output = output;
        var path = _dir.File("tiny-relu.gguf");
        SyntheticModel.WriteGguf(path, SyntheticShapes.Get("tiny-relu"), DType.F32, seed: 17);
        _source = ModelLoader.Open(path);
        _sequences = Calibrator.Sequences(_source, null, 128);
    }

    public void Dispose()
    {
        _source.Dispose();
        _dir.Dispose();
    }

    /// <summary>Share of neurons the dense model (thresholded as given; null: the model's own ReLU) leaves inactive on the sequences.</summary>
    private double Sparsity(float[]? thresholds) =>
        1 - Evaluator.Run(_source, _sequences, [Evaluator.Thresholded(thresholds)])[0].ActiveFraction;

    [Fact]
    public void A_random_relu_llama_is_about_half_sparse_by_itself()
    {
        Assert.True(_source.Config.ReluGated);
        double s = Sparsity(null);
        _output.WriteLine($"natural sparsity {s:P1}");
        Assert.InRange(s, 0.4, 0.6);
        // The model's own threshold is what ThresholdResolver hands a run without calibration (0 for ReLU), never null.
        Assert.Equal(Enumerable.Repeat(0f, _source.Config.Layers), ThresholdResolver.Resolve(_source, null)!);
        Assert.Equal(Enumerable.Repeat(0f, _source.Config.Layers), ThresholdResolver.Resolve(_source, 0)!);
    }

    [Fact]
    public void Calibrating_to_90_percent_sets_fatrelu_thresholds_that_reach_it()
    {
        var cal = Calibrator.Calibrate(_source, _sequences, 0.9);
        _output.WriteLine($"thresholds {string.Join(" ", cal.Thresholds.Select(t => t.ToString("G4")))}; measured {string.Join(" ", cal.MeasuredSparsity.Select(m => m.ToString("P1")))}");
        Assert.All(cal.Thresholds, t => Assert.True(t > 0, $"threshold {t} is not above ReLU's 0"));
        Assert.All(cal.MeasuredSparsity, m => Assert.InRange(m, 0.88, 0.92));
        // The thresholded model run on the same tokens (later layers now see sparser inputs) stays near the target.
        double s = Sparsity(cal.Thresholds);
        _output.WriteLine($"thresholded model's sparsity {s:P1}");
        Assert.InRange(s, 0.85, 0.95);
    }

    [Fact]
    public void Calibration_records_relu_activation_frequencies_by_the_relu_rule()
    {
        // Regression: the ReLU branch once skipped the frequencies (null layers), and the bench's write of them threw.
        var cal = Calibrator.Calibrate(_source, _sequences, 0.9);
        Assert.Equal(_source.Config.Layers, cal.Frequencies.Length);
        for (int l = 0; l < cal.Frequencies.Length; l++)
        {
            Assert.NotNull(cal.Frequencies[l]);
            Assert.Equal(_source.Config.HiddenDim, cal.Frequencies[l].Length);
            // The mean frequency is the share of (position, neuron) pairs active: 1 - the measured sparsity.
            Assert.Equal(1 - cal.MeasuredSparsity[l], cal.Frequencies[l].Average(f => (double)f), 3);
        }
        // Recording them later from the thresholds (a layout that has them) counts the same pairs.
        var again = Calibrator.Frequencies(_source, _sequences, cal.Thresholds);
        for (int l = 0; l < again.Length; l++) Assert.Equal(cal.Frequencies[l], again[l]);
    }

    [Fact]
    public void A_target_below_the_natural_sparsity_keeps_the_model_own_threshold()
    {
        var cal = Calibrator.Calibrate(_source, _sequences, 0.2);
        Assert.All(cal.Thresholds, t => Assert.Equal(0f, t));
        Assert.All(cal.MeasuredSparsity, m => Assert.InRange(m, 0.4, 0.6));
    }

    [Fact]
    public void A_fatrelu_model_never_calibrates_below_its_own_threshold()
    {
        using var dir = new TempDir();
        var path = dir.File("fat.gguf");
        SyntheticModel.WriteGguf(path, SyntheticShapes.Get("tiny-relu") with { Activation = FfnActivation.FatRelu, ActivationThreshold = 1f }, DType.F32, seed: 17);
        using var fat = ModelLoader.Open(path);
        var cal = Calibrator.Calibrate(fat, Calibrator.Sequences(fat, null, 64), 0.5);
        Assert.All(cal.Thresholds, t => Assert.Equal(1f, t));
        // Gate pre-activations are about N(0, 1): t = 1 leaves about 84 % out.
        Assert.All(cal.MeasuredSparsity, m => Assert.InRange(m, 0.75, 0.92));
    }

    [Fact]
    public void Predictor_training_data_uses_the_relu_rule_and_a_full_rank_predictor_recalls_it()
    {
        var thresholds = Calibrator.Calibrate(_source, _sequences, 0.9).Thresholds;
        var data = ActivitySamples.Collect(_source, _sequences, thresholds);
        Assert.Equal(PredictorHead.Relu, data.Head);
        Assert.Equal(thresholds, data.ActivityThresholds);
        for (int l = 0; l < _source.Config.Layers; l++)
        {
            long active = 0, total = 0;
            foreach (var p in data.Train)
                foreach (var g in data.PreActivation(l, p))
                {
                    Assert.Equal(g > thresholds[l], data.IsActive(l, g));
                    if (data.IsActive(l, g)) active++;
                    total++;
                }
            Assert.InRange(active / (double)total, 0.05, 0.15);
        }
        // Rank = dim: B (A x) can be the gate itself, so the SVD start alone recalls the active sets.
        var predictor = PredictorTrainer.Train(data, PredictorKind.SameLayer, new PredictorTrainingOptions { Rank = _source.Config.Dim, Epochs = 0, TargetRecall = 0.95 });
        Assert.Equal(PredictorHead.Relu, predictor.Head);
        var report = PredictorReport.Measure(predictor, data);
        _output.WriteLine(report.ToTable());
        Assert.True(report.MinRecall >= 0.9, $"held-out recall {report.MinRecall:F3}");
        Assert.True(report.MaxOverSelection <= 1.5, $"over-selection {report.MaxOverSelection:F2}");
    }
}
