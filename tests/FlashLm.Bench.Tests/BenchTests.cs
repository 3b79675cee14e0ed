using System.Text.Json;
using FlashLm.Bench;
using Xunit;

namespace FlashLm.Tests;

/// <summary>flashlm-bench: its argument handling, its typed worker contract, and a small ladder run on a synthetic model.</summary>
public class BenchTests(SyntheticLayoutFixture layout) : IClassFixture<SyntheticLayoutFixture>
{
    internal static CliRunner.Result Bench(params string[] args) => CliRunner.RunProgram("flashlm-bench", new Dictionary<string, string?>(), args);

    [Theory]
    [InlineData("--rungs", "window,teleport", "teleport")]
    [InlineData("--tokens", "0", "--tokens")]
    [InlineData("--reps", "0", "--reps")]
    [InlineData("--dram-budget", "lots", "--dram-budget")]
    [InlineData("--plot", "/no/such/folder/bench.png", "/no/such/folder")]
    public void Bad_arguments_fail_with_one_line(string option, string value, string named)
    {
        using var dir = new TempDir();
        var r = Bench("--model", dir.Path, option, value);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains(named, r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr);
    }

    [Fact]
    public void Rungs_parse_in_ladder_order()
    {
        Assert.Equal(["predictor", "lookahead"], BenchCommand.ParseRungs("lookahead,predictor").Select(r => r.Name));
        // All but gate, gate-whole and the mixture-of-experts rungs (the default ladder of MoE layouts, in their order).
        Assert.Equal(BenchCommand.Rungs.Length - 2 - BenchCommand.MoeRungs.Length, BenchCommand.ParseRungs(null).Length);
        Assert.Equal(BenchCommand.MoeRungs, BenchCommand.DefaultMoeRungs.Select(r => r.Name));
        Assert.DoesNotContain(BenchCommand.ParseRungs(null), r => BenchCommand.MoeRungs.Contains(r.Name));
        Assert.Equal("naive", BenchCommand.ParseRungs(null)[0].Name);
        // Pinning is the one rung of the default ladder with pin = auto, on top of lookahead's settings.
        var ladder = BenchCommand.ParseRungs(null);
        Assert.Equal(["pinning"], ladder.Where(r => r.Settings.Contains("pin=auto")).Select(r => r.Name));
        Assert.All(ladder.Where(r => r.Name != "pinning"), r => Assert.Contains("pin=off", r.Settings));
        Assert.Equal(ladder.Single(r => r.Name == "lookahead").Settings.Where(x => !x.StartsWith("pin=")),
            ladder.Single(r => r.Name == "pinning").Settings.Where(x => !x.StartsWith("pin=")));
        // The gate rung is not part of the paper's ladder: run only when named.
        Assert.DoesNotContain(BenchCommand.ParseRungs(null), r => r.Name == BenchCommand.GateRung || r.Name == BenchCommand.GateWholeRung);
        Assert.Equal(["lookahead", "gate"], BenchCommand.ParseRungs("gate,lookahead").Select(r => r.Name));
        // Its whole-bundle twin differs only in reading the resident gate too.
        var gate = BenchCommand.ParseRungs("gate,gate-whole");
        Assert.Equal(["gate", "gate-whole"], gate.Select(r => r.Name));
        Assert.Equal(["loader.skip-resident=off"], gate[1].Settings.Except(gate[0].Settings));
        Assert.Empty(gate[0].Settings.Except(gate[1].Settings));
        // A variant: the rung with settings on top (replacing the rung's own value of a key), kept beside its rung.
        var ab = BenchCommand.ParseRungs("lookahead+loader.engine=io_uring+window=2,lookahead");
        Assert.Equal(["lookahead+loader.engine=io_uring+window=2", "lookahead"], ab.Select(r => r.Name));
        Assert.Equal(["loader.engine=io_uring", "window=2"], ab[0].Settings.Except(ab[1].Settings));
        Assert.Equal(["window=5"], ab[1].Settings.Except(ab[0].Settings));
        Assert.Throws<ArgumentException>(() => BenchCommand.ParseRungs("lookahead+window"));
        Assert.Throws<ArgumentException>(() => BenchCommand.ParseRungs("fast+window=1"));
    }

    [Fact]
    public void The_gate_cap_is_a_share_of_the_model_or_a_size()
    {
        Assert.Equal(650, BenchCommand.GateCap(null, 1000));
        Assert.Equal(800, BenchCommand.GateCap("0.8", 1000));
        Assert.Equal(6L << 30, BenchCommand.GateCap("6GiB", 1000));
        Assert.Contains("--gate-cap", Assert.Throws<ArgumentException>(() => BenchCommand.GateCap("1.5", 1000)).Message);
    }

