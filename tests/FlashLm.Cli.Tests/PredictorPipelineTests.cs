using FlashLm.Cli.Commands;
using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Models.Predictors;
using FlashLm.Models.Sampling;
using FlashLm.Models.Sparsity;
using FlashLm.Runtime;
using Xunit;

namespace FlashLm.Tests;

/// <summary>stories260K in flash layout with 50 % thresholds and trained same-layer and lookahead predictors.</summary>
public sealed class TrainedStoriesFixture : IDisposable
{
    private readonly TempDir? _dir;

    public string? Folder { get; }
    public float[]? Thresholds { get; }

    public TrainedStoriesFixture()
    {
        if (SharedModels.Dir is null) return;
        _dir = new TempDir();
        Folder = _dir.File("stories-trained");
        using (var source = ModelLoader.Open(SharedModels.StoriesBin, SharedModels.Tok512)) FlashLayoutWriter.Convert(source, Folder);
        List<int[]> sequences;
        using (var layout = new FlashLayoutModel(Folder))
        {
            sequences = Calibrator.Sequences(layout, null, 2048);
            Thresholds = Calibrator.Calibrate(layout, sequences, 0.5).Thresholds;
        }
        FlashLayoutWriter.WriteThresholds(Folder, Thresholds.Select(t => (double)t).ToArray());
        ActivitySamples samples;
        using (var layout = new FlashLayoutModel(Folder)) samples = ActivitySamples.Collect(layout, sequences, Thresholds);
        // Rank 64 is this model's full width (dim 64); the note reports rank 32 too.
        var options = new PredictorTrainingOptions { Rank = 64, Epochs = 6, TargetRecall = 0.975 };
        PredictorStore.Save(Folder, PredictorTrainer.Train(samples, PredictorKind.SameLayer, options));
        PredictorStore.Save(Folder, PredictorTrainer.Train(samples, PredictorKind.Lookahead, options));
    }

    public void Dispose() => _dir?.Dispose();
}

/// <summary>Trained predictors in the pipeline: quality against the dense thresholded model, and lookahead overlap.</summary>
public class PredictorPipelineTests(TrainedStoriesFixture trained) : IClassFixture<TrainedStoriesFixture>
{
    [RequiresSharedModelsTheory]
    [InlineData("Once upon a time")]
    [InlineData("Lily and Ben")]
    [InlineData("The cat sat")]
    public void Predictors_agree_with_the_dense_thresholded_model_on_at_least_90_percent_of_256_positions(string prompt)
    {
        using var source = new FlashLayoutModel(trained.Folder!);
        var sequence = EvalCommand.DenseGreedy(source, prompt, 257); // teacher-forced on the dense model's tokens
        var variants = new List<Evaluator.Variant> { Evaluator.Thresholded(trained.Thresholds) };
        variants.AddRange(PredictorVariants.For(source, trained.Thresholds));
        Assert.Equal(3, variants.Count);
        var results = Evaluator.Run(source, [sequence], variants, referenceIndex: 0);
        Assert.Equal(256, results[0].Positions);
        foreach (var r in results) Console.WriteLine($"{prompt}: {r.Variant} agreement {r.Agreement:P1} perplexity {r.Perplexity:F3} active {r.ActiveFraction:P1}");
        // Compute uses the same-layer predictor's set (in lookahead mode too: the lookahead predictor only starts reads early).
        var sameLayer = results.Single(r => r.Variant == "predictor same-layer");
        Assert.True(sameLayer.Agreement >= 0.90, $"{sameLayer.Variant}: agreement {sameLayer.Agreement:P1} with the dense thresholded model");
        var lookahead = results.Single(r => r.Variant == "predictor lookahead");
        Assert.True(lookahead.Agreement >= 0.75, $"{lookahead.Variant} alone: agreement {lookahead.Agreement:P1}");
    }

    [RequiresSharedModelsFact]
    public void Lookahead_reads_start_before_the_previous_layers_compute_ends()
    {
        // No window: every token reads its neurons again, so the lookahead predictor's reads are real.
        using var runtime = FlashRuntime.Open(trained.Folder!, FlashPipelineTests.Settings("window=0", "predictor=lookahead", "measure-predictor=on"), 64);
        var (_, stats) = FlashPipelineTests.RunFlash(runtime, "Once upon a time", 64, SamplingOptions.Greedy);
        var decode = stats.Where(s => !s.Prefill).ToList();
        Assert.All(decode, s => Assert.Equal(4, s.LookaheadLayers)); // layers 1-4 are prefetched during layers 0-3
        double overlapped = decode.Average(s => (double)s.LookaheadOverlapped / s.LookaheadLayers);
        Assert.True(overlapped > 0.9, $"only {overlapped:P0} of lookahead layers started reading before the previous layer's compute ended");
        // With the oracle beside it, the statistics report what the predictor got wrong.
        Assert.All(decode, s => Assert.NotNull(s.FalseNegative));
        double recall = 1 - decode.Sum(s => (double)s.FalseNegative!.Value) / decode.Sum(s => s.TrulyActive!.Value);
        Assert.True(recall > 0.9, $"same-layer recall in the pipeline {recall:F3}");
    }

    [RequiresSharedModelsFact]
    public void Lowrank_flash_run_counts_the_predictors_in_the_budget()
    {
        using var oracle = FlashRuntime.Open(trained.Folder!, FlashPipelineTests.Settings(), 32);
        using var lowrank = FlashRuntime.Open(trained.Folder!, FlashPipelineTests.Settings("predictor=lowrank"), 32);
        long predictorBytes = PredictorStore.Load(new FlashLayoutModel(trained.Folder!), PredictorKind.SameLayer)!.Bytes;
        Assert.Equal(oracle.Plan.Weights + predictorBytes, lowrank.Plan.Weights);
    }
}
