using System.Text;
using Akka.Configuration;
using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Models;
using FlashLm.Models.Llama;
using FlashLm.Models.Sampling;
using FlashLm.Models.Sparsity;
using FlashLm.Runtime;
using FlashLm.Runtime.Config;
using FlashLm.Runtime.Session;
using Xunit;

namespace FlashLm.Tests;

/// <summary>stories260K converted to the flash layout once for the whole class.</summary>
public sealed class StoriesLayoutFixture : IDisposable
{
    private readonly TempDir? _dir;

    public string? Folder { get; }

    public StoriesLayoutFixture()
    {
        if (SharedModels.Dir is null) return;
        _dir = new TempDir();
        Folder = _dir.File("stories-flash");
        using var source = ModelLoader.Open(SharedModels.StoriesBin, SharedModels.Tok512);
        FlashLayoutWriter.Convert(source, Folder);
    }

    public void Dispose() => _dir?.Dispose();
}

/// <summary>The flash pipeline end to end: exact against the dense path, windowing, budget.</summary>
/// <remarks>Exactness against run.c needs the real model (../shared); the rest runs on a synthetic model of its shape.</remarks>
public class FlashPipelineTests(StoriesLayoutFixture layout, SyntheticLayoutFixture synthetic) : IClassFixture<StoriesLayoutFixture>, IClassFixture<SyntheticLayoutFixture>
{
    private const string Prompt = "Once upon a time";

    public static Akka.Configuration.Config Settings(params string[] overrides) => RuntimeSettings.Compose([], overrides);

    public static (byte[] Stdout, List<TokenStats> Stats) RunFlash(FlashRuntime runtime, string prompt, int steps, SamplingOptions options)
    {
        var output = new MemoryStream();
        var stats = new List<TokenStats>();
        Task.Run(async () =>
        {
            await foreach (var ev in runtime.Generate(prompt, steps, options))
            {
                if (Generator.IsPrintable(ev.Piece)) output.Write(ev.Piece);
                stats.Add(ev.Stats);
            }
        }).GetAwaiter().GetResult();
        output.Write("\n"u8);
        return (output.ToArray(), stats);
    }

    private static byte[] DenseThresholded(ModelSource source, float[] thresholds, string prompt, int steps)
    {
        var net = new LlamaModel(source, new DenseSwiGlu(source, thresholds));
        var output = new MemoryStream();
        Generator.Run(net, source.Tokenizer, prompt, steps, new Sampler(source.Config.VocabSize, SamplingOptions.Greedy, new XorShiftRandom(0)), p => output.Write(p));
        output.Write("\n"u8);
        return output.ToArray();
    }

    [RequiresSharedModelsFact]
    public void Oracle_without_sparsity_prints_the_dense_reference_exactly()
    {
        using var runtime = FlashRuntime.Open(layout.Folder!, Settings("sparsity=0"), 64);
        var (stdout, stats) = RunFlash(runtime, Prompt, 64, SamplingOptions.Greedy);
        Assert.Equal(File.ReadAllBytes(SharedModels.Reference("greedy_once_upon_a_time_n64.stdout.txt")), stdout);
        Assert.Equal(64, stats.Count);
        // No sparsity: every neuron of every layer is active at every position.
        Assert.All(stats, s => Assert.Equal(5 * 172, s.NeuronsActive));
    }

    [Fact]
    public void Half_sparse_oracle_prints_what_the_dense_thresholded_model_prints()
    {
        using var source = new FlashLayoutModel(synthetic.Folder);
        var thresholds = Calibrator.Calibrate(source, Calibrator.Sequences(source, null, 256), 0.5).Thresholds;
        var expected = DenseThresholded(source, thresholds, Prompt, 128);
        using var runtime = FlashRuntime.Open(synthetic.Folder, Settings("predictor=oracle"), 128, thresholds: thresholds);
        var (stdout, stats) = RunFlash(runtime, Prompt, 128, SamplingOptions.Greedy);
        Assert.Equal(Encoding.UTF8.GetString(expected), Encoding.UTF8.GetString(stdout));
        double active = stats.Average(s => s.NeuronsActive) / (5.0 * 172);
        Assert.InRange(active, 0.3, 0.7); // about half the neurons are active
    }

    [Fact]
    public void Window_cuts_bytes_read_per_token_well_below_no_window()
    {
        using var source = new FlashLayoutModel(synthetic.Folder);
        var thresholds = Calibrator.Calibrate(source, Calibrator.Sequences(source, null, 256), 0.5).Thresholds;
        double DecodeBytes(int window)
        {
            using var runtime = FlashRuntime.Open(synthetic.Folder, Settings($"window={window}"), 128, thresholds: thresholds);
            var (_, stats) = RunFlash(runtime, Prompt, 128, SamplingOptions.Greedy);
            return stats.Where(s => !s.Prefill).Average(s => (double)s.NeuronsLoaded);
        }
        double none = DecodeBytes(0), windowed = DecodeBytes(5);
        Assert.True(windowed < 0.5 * none, $"neurons loaded per decode token: window 5 = {windowed:F1}, no window = {none:F1}");
    }

    [Fact]
    public void Budget_below_the_minimum_is_refused_naming_the_minimum()
    {
        var e = Assert.Throws<DramBudgetException>(() => FlashRuntime.Open(synthetic.Folder, Settings("dram-budget=100KiB"), 64));
        Assert.Contains("minimum", e.Message);
        Assert.Contains(e.MinimumBytes.ToString(), e.Message);
        // Exactly the minimum starts.
        using var runtime = FlashRuntime.Open(synthetic.Folder, Settings($"dram-budget={e.MinimumBytes}"), 64);
        Assert.Equal(e.MinimumBytes, runtime.Plan.Budget);
    }

