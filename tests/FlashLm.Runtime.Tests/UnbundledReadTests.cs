using FlashLm.Models.Sampling;
using FlashLm.Runtime;
using FlashLm.Runtime.Io;
using Xunit;

namespace FlashLm.Tests;

/// <summary>The reads the bench's early rungs use (split parts, streamed attention) give the output of the default, bundled path.</summary>
public class UnbundledReadTests(SyntheticLayoutFixture layout) : IClassFixture<SyntheticLayoutFixture>
{
    private const string Prompt = "Once upon a time";

    private byte[] Bundled(params string[] settings)
    {
        using var runtime = FlashRuntime.Open(layout.Folder, FlashPipelineTests.Settings(settings), 64);
        return FlashPipelineTests.RunFlash(runtime, Prompt, 64, SamplingOptions.Greedy).Stdout;
    }

    [Fact]
    public void Split_part_reads_give_the_same_output_with_one_read_per_part()
    {
        string[] common = ["sparsity=0", "window=0", "lookahead=off", "prefill-sequential=off"];
        using var split = FlashRuntime.Open(layout.Folder, FlashPipelineTests.Settings([.. common, "loader.split-parts=on"]), 64);
        var (stdout, stats) = FlashPipelineTests.RunFlash(split, Prompt, 64, SamplingOptions.Greedy);
        Assert.Equal(Bundled([.. common, "loader.split-parts=off"]), stdout);
        var decode = stats.Where(s => !s.Prefill).ToList();
        Assert.NotEmpty(decode);
        // Three parts (gate, up, down) per neuron read separately.
        Assert.All(decode, s => Assert.Equal(3 * s.NeuronsLoaded, s.Reads));
    }

    [Fact]
    public void Streamed_attention_gives_the_same_output_and_reads_every_layers_attention_each_token()
    {
        string[] naive = ["sparsity=0", "predictor=all", "window=0", "lookahead=off", "prefill-sequential=off", "loader.max-read=8KiB"];
        using var resident = FlashRuntime.Open(layout.Folder, FlashPipelineTests.Settings(naive), 64);
        using var streamed = FlashRuntime.Open(layout.Folder, FlashPipelineTests.Settings([.. naive, "stream-attention=on"]), 64);
        var (stdout, stats) = FlashPipelineTests.RunFlash(streamed, Prompt, 64, SamplingOptions.Greedy);
        var (residentOut, residentStats) = FlashPipelineTests.RunFlash(resident, Prompt, 64, SamplingOptions.Greedy);
        Assert.Equal(residentOut, stdout);

        // Every token reads all layers' q, k, v, o on top of the FFN (each tensor's 4096-aligned span, in reads of at most 8 KiB).
        using var source = new FlashLm.Formats.FlashLayout.FlashLayoutModel(layout.Folder);
        var attention = Enumerable.Range(0, source.Config.Layers)
            .SelectMany(l => new[] { FlashLm.Formats.TensorNames.AttnQ, FlashLm.Formats.TensorNames.AttnK, FlashLm.Formats.TensorNames.AttnV, FlashLm.Formats.TensorNames.AttnOutput }.Select(p => source.Tensors[FlashLm.Formats.TensorNames.Block(l, p)])).ToList();
        long attentionBytes = attention.Sum(t => AlignedBuffer.AlignUp(t.Offset + t.ByteLength) - AlignedBuffer.AlignDown(t.Offset));
        int attentionReads = attention.Sum(t => (int)((AlignedBuffer.AlignUp(t.Offset + t.ByteLength) - AlignedBuffer.AlignDown(t.Offset) + 8191) / 8192));
        Assert.Equal(residentStats.Count, stats.Count);
        for (int i = 0; i < stats.Count; i++)
        {
            Assert.Equal(residentStats[i].BytesRead + attentionBytes, stats[i].BytesRead);
            Assert.Equal(residentStats[i].Reads + attentionReads, stats[i].Reads);
        }
        // DRAM holds one layer's attention matrices instead of all of them.
        long oneLayer = attention.Take(4).Sum(t => t.ByteLength);
        Assert.True(streamed.Plan.Weights < resident.Plan.Weights - attention.Sum(t => t.ByteLength) + 2 * oneLayer + (64L << 10),
            $"streamed weights {streamed.Plan.Weights}, resident {resident.Plan.Weights}");
    }
}
