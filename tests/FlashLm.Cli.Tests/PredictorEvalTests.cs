using FlashLm.Cli.Commands;
using FlashLm.Formats.FlashLayout;
using FlashLm.Models.Sparsity;
using Xunit;

namespace FlashLm.Tests;

/// <summary>The stored predictors' quality as `flashlm eval` measures it, against the dense thresholded model.</summary>
public class PredictorEvalTests(TrainedStoriesFixture trained) : IClassFixture<TrainedStoriesFixture>
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
}