    [RequiresSharedModelsFact]
    public void A_small_budget_is_never_exceeded_and_still_gives_the_exact_output()
    {
        long budget;
        using (var probe = FlashRuntime.Open(layout.Folder!, Settings(), 64))
            budget = probe.Plan.Total - 100 * 1024; // less than everything: fewer cache rows than neurons
        using var runtime = FlashRuntime.Open(layout.Folder!, Settings($"dram-budget={budget}", "sparsity=0"), 64);
        Assert.True(runtime.Plan.RowsPerLayer < 172, $"rows per layer {runtime.Plan.RowsPerLayer}");
        var (stdout, stats) = RunFlash(runtime, Prompt, 64, SamplingOptions.Greedy);
        Assert.Equal(File.ReadAllBytes(SharedModels.Reference("greedy_once_upon_a_time_n64.stdout.txt")), stdout);
        Assert.All(stats, s => Assert.True(s.DramBytes <= budget, $"token {s.TokenIndex}: {s.DramBytes} > {budget}"));
    }

    [RequiresSharedModelsFact]
    public void Seeded_sampling_in_flash_mode_matches_run_c()
    {
        using var runtime = FlashRuntime.Open(layout.Folder!, Settings("sparsity=0"), 256);
        var (stdout, _) = RunFlash(runtime, "", 256, new SamplingOptions(1.0f, 0.9f, 0, 133742));
        Assert.Equal(File.ReadAllBytes(SharedModels.Reference("sample_t1.0_p0.9_s133742.stdout.txt")), stdout);
    }
}

/// <summary>Lookahead reads overlap compute: with slow reads and slow compute, a token takes clearly less than their sum.</summary>
public class FlashOverlapTests(SyntheticLayoutFixture layout) : IClassFixture<SyntheticLayoutFixture>
{
    [Fact]
    public void Lookahead_reads_run_while_compute_runs()
    {
        // No window: every token re-reads its neurons, so the lookahead prefetch of layer N+1 (what it used for
        // the previous token) has real work to overlap with layer N's FFN and layer N+1's attention.
        var hooks = new RuntimeHooks(Read: _ => Thread.Sleep(8), Compute: step => { if (step != "head") Thread.Sleep(4); });
        using var runtime = FlashRuntime.Open(layout.Folder, FlashPipelineTests.Settings("window=0", "sparsity=0", "lookahead=on"), 24, hooks: hooks);
        var (_, stats) = FlashPipelineTests.RunFlash(runtime, "Once upon a time", 24, SamplingOptions.Greedy);
        var decode = stats.Where(s => !s.Prefill).ToList();
        double total = decode.Average(s => s.TotalMs), io = decode.Average(s => s.IoMs), compute = decode.Average(s => s.ComputeMs);
        double overlap = decode.Average(s => s.OverlapMs);
        Assert.True(overlap > 0.2 * io, $"overlap {overlap:F1} ms of io {io:F1} ms");
        Assert.True(total < 0.85 * (io + compute), $"total {total:F1} ms vs io {io:F1} + compute {compute:F1} ms");

        // Without lookahead the same run hides almost nothing.
        using var serial = FlashRuntime.Open(layout.Folder, FlashPipelineTests.Settings("window=0", "sparsity=0", "lookahead=off"), 24, hooks: hooks);
        var (_, s2) = FlashPipelineTests.RunFlash(serial, "Once upon a time", 24, SamplingOptions.Greedy);
        double serialTotal = s2.Where(s => !s.Prefill).Average(s => s.TotalMs);
        Assert.True(total < serialTotal, $"lookahead {total:F1} ms/token vs serial {serialTotal:F1} ms/token");
    }
}

/// <summary>The flash pipeline on a synthetic OPT-shaped ReLU model: exactly the dense output.</summary>
public class FlashReluTests
{
    [Theory]
    [InlineData(DType.F32)]
    [InlineData(DType.F16)]
    public void Relu_model_in_flash_mode_prints_what_the_dense_model_prints(DType dtype)
    {
        using var dir = new TempDir();
        var hf = dir.File("opt");
        var config = FlashLm.Formats.Synth.SyntheticShapes.Get("opt-tiny");
        FlashLm.Formats.Synth.SyntheticModel.WriteHf(hf, config, dtype, seed: 11);
        var layoutDir = dir.File("opt-flash");
        byte[] dense;
        using (var source = ModelLoader.Open(hf))
        {
            FlashLayoutWriter.Convert(source, layoutDir);
            var output = new MemoryStream();
            Generator.Run(Transformers.Create(source), source.Tokenizer, "the robot", 48,
                new Sampler(config.VocabSize, SamplingOptions.Greedy, new XorShiftRandom(0)), p => output.Write(p));
            output.Write("\n"u8);
            dense = output.ToArray();
        }
        using var runtime = FlashRuntime.Open(layoutDir, FlashPipelineTests.Settings("window=3", "predictor=oracle"), 48);
        var (flash, stats) = FlashPipelineTests.RunFlash(runtime, "the robot", 48, SamplingOptions.Greedy);
        Assert.Equal(Encoding.UTF8.GetString(dense), Encoding.UTF8.GetString(flash));
        Assert.True(dense.Length > 20, "the dense run printed almost nothing");
        // ReLU leaves neurons at exactly zero: the oracle reads only the active ones.
        double active = stats.Average(s => s.NeuronsActive) / (config.Layers * (double)config.HiddenDim);
        Assert.InRange(active, 0.05, 0.95);
    }
}