    [Fact]
    public void The_gate_rung_runs_gate_resident_selection_under_its_own_cap()
    {
        using var dir = new TempDir();
        var json = dir.File("bench.json");
        var r = Bench("--model", layout.Folder, "-n", "3", "--reps", "1", "--rungs", "bundling,gate", "--dram-budget", "256MiB", "--gate-cap", "320MiB", "--json", json,
            "--selection", "oracle");
        Assert.True(r.ExitCode == 0, r.Stderr);
        var stdout = System.Text.Encoding.UTF8.GetString(r.Stdout);
        Assert.Contains("| gate (cap 320.00 MiB) |", stdout);
        var report = JsonSerializer.Deserialize<BenchReport>(File.ReadAllText(json), BenchJson.Options)!;
        Assert.Equal(["bundling", "gate"], report.Rungs.Select(x => x.Name));
        Assert.Equal(256L << 20, report.Rungs[0].CapBytes);
        Assert.Equal(320L << 20, report.Rungs[1].CapBytes);
        Assert.Contains("gate-resident", report.Predictor);
        var gate = report.Rungs[1];
        Assert.True(gate.MsPerToken > 0 && gate.PredictMs > 0, $"gate rung: {gate.MsPerToken} ms/token, predict {gate.PredictMs} ms");
        // Exact selection: the same neurons as the oracle-driven bundling rung on the same token sequence.
        Assert.Equal(report.Rungs[0].NeuronsActive, gate.NeuronsActive);
        // Lookahead's guess for layer N+1 is layer N+1's resident gate on layer N's input, scored against the set it then used.
        Assert.NotNull(gate.LookaheadPrecision);
        Assert.InRange(gate.LookaheadPrecision!.Value, 0, 1);
        Assert.InRange(gate.LookaheadRecall!.Value, 0, 1);
        Assert.StartsWith("gate-resident", gate.Predictor);
        Assert.Equal(gate.CapBytes, gate.ProcessCapBytes); // gate-resident: nothing outside the cap
        Assert.InRange(gate.PeakRssBytes, 1, gate.CapBytes);
        // The floor counts the predictor's own time.
        Assert.True(gate.FloorMsPerToken >= gate.ComputeMs + gate.PredictMs - 1e-9);
    }

    [Fact]
    public void Each_sparsity_is_calibrated_once_kept_in_the_layout_folder_and_written_to_the_manifest_for_the_run()
    {
        using var dir = new TempDir();
        var copy = dir.File("copy.flash");
        Directory.CreateDirectory(copy);
        foreach (var f in Directory.GetFiles(layout.Folder)) File.Copy(f, Path.Combine(copy, Path.GetFileName(f)));
        float[]? Manifest()
        {
            using var m = new FlashLm.Formats.FlashLayout.FlashLayoutModel(copy);
            return m.Thresholds?.Select(t => (float)t).ToArray();
        }
        // The activation frequencies the pinning rung ranks neurons by: counted under the run's thresholds, so their mean is
        // about the share of neurons those thresholds keep.
        double? MeanFrequency()
        {
            using var m = new FlashLm.Formats.FlashLayout.FlashLayoutModel(copy);
            return m.LoadActivity()?.Frequencies.SelectMany(f => f).Average(f => (double)f);
        }
        float[] Kept(string s) => File.ReadAllLines(Path.Combine(copy, $"bench-thresholds-{s}.txt")).Select(l => float.Parse(l, System.Globalization.CultureInfo.InvariantCulture)).ToArray();
        string[] Run(string sparsity) => ["--model", copy, "--sparsity", sparsity, "-n", "1", "--reps", "1", "--rungs", "hybrid", "--dram-budget", "256MiB"];
        var r = Bench(Run("0.5"));
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(Kept("0.5"), Manifest());
        Assert.InRange(MeanFrequency()!.Value, 0.4, 0.6);
        r = Bench(Run("0.9"));
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(Kept("0.9"), Manifest());
        Assert.InRange(MeanFrequency()!.Value, 0.05, 0.15);
        Assert.All(Kept("0.9").Zip(Kept("0.5")), p => Assert.True(p.First > p.Second, "90 % needs higher thresholds than 50 %"));
        // Back to 50 %: the kept thresholds, not a new calibration.
        r = Bench(Run("0.5"));
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.DoesNotContain("calibrating", r.Stderr);
        Assert.DoesNotContain("recording activation frequencies", r.Stderr);
        Assert.Equal(Kept("0.5"), Manifest());
        Assert.InRange(MeanFrequency()!.Value, 0.4, 0.6);
        // Kept thresholds without kept frequencies: recorded only for a run that pins (recording runs the dense model again).
        File.Delete(Path.Combine(copy, "bench-activity-0.9.bin"));
        r = Bench(Run("0.9"));
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.DoesNotContain("recording activation frequencies", r.Stderr);
        Assert.Equal(Kept("0.9"), Manifest());
        Assert.Null(MeanFrequency());
        r = Bench(["--model", copy, "--sparsity", "0.9", "-n", "1", "--reps", "1", "--rungs", "pinning", "--dram-budget", "256MiB"]);
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("recording activation frequencies", r.Stderr);
        Assert.InRange(MeanFrequency()!.Value, 0.05, 0.15);
        // 0: dense, no thresholds.
        r = Bench(Run("0"));
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Null(Manifest());
        Assert.Null(MeanFrequency());
    }

