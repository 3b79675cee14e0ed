using System.Diagnostics;
using FlashLm.Formats;
using FlashLm.Formats.Llama2c;
using FlashLm.Models.Predictors;
using FlashLm.Models.Sparsity;
using Xunit;
using Xunit.Abstractions;

namespace FlashLm.Tests.Predictors;

/// <summary>Trained predictors on the real stories260K model at 50 % activation sparsity, measured on held-out sequences.</summary>
public sealed class StoriesPredictorTests(StoriesSamplesFixture fixture, ITestOutputHelper output) : IClassFixture<StoriesSamplesFixture>
{
    /// <summary>Rank 32 of dim 64; a few epochs suffice (the SVD start is already close).</summary>
    internal static readonly PredictorTrainingOptions Options = new() { Rank = 32, Epochs = 4 };

    [RequiresSharedModelsFact]
    public void Same_layer_predictor_reaches_95_percent_recall_within_2x_over_selection_on_held_out_tokens()
    {
        var data = fixture.Data ?? throw new InvalidOperationException(SharedModels.MissingReason);
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
        var data = fixture.Data ?? throw new InvalidOperationException(SharedModels.MissingReason);
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

/// <summary>Self-sampled calibration tokens for stories260K (10 sequences of 256: 8 train, 2 held out), collected once per class.</summary>
public sealed class StoriesSamplesFixture
{
    public const int Tokens = 10 * 256;

    public ActivitySamples? Data { get; }

    public StoriesSamplesFixture()
    {
        if (SharedModels.Dir is null) return;
        using var source = new Llama2cModel(SharedModels.StoriesBin, SharedModels.Tok512);
        var sequences = Calibrator.Sequences(source, null, Tokens);
        var thresholds = Calibrator.Calibrate(source, sequences, 0.5).Thresholds;
        Data = ActivitySamples.Collect(source, sequences, thresholds);
    }
}
