using FlashLm.Models.Sampling;
using FlashLm.Runtime;
using Xunit;

namespace FlashLm.Tests;

/// <summary>
/// A layer's steps run forward (compute, predictor, cache manager, compute) without the session: what each stage measured
/// still reaches the session's per-token statistics. Each stage is slowed by a known amount, so each statistic has a floor.
/// </summary>
public class ForwardPathTests(SyntheticLayoutFixture layout) : IClassFixture<SyntheticLayoutFixture>
{
    [Fact]
    public void Every_stages_time_and_the_predictors_quality_reach_the_token_statistics()
    {
        const int sleepMs = 2, layers = 5; // the synthetic Llama has 5 layers
        // No window and no lookahead: every layer of every position reads and waits for its reads.
        var hooks = new RuntimeHooks(Read: _ => Thread.Sleep(sleepMs), Compute: step => { if (step != "head") Thread.Sleep(sleepMs); },
            Predict: _ => Thread.Sleep(sleepMs));
        using var runtime = FlashRuntime.Open(layout.Folder, FlashPipelineTests.Settings("window=0", "lookahead=off", "predictor=all", "measure-predictor=on"), 24,
            hooks: hooks);
        var (_, stats) = FlashPipelineTests.RunFlash(runtime, "Once upon a time", 24, SamplingOptions.Greedy);
        Assert.Equal(24, stats.Count);
        Assert.All(stats, s =>
        {
            Assert.True(s.ComputeMs >= 2 * layers * sleepMs, $"position {s.TokenIndex}: compute {s.ComputeMs:F2} ms (attention and FFN of {layers} layers)");
            Assert.True(s.PredictMs >= layers * sleepMs, $"position {s.TokenIndex}: predict {s.PredictMs:F2} ms");
            Assert.True(s.WaitMs >= layers * sleepMs, $"position {s.TokenIndex}: wait {s.WaitMs:F2} ms");
            // Every neuron named, measured against the oracle: no false negatives, the inactive ones are false positives.
            Assert.Equal(s.NeuronsActive, s.Predicted);
            Assert.InRange(s.TrulyActive!.Value, 1, s.NeuronsActive);
            Assert.Equal(0, s.FalseNegative);
            Assert.Equal(s.Predicted - s.TrulyActive, s.FalsePositive);
            Assert.True(s.Messages > 0);
        });
    }

    [Fact]
    public void Streamed_attentions_reads_reach_the_token_statistics()
    {
        List<FlashLm.Runtime.Session.TokenStats> Run(string stream)
        {
            using var runtime = FlashRuntime.Open(layout.Folder, FlashPipelineTests.Settings("window=0", "lookahead=off", $"stream-attention={stream}"), 20);
            return FlashPipelineTests.RunFlash(runtime, "Once upon a time", 20, SamplingOptions.Greedy).Stats;
        }
        var off = Run("off");
        var on = Run("on");
        Assert.Equal(off.Count, on.Count);
        // Same tokens, same FFN reads: streaming adds the same attention bytes to every position.
        var added = on.Zip(off, (a, b) => a.BytesRead - b.BytesRead).Distinct().ToList();
        Assert.Single(added);
        Assert.True(added[0] > 0, $"streamed attention added {added[0]} bytes per position");
        Assert.All(on.Zip(off), p => Assert.True(p.First.Reads > p.Second.Reads, $"position {p.First.TokenIndex}: reads {p.First.Reads} vs {p.Second.Reads}"));
    }
}
