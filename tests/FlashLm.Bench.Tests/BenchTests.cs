using System.Text.Json;
using FlashLm.Cli.Commands;
using FlashLm.Models.Sampling;
using FlashLm.Runtime;
using FlashLm.Runtime.Io;
using Xunit;

namespace FlashLm.Tests;

/// <summary>The benchmark's argument handling, its report, and the unbundled reads its early rungs use.</summary>
public class BenchTests(StoriesLayoutFixture layout) : IClassFixture<StoriesLayoutFixture>
{
    [Theory]
    [InlineData("--rungs", "window,teleport", "teleport")]
    [InlineData("--tokens", "0", "--tokens")]
    [InlineData("--reps", "0", "--reps")]
    [InlineData("--dram-budget", "lots", "--dram-budget")]
    [InlineData("--plot", "/no/such/folder/bench.png", "/no/such/folder")]
    public void Bad_arguments_fail_with_one_line(string option, string value, string named)
    {
        using var dir = new TempDir();
        var r = CliRunner.Run("bench", "--model", dir.Path, option, value);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains(named, r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr);
    }

    [Fact]
    public void Rungs_parse_in_ladder_order()
    {
        Assert.Equal(["predictor", "lookahead"], BenchCommand.ParseRungs("lookahead,predictor").Select(r => r.Name));
        Assert.Equal(6, BenchCommand.ParseRungs(null).Length);
        Assert.Equal("naive", BenchCommand.ParseRungs(null)[0].Name);
    }

    [RequiresSharedModelsFact]
    public void Split_part_reads_give_the_same_output_with_one_read_per_part()
    {
        using var split = FlashRuntime.Open(layout.Folder!, FlashPipelineTests.Settings("sparsity=0", "window=0", "lookahead=off", "loader.split-parts=on", "prefill-sequential=off"), 64);
        var (stdout, stats) = FlashPipelineTests.RunFlash(split, "Once upon a time", 64, SamplingOptions.Greedy);
        Assert.Equal(File.ReadAllBytes(SharedModels.Reference("greedy_once_upon_a_time_n64.stdout.txt")), stdout);
        var decode = stats.Where(s => !s.Prefill).ToList();
        // Three parts (gate, up, down) per neuron read separately.
        Assert.All(decode, s => Assert.Equal(3 * s.NeuronsLoaded, s.Reads));
    }

    [RequiresSharedModelsFact]
    public void Streamed_attention_gives_the_same_output_and_reads_every_layers_attention_each_token()
    {
        string[] naive = ["sparsity=0", "predictor=all", "window=0", "lookahead=off", "prefill-sequential=off", "loader.max-read=8KiB"];
        using var resident = FlashRuntime.Open(layout.Folder!, FlashPipelineTests.Settings(naive), 64);
        using var streamed = FlashRuntime.Open(layout.Folder!, FlashPipelineTests.Settings([.. naive, "stream-attention=on"]), 64);
        var (stdout, stats) = FlashPipelineTests.RunFlash(streamed, "Once upon a time", 64, SamplingOptions.Greedy);
        Assert.Equal(File.ReadAllBytes(SharedModels.Reference("greedy_once_upon_a_time_n64.stdout.txt")), stdout);
        var (_, residentStats) = FlashPipelineTests.RunFlash(resident, "Once upon a time", 64, SamplingOptions.Greedy);

        // Every token reads all layers' q, k, v, o on top of the FFN (each tensor's 4096-aligned span, in reads of at most 8 KiB).
        using var source = new FlashLm.Formats.FlashLayout.FlashLayoutModel(layout.Folder!);
        var attention = Enumerable.Range(0, source.Config.Layers)
            .SelectMany(l => new[] { FlashLm.Formats.TensorNames.AttnQ, FlashLm.Formats.TensorNames.AttnK, FlashLm.Formats.TensorNames.AttnV, FlashLm.Formats.TensorNames.AttnOutput }.Select(p => source.Tensors[FlashLm.Formats.TensorNames.Block(l, p)])).ToList();
        long attentionBytes = attention.Sum(t => AlignedBuffer.AlignUp(t.Offset + t.ByteLength) - AlignedBuffer.AlignDown(t.Offset));
        int attentionReads = attention.Sum(t => (int)((AlignedBuffer.AlignUp(t.Offset + t.ByteLength) - AlignedBuffer.AlignDown(t.Offset) + 8191) / 8192));
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

    [RequiresSharedModelsFact]
    public void A_small_bench_run_prints_the_table_and_writes_the_json()
    {
        using var dir = new TempDir();
        var json = dir.File("bench.json");
        var png = dir.File("bench.png");
        var r = CliRunner.Run("bench", "--model", layout.Folder!, "-n", "3", "--reps", "1", "--rungs", "predictor,bundling", "--dram-budget", "256MiB", "--json", json, "--plot", png,
            "--gguf", SharedModels.StoriesGguf);
        Assert.True(r.ExitCode == 0, r.Stderr);
        var stdout = System.Text.Encoding.UTF8.GetString(r.Stdout);
        Assert.Contains("| predictor |", stdout);
        Assert.Contains("| bundling |", stdout);
        using var doc = JsonDocument.Parse(File.ReadAllText(json));
        Assert.Equal(256L << 20, doc.RootElement.GetProperty("dram_budget_bytes").GetInt64());
        var rungs = doc.RootElement.GetProperty("rungs");
        Assert.Equal(2, rungs.GetArrayLength());
        foreach (var rung in rungs.EnumerateArray())
            foreach (var key in new[] { "ms_per_token", "tokens_per_s", "bytes_per_token", "reads_per_token", "io_ms", "mem_ms", "predict_ms", "compute_ms" })
                Assert.True(rung.GetProperty(key).GetDouble() >= 0, key);
        // llama.cpp ran on the same model (the GGUF) under the same cap.
        Assert.True(doc.RootElement.GetProperty("llamacpp").GetProperty("tokens_per_s").GetDouble() > 0);
        Assert.Contains("llama.cpp (mmap, same cap)", stdout);
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, File.ReadAllBytes(png)[..4]);
        // Unbundled reads (predictor rung) need more reads per byte than bundled ones.
        double Reads(int i) => rungs[i].GetProperty("reads_per_token").GetDouble();
        Assert.True(Reads(0) > Reads(1), $"reads per token: predictor {Reads(0)}, bundling {Reads(1)}");
    }
}