    private static RungResult SomeRung() => new("window", 12.5, 80, 3 << 20, 96, 32768, 4.5, 1.5, 3, 0.5, 0.25, 7, 860, 120, 310, 1 << 24, 1 << 26);

    [Fact]
    public void A_rung_result_round_trips_through_its_json_line_with_snake_case_names()
    {
        var rung = SomeRung();
        var line = BenchJson.Line(rung);
        Assert.DoesNotContain('\n', line);
        Assert.Contains("\"ms_per_token\":12.5", line);
        Assert.Contains("\"messages_per_token\":310", line);
        Assert.Equal(rung, BenchJson.Parse<RungResult>(line, "window"));
    }

    [Fact]
    public void A_worker_line_with_a_missing_or_unknown_member_fails_naming_the_worker_and_the_member()
    {
        var full = JsonSerializer.SerializeToNode(SomeRung(), BenchJson.Options)!.AsObject();
        var missing = full.DeepClone().AsObject();
        missing.Remove("messages_per_token");
        var e = Assert.Throws<InvalidOperationException>(() => BenchJson.Parse<RungResult>(missing.ToJsonString(), "window"));
        Assert.Contains("window", e.Message);
        Assert.Contains("messages_per_token", e.Message);

        var unknown = full.DeepClone().AsObject();
        unknown["ms_per_tokn"] = 1.0;
        e = Assert.Throws<InvalidOperationException>(() => BenchJson.Parse<RungResult>(unknown.ToJsonString(), "window"));
        Assert.Contains("ms_per_tokn", e.Message);

        e = Assert.Throws<InvalidOperationException>(() => BenchJson.Parse<TimingResult>("bench: something else", "llamacpp"));
        Assert.Contains("llamacpp", e.Message);
    }

