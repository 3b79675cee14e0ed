using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Models.Predictors;
using FlashLm.Models.Sampling;
using FlashLm.Models.Sparsity;
using FlashLm.Runtime;
using Xunit;

namespace FlashLm.Tests;

/// <summary>Trained predictors in the pipeline: lookahead overlap and the runtime's use of the stored predictors (their quality: PredictorEvalTests in FlashLm.Cli.Tests).</summary>
public class PredictorPipelineTests(TrainedStoriesFixture trained) : IClassFixture<TrainedStoriesFixture>
{
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
        using var oracle = FlashRuntime.Open(trained.Folder!, FlashPipelineTests.Settings("predictor=oracle"), 32);
        using var lowrank = FlashRuntime.Open(trained.Folder!, FlashPipelineTests.Settings("predictor=lowrank"), 32);
        long predictorBytes = PredictorStore.Load(new FlashLayoutModel(trained.Folder!), PredictorKind.SameLayer)!.Bytes;
        Assert.Equal(oracle.Plan.Weights + predictorBytes, lowrank.Plan.Weights);
    }
}
