using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Models.Sampling;
using FlashLm.Runtime;
using FlashLm.Runtime.Config;
using FlashLm.Runtime.Session;
using Xunit;

namespace FlashLm.Tests;

/// <summary>
/// Layer windows (flashlm.layers = FROM-TO): a layout opened as the model of a range of its layers, and runtimes over ranges
/// chained position by position (what the nodes of a pipeline across machines do) giving exactly one runtime's output.
/// </summary>
[Collection(NativeMemoryCollection.Name)]
public class LayerWindowTests(SyntheticLayoutFixture layout) : IClassFixture<SyntheticLayoutFixture>
{
    private FlashRuntime Open(string layers) =>
        FlashRuntime.Open(layout.Folder, FlashPipelineTests.Settings("hits-first=off", "sparsity=0.5", "window=3", $"layers={layers}"), 64);

    [Fact]
    public void A_window_holds_its_layers_renumbered_with_the_same_data_sections_and_thresholds()
    {
        using var whole = new FlashLayoutModel(layout.Folder);
        using var window = new FlashLayoutModel(layout.Folder, new LayerRange(2, 4));
        Assert.Equal(2, window.Config.Layers);
        Assert.Equal(whole.Config.Layers, window.ModelLayers);
        Assert.Equal(whole.Config with { Layers = 2 }, window.Config);
        // blk.0 of the window is blk.2 of the model, blk.1 is blk.3; blk.2 does not exist in the window.
        foreach (var part in new[] { TensorNames.AttnQ, TensorNames.AttnNorm })
        {
            Assert.Equal(whole.Read(TensorNames.Block(2, part)).ToF32(), window.Read(TensorNames.Block(0, part)).ToF32());
            Assert.Equal(whole.Read(TensorNames.Block(3, part)).ToF32(), window.Read(TensorNames.Block(1, part)).ToF32());
            Assert.False(window.Tensors.ContainsKey(TensorNames.Block(2, part)));
        }
        Assert.Equal(whole.Ffn.LayerOffset(3), window.Ffn.LayerOffset(1));
        Assert.Equal(2, window.Ffn.Layers);
        Assert.Equal(whole.ReadFfnPart(3, "up").ToF32(), window.ReadFfnPart(1, "up").ToF32());
        // The checksums of the window's bundles are the model's (a read of layer 3's first bundle checks as the window's layer 1).
        var sums = window.LoadBundleChecksums();
        Assert.Equal(whole.LoadBundleChecksums().Expected(3, 5), sums.Expected(1, 5));
        Assert.Equal(2L * window.Ffn.Neurons * 8, sums.Bytes);
        // The embedding and the head stay readable (the first and last stages use them).
        Assert.True(window.Tensors.ContainsKey(TensorNames.TokenEmbedding));
    }

    [Fact]
    public async Task Three_runtimes_over_ranges_chained_position_by_position_give_one_runtimes_tokens_greedy_and_sampled()
    {
        const int positions = 40;
        using var whole = Open("all");
        using var first = Open("0-2");
        using var middle = Open("2-3");
        using var last = Open("3-5");
        Assert.Equal(new LayerRange(2, 3), middle.Layers);
        Assert.Equal(5, middle.ModelLayers);
        // The ranges hold less than the whole: weights and KV cache of their layers only.
        Assert.True(middle.Plan.KvCache < whole.Plan.KvCache && middle.Plan.Weights < whole.Plan.Weights);
        foreach (var sampling in new[] { SamplingOptions.Greedy, new SamplingOptions(0.9f, 0.9f, 0, 1234) })
        {
            int[] prompt = whole.Tokenizer.Encode("Once upon a time", addBos: true);
            var expected = new List<int>();
            await foreach (var e in whole.Generate("Once upon a time", positions, sampling))
                if (!e.FromPrompt) expected.Add(e.Token);

            await using var s0 = await first.CreateSessionAsync();
            await using var s1 = await middle.CreateSessionAsync();
            await using var s2 = await last.CreateSessionAsync();
            var sampler = new Sampler(whole.Config.VocabSize, sampling, new XorShiftRandom(sampling.Seed));
            var got = new List<int>();
            int token = prompt[0];
            for (int pos = 0; pos < positions; pos++)
            {
                bool inPrompt = pos < prompt.Length - 1;
                var h0 = await first.RunStageAsync(s0, pos, token, null, head: false, prefill: inPrompt);
                var h1 = await middle.RunStageAsync(s1, pos, -1, h0.Output, head: false, prefill: inPrompt);
                var logits = await last.RunStageAsync(s2, pos, -1, h1.Output, head: true, prefill: inPrompt);
                Assert.Equal(whole.Config.Dim, h0.Output.Length);
                Assert.Equal(whole.Config.VocabSize, logits.Output.Length);
                if (inPrompt)
                {
                    token = prompt[pos + 1];
                    continue;
                }
                token = sampler.Sample(logits.Output);
                if (token == whole.Tokenizer.BosId) break;
                got.Add(token);
            }
            Assert.True(expected.Count > 10);
            Assert.Equal(expected, got);
        }
    }

    [Fact]
    public async Task A_range_refuses_what_only_another_stage_can_do_and_bad_ranges_name_the_key()
    {
        using var middle = Open("2-3");
        var turn = await Assert.ThrowsAsync<InvalidOperationException>(async () =>
        {
            await foreach (var _ in middle.Generate("Once", 8, SamplingOptions.Greedy)) { }
        });
        Assert.Contains("stage", turn.Message);
        await using var s = await middle.CreateSessionAsync();
        var token = await Assert.ThrowsAsync<ArgumentException>(() => middle.RunStageAsync(s, 0, 5, null, head: false, prefill: false));
        Assert.Contains("layers 2-3 of 5", token.Message);
        var head = await Assert.ThrowsAsync<ArgumentException>(() => middle.RunStageAsync(s, 0, -1, new float[middle.Config.Dim], head: true, prefill: false));
        Assert.Contains("only the last stage runs the head", head.Message);
        var shape = await Assert.ThrowsAsync<ArgumentException>(() => middle.RunStageAsync(s, 0, -1, new float[3], head: false, prefill: false));
        Assert.Contains("dim", shape.Message);

        foreach (var bad in new[] { "3-2", "x", "2-", "-1-2" })
            Assert.Equal("flashlm.layers", Assert.Throws<SettingsException>(() => RuntimeSettings.From(FlashPipelineTests.Settings($"layers={bad}"))).Key);
        var beyond = Assert.Throws<SettingsException>(() => Open("4-9"));
        Assert.Equal("flashlm.layers", beyond.Key);
        Assert.Contains("5 layers", beyond.Message);
    }
}