    [Fact]
    public void A_small_bench_run_prints_the_table_and_writes_the_json()
    {
        using var dir = new TempDir();
        var json = dir.File("bench.json");
        var png = dir.File("bench.png");
        var r = Bench("--model", layout.Folder, "-n", "3", "--reps", "1", "--rungs", "predictor,bundling", "--dram-budget", "256MiB", "--json", json, "--plot", png,
            "--gguf", layout.Gguf);
        Assert.True(r.ExitCode == 0, r.Stderr);
        var stdout = System.Text.Encoding.UTF8.GetString(r.Stdout);
        // Without trained predictors the predictor rungs replay the exact sets at a trained predictor's recall and over-selection,
        // paying a rank-128 predictor inside the cap, and every table row, the JSON and the plot say so.
        const string label = "trace-driven selection at recall 0.975, over-selection 2, rank-128 predictor cost";
        Assert.Contains($"| predictor ({label}) |", stdout);
        Assert.Contains($"| bundling ({label}) |", stdout);
        Assert.Contains("messages/token", stdout);
        var report = JsonSerializer.Deserialize<BenchReport>(File.ReadAllText(json), BenchJson.Options)!;
        Assert.Equal(256L << 20, report.DramBudgetBytes);
        Assert.True(report.RuntimeBudgetBytes < report.DramBudgetBytes, "the runtime plans within the cap less the process's reserve");
        Assert.Equal(["predictor", "bundling"], report.Rungs.Select(x => x.Name));
        Assert.StartsWith(label, report.Predictor);
        Assert.All(report.Rungs, x => Assert.StartsWith(label, x.Predictor));
        // Nothing outside the cap: the process cap is the cap itself, and the floor counts the predictor's time.
        Assert.All(report.Rungs, x => Assert.Equal(x.CapBytes, x.ProcessCapBytes));
        Assert.All(report.Rungs, x => Assert.True(x.PredictMs > 0 && x.FloorMsPerToken >= x.ComputeMs + x.PredictMs - 1e-9, x.Name));
        foreach (var rung in report.Rungs)
        {
            Assert.True(rung.MsPerToken > 0 && rung.TokensPerS > 0, rung.Name);
            Assert.True(rung.BytesPerToken >= 0 && rung.ReadsPerToken >= 0 && rung.IoMs >= 0 && rung.MemMs >= 0 && rung.ComputeMs > 0, rung.Name);
            Assert.InRange(rung.MsPerToken, rung.MsPerTokenMin, rung.MsPerTokenMax);
            Assert.True(rung.MessagesPerToken >= 0, rung.Name);
            // CPU time per decode step: positive, and on this machine at most wall time x cores (with slack for the clocks).
            Assert.InRange(rung.CpuMsPerToken, 1e-3, rung.MsPerTokenMax * Environment.ProcessorCount * 1.5 + 5);
            // The cap is a promise about the whole process: its peak resident set stays under it. The runtime took its
            // measured resident set at open plus the allowance off the cap for the process itself.
            Assert.InRange(rung.PeakRssBytes, 1, rung.ProcessCapBytes);
            Assert.True(rung.ProcessReserveBytes > 96L << 20, $"process reserve {rung.ProcessReserveBytes}");
        }
        Assert.Contains("Process overhead measured", stdout);
        // llama.cpp ran on the same model (the GGUF) under the same cap.
        Assert.True(report.Llamacpp is { TokensPerS: > 0, Repetitions: 1 }, r.Stderr);
        Assert.Contains("llama.cpp (mmap, cap ", stdout);
        // The CPU the figures came from: its model and the features that pick kernel paths, in the table and the JSON.
        Assert.Contains($"CPU: {Environment.ProcessorCount} cores, {FlashLm.Kernels.CpuInfo.Model} (", stdout);
        Assert.Contains("kernel path", report.Machine);
        // Every rung's ratio to llama.cpp, each on its own line.
        foreach (var rung in report.Rungs) Assert.Contains($"  {rung.Name}: ", stdout);
        Assert.NotNull(report.InDram);
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, File.ReadAllBytes(png)[..4]);
        // The figure can be drawn again from the JSON alone.
        var again = dir.File("again.png");
        var replot = Bench("replot", "--json", json, "--plot", again);
        Assert.True(replot.ExitCode == 0, replot.Stderr);
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, File.ReadAllBytes(again)[..4]);
        Assert.NotEqual(0, Bench("replot", "--json", dir.File("missing.json"), "--plot", again).ExitCode);
        // Unbundled reads (predictor rung) need more reads per byte than bundled ones.
        Assert.True(report.Rungs[0].ReadsPerToken > report.Rungs[1].ReadsPerToken,
            $"reads per token: predictor {report.Rungs[0].ReadsPerToken}, bundling {report.Rungs[1].ReadsPerToken}");
    }
    /// <summary>
    /// A mixture-of-experts layout runs its own ladder by default (every expert each token; the router's experts; + the expert
    /// cache; + pre-gated prefetch), against llama.cpp on the same GGUF, and reports experts per token; dense rungs are refused
    /// for it, naming the MoE ones.
    /// </summary>
    [Fact]
    public void A_moe_layout_runs_the_expert_ladder_and_reports_experts_per_token()
    {
        using var dir = new TempDir();
        var config = FlashLm.Formats.Synth.SyntheticShapes.Get("mixtral-tiny");
        var folder = SyntheticModels.WriteLayout(dir.File("moe.flash"), config, seed: 5);
        var json = dir.File("moe.json");
        var r = Bench("--model", folder, "--gguf", folder + ".gguf", "-n", "3", "--reps", "1", "--dram-budget", "256MiB", "--json", json);
        Assert.True(r.ExitCode == 0, r.Stderr);
        var stdout = System.Text.Encoding.UTF8.GetString(r.Stdout);
        var report = JsonSerializer.Deserialize<BenchReport>(File.ReadAllText(json), BenchJson.Options)!;
        Assert.Equal(BenchCommand.MoeRungs, report.Rungs.Select(x => x.Name));
        Assert.Equal("llama", report.Model.Architecture);
        Assert.Contains("Experts per token", stdout);
        double perToken = (double)config.ExpertsUsed * config.Layers;
        var all = report.Rungs[0];
        Assert.Equal(config.Experts * config.Layers, all.ExpertsUsed!.Value, 3);   // predictor = all: every expert
        foreach (var x in report.Rungs.Skip(1))
        {
            Assert.Equal(perToken, x.ExpertsUsed!.Value, 3);                        // the router's top k in every layer
            Assert.StartsWith("router (top 2 of 4 experts", x.Predictor);
        }
        Assert.Equal(0, report.Rungs[1].ExpertsHit!.Value, 3);                      // no window: nothing kept
        Assert.True(report.Rungs[1].BytesPerToken < all.BytesPerToken, "the router reads fewer bytes than every expert");
        Assert.NotNull(report.Rungs[3].LookaheadPrecision);                          // the pre-gated guess, scored
        Assert.Null(report.Rungs[2].LookaheadPrecision);
        Assert.True(report.Llamacpp is { TokensPerS: > 0 }, r.Stderr);
        var dense = Bench("--model", folder, "-n", "2", "--reps", "1", "--rungs", "bundling");
        Assert.NotEqual(0, dense.ExitCode);
        Assert.Contains("pregated", dense.Stderr);
    }
}
