using System.Diagnostics;
using FlashLm.Formats;
using FlashLm.Formats.Llama2c;
using FlashLm.Models.Predictors;
using FlashLm.Models.Sparsity;
using Xunit;
using Xunit.Abstractions;

namespace FlashLm.Tests.Predictors;

/// <summary>Trained predictors on the real stories260K model at 50 % activation sparsity, measured on held-out sequences.</summary>
public sealed class StoriesPredictorTests(ITestOutputHelper output)
{
    /// <summary>Calibration tokens: 12 self-sampled sequences of 256 (10 train, 2 held out).</summary>
    internal const int Tokens = 12 * 256;

    internal static readonly PredictorTrainingOptions Options = new() { Rank = 32, Epochs = 6 };

    internal static (ModelSource Source, ActivitySamples Data) Samples()
    {
        var source = new Llama2cModel(SharedModels.StoriesBin, SharedModels.Tok512);
        var sequences = Calibrator.Sequences(source, null, Tokens);
        var thresholds = Calibrator.Calibrate(source, sequences, 0.5).Thresholds;
        return (source, ActivitySamples.Collect(source, sequences, thresholds));
    }

    [RequiresSharedModelsFact]
    public void Same_layer_predictor_reaches_95_percent_recall_within_2x_over_selection_on_held_out_tokens()
    {
        var (_, data) = Samples();
        var sw = Stopwatch.StartNew();
        var predictor = PredictorTrainer.Train(data, PredictorKind.SameLayer, Options,
            p => output.WriteLine($"layer {p.Layer} epoch {p.Epoch}: loss {p.Loss:F4}, held-out recall {p.HeldOutRecall:F4}, over-selection {p.HeldOutOverSelection:F3}"));
        sw.Stop();
        var report = PredictorReport.Measure(predictor, data);
        output.WriteLine($"trained in {sw.Elapsed.TotalSeconds:F2} s on {data.Train.Length} positions ({Environment.ProcessorCount} cores)");
        output.WriteLine(report.ToTable());
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(30), $"training took {sw.Elapsed}");
        foreach (var r in report.Layers)
        {
            Assert.True(r.Recall >= 0.95, $"layer {r.Layer}: recall {r.Recall:F4}");
            Assert.True(r.OverSelection <= 2.0, $"layer {r.Layer}: over-selection {r.OverSelection:F3}");
        }
    }

    [RequiresSharedModelsFact]
    public void Lookahead_predictor_reaches_85_percent_recall_on_held_out_tokens()
    {
        var (_, data) = Samples();
        var sw = Stopwatch.StartNew();
        var predictor = PredictorTrainer.Train(data, PredictorKind.Lookahead, Options with { TargetRecall = 0.9 },
            p => output.WriteLine($"layer {p.Layer} epoch {p.Epoch}: loss {p.Loss:F4}, held-out recall {p.HeldOutRecall:F4}, over-selection {p.HeldOutOverSelection:F3}"));
        sw.Stop();
        var report = PredictorReport.Measure(predictor, data);
        output.WriteLine($"trained in {sw.Elapsed.TotalSeconds:F2} s on {data.Train.Length} positions");
        output.WriteLine(report.ToTable());
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(30), $"training took {sw.Elapsed}");
        foreach (var r in report.Layers)
        {
            Assert.True(r.Recall >= 0.85, $"layer {r.Layer}: recall {r.Recall:F4}");
            Assert.True(r.OverSelection < 2.0, $"layer {r.Layer}: over-selection {r.OverSelection:F3} (2 = every neuron)");
        }
    }
}
