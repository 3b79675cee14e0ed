using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Formats.Gguf;
using FlashLm.Formats.Synth;
using FlashLm.Models;
using FlashLm.Models.Llama;
using FlashLm.Models.Sampling;
using FlashLm.Models.Sparsity;
using FlashLm.Runtime;
using FlashLm.Runtime.Cache;
using FlashLm.Runtime.Compute;
using FlashLm.Runtime.Config;
using FlashLm.Runtime.Session;
using Xunit;

namespace FlashLm.Tests;

/// <summary>The flash runtime on quantized layouts: exactly the dense FFN over the same bundles, inside a budget of quantized bytes.</summary>
public sealed class QuantFlashTests : IDisposable
{
    private const int Positions = 24;
    private readonly TempDir _tmp = new();

    public void Dispose() => _tmp.Dispose();

    private string Layout(DType ffn, int dim, int hidden = 40, DType? down = null, DType? downType = null)
    {
        var folder = _tmp.Sub($"{ffn}-{dim}-{downType}");
        if (Directory.Exists(folder)) return folder;
        using var source = new QuantTestModel(_tmp.File($"{ffn}-{dim}.bin"), QuantTestModel.Llama(dim, hidden, layers: 2, vocab: 300),
            QuantTestModel.Types(ffn, down), seed: 9);
        FlashLayoutWriter.Convert(source, folder, downType: downType);
        return folder;
    }

    /// <summary>A synthetic F32 GGUF of <paramref name="config"/> converted to a flash layout named <paramref name="name"/>.flash.</summary>
    private string F32Layout(string name, ModelConfig config, ulong seed)
    {
        var gguf = _tmp.File($"{name}.gguf");
        SyntheticModel.WriteGguf(gguf, config, DType.F32, seed);
        var folder = _tmp.Sub($"{name}.flash");
        using (var src = ModelLoader.Open(gguf)) FlashLayoutWriter.Convert(src, folder);
        return folder;
    }

    private static int[] Prompt(ITextTokenizer tokenizer) => tokenizer.Encode("the robot", addBos: true);

    /// <summary>Dense run over <paramref name="ffn"/>: the prompt teacher-forced, then greedy; tokens and a copy of every position's logits.</summary>
    private static (List<int> Tokens, List<float[]> Logits) Dense(FlashLayoutModel source, IFeedForward ffn)
    {
        var model = Transformers.Create(source, ffn);
        var prompt = Prompt(source.Tokenizer);
        var state = model.CreateState(Positions);
        var sampler = new Sampler(source.Config.VocabSize, SamplingOptions.Greedy, new XorShiftRandom(0));
        var tokens = new List<int>();
        var logits = new List<float[]>();
        int token = prompt[0];
        for (int pos = 0; pos < Positions; pos++)
        {
            var l = model.Forward(state, token, pos);
            logits.Add(l.ToArray());
            int next = pos < prompt.Length - 1 ? prompt[pos + 1] : sampler.Sample(l);
            if (next == source.Tokenizer.BosId) break;
            tokens.Add(next);
            token = next;
        }
        return (tokens, logits);
    }

    private static (List<int> Tokens, List<float[]> Logits, FlashRuntime Runtime) Flash(string folder, IReadOnlyList<float>? thresholds, params string[] settings)
    {
        var logits = new List<float[]>();
        var hooks = new RuntimeHooks { Logits = l => { lock (logits) logits.Add(l.ToArray()); } };
        var runtime = FlashRuntime.Open(folder, RuntimeSettings.Compose([], settings), Positions, hooks, thresholds: thresholds);
        var tokens = new List<int>();
        Task.Run(async () =>
        {
            await foreach (var ev in runtime.Generate("the robot", Positions, SamplingOptions.Greedy)) tokens.Add(ev.Token);
        }).GetAwaiter().GetResult();
        return (tokens, logits, runtime);
    }

    private static void AssertSame((List<int> Tokens, List<float[]> Logits) dense, (List<int> Tokens, List<float[]> Logits, FlashRuntime) flash)
    {
        Assert.Equal(dense.Tokens, flash.Tokens);
        Assert.Equal(dense.Logits.Count, flash.Logits.Count);
        for (int p = 0; p < dense.Logits.Count; p++)
            Assert.True(dense.Logits[p].AsSpan().SequenceEqual(flash.Logits[p]), $"position {p}: the flash logits differ from the dense ones");
    }

    [Theory]
    [InlineData(DType.Q4_0, 64, null)]
    [InlineData(DType.Q8_0, 64, null)]
    [InlineData(DType.Q4_K, 256, DType.Q6_K)]
    public void Flash_at_sparsity_0_gives_exactly_the_dense_output_on_the_layout(DType type, int dim, DType? downType)
    {
        var folder = Layout(type, dim, downType: downType);
        (List<int>, List<float[]>) dense;
        using (var source = new FlashLayoutModel(folder))
        using (var ffn = new LayoutDenseFfn(source))
        {
            Assert.True(source.Ffn.Quantized);
            dense = Dense(source, ffn);
        }
        var flash = Flash(folder, null, "sparsity=0");
        using (flash.Runtime) AssertSame(dense, flash);
        Assert.True(dense.Item1.Count >= Positions - 1, "the dense run stopped early");
        // The naive baseline reads the quantized attention blocks from dram.bin every token: the same weights, the same output.
        var streamed = Flash(folder, null, "sparsity=0", "stream-attention=on");
        using (streamed.Runtime) AssertSame(dense, streamed);
    }

    [Fact]
    public void A_Q8_0_GGUF_converts_to_a_quantized_layout_that_runs_in_flash_exactly_as_dense_over_it()
    {
        // Through the real import path: a synthetic F32 GGUF of stories260K's shape re-written in Q8_0 (gate/up Q8_0; down's rows of
        // 172 are not whole blocks, so the writer keeps it F16, as llama.cpp does), opened by the GGUF reader and converted.
        var f32 = SyntheticModels.WriteGguf(_tmp.File("synth.gguf"), SyntheticModels.StoriesShape);
        var q8 = _tmp.File("synth.q8_0.gguf");
        using (var src = ModelLoader.Open(f32)) GgufWriter.Copy(src, q8, DType.Q8_0);
        var folder = _tmp.Sub("synth-q8_0");
        using (var src = ModelLoader.Open(q8))
        {
            Assert.Equal(DType.Q8_0, src.Info("blk.0.ffn_gate.weight").DType);
            Assert.Equal(DType.F16, src.Info("blk.0.ffn_down.weight").DType);
            var report = FlashLayoutWriter.Convert(src, folder);
            Assert.True(report.Quantized);
            Assert.InRange(report.DownError!.MaxColumnRelRms, 1e-5, 0.01);
        }
        (List<int>, List<float[]>) dense;
        using (var source = new FlashLayoutModel(folder))
        using (var ffn = new LayoutDenseFfn(source))
            dense = Dense(source, ffn);
        var flash = Flash(folder, null, "sparsity=0");
        using (flash.Runtime) AssertSame(dense, flash);
    }

    /// <summary>Qwen3 (per-head q/k norms, halves rotated, a head width apart from dim / heads) converts from GGUF to the flash layout,
    /// keeps its variant and head width in the manifest, and runs in flash exactly as dense over the layout.</summary>
    [Fact]
    public void A_qwen3_gguf_converts_and_runs_in_flash_exactly_as_dense()
    {
        var gguf = SyntheticModels.WriteGguf(_tmp.File("qwen3.gguf"), SyntheticShapes.Get("qwen3-tiny"), seed: 8);
        var folder = _tmp.Sub("qwen3.flash");
        using (var src = ModelLoader.Open(gguf)) FlashLayoutWriter.Convert(src, folder);
        (List<int>, List<float[]>) dense;
        using (var source = new FlashLayoutModel(folder))
        using (var ffn = new LayoutDenseFfn(source))
        {
            Assert.True(source.Config.QkNorm);
            Assert.Equal(128, source.Config.HeadSize);
            Assert.Equal(LlamaVariant.Qwen3, source.Config.Variant);
            dense = Dense(source, ffn);
        }
        var flash = Flash(folder, null, "sparsity=0");
        using (flash.Runtime) AssertSame(dense, flash);
        Assert.True(dense.Item1.Count >= Positions - 1, "the dense run stopped early");

    }

    /// <summary>
    /// Mixture of experts in flash: each expert a run of consecutive bundles, the router (in DRAM) naming the experts, their
    /// neurons read and weighted by the routing weights. With rows for a layer's chosen experts, the router-driven run gives
    /// exactly the dense MoE over the layout's own bundles, and so does reading every expert each token (predictor = all,
    /// the ladder's first rung); the layout reads back the GGUF's experts bit for bit, and the dense MoE over it equals the
    /// GGUF's; under a budget that holds a fraction of one layer's experts the tokens stay the same.
    /// </summary>
    [Theory]
    [InlineData("mixtral-tiny")]
    [InlineData("qwen3moe-tiny")]
    public void A_moe_model_runs_in_flash_routed_exactly_as_the_dense_moe(string shape)
    {
        var config = SyntheticShapes.Get(shape);
        var gguf = _tmp.File($"{shape}.gguf");
        SyntheticModel.WriteGguf(gguf, config, DType.F32, seed: 8);
        var folder = _tmp.Sub($"{shape}.flash");
        using (var src = ModelLoader.Open(gguf)) FlashLayoutWriter.Convert(src, folder);
        (List<int>, List<float[]>) dense, fromGguf;
        using (var src = ModelLoader.Open(gguf)) fromGguf = Dense(new FlashLayoutModel(folder), new DenseMoe(src));
        using (var source = new FlashLayoutModel(folder))
        {
            Assert.Equal(config.Experts, source.Config.Experts);
            Assert.Equal(config.Experts * config.HiddenDim, source.Ffn.Neurons);
            using (var src = ModelLoader.Open(gguf))
                foreach (var part in new[] { TensorNames.FfnGateExperts, TensorNames.FfnUpExperts, TensorNames.FfnDownExperts })
                    Assert.Equal(src.ReadF32(TensorNames.Block(1, part)), source.ReadF32(TensorNames.Block(1, part)));
            using var ffn = new LayoutDenseFfn(source);
            dense = Dense(source, ffn);
            // The dense MoE over the layout's experts (matrix products per expert) is the GGUF's own.
            var overLayout = Dense(source, new DenseMoe(source));
            Assert.Equal(fromGguf.Item1, overLayout.Item1);
        }
        Assert.True(dense.Item1.Count >= Positions - 1, "the dense run stopped early");
        // Bundle-wise sums differ from per-expert matrix products in the last bits only.
        Assert.Equal(fromGguf.Item1.Take(8), dense.Item1.Take(8));
        var routed = Flash(folder, null);
        using (routed.Runtime)
        {
            Assert.StartsWith("router (top 2 of", routed.Runtime.Plan.Predictor);
            AssertSame(dense, routed);
        }
        var all = Flash(folder, null, "predictor=all");
        using (all.Runtime) AssertSame(dense, all);
        // A budget with rows for a quarter of one layer's chosen experts: the experts come in lease-sized parts, summed in
        // another order, so the logits move in the last bits and the tokens do not.
        long expertBytes;
        using (var source = new FlashLayoutModel(folder)) expertBytes = (long)config.HiddenDim * source.Ffn.BundleStride;
        var small = Assert.Throws<DramBudgetException>(() => FlashRuntime.Open(folder, RuntimeSettings.Compose([], ["dram-budget=100KiB"]), Positions));
        var tight = Flash(folder, null, $"dram-budget={small.MinimumBytes + expertBytes * config.ExpertsUsed * config.Layers / 4}");
        using (tight.Runtime)
        {
            Assert.True(tight.Runtime.Plan.RowsPerLayer < config.ExpertsUsed * config.HiddenDim / 2, $"{tight.Runtime.Plan.RowsPerLayer} rows per layer");
            Assert.Equal(dense.Item1, tight.Tokens);
        }
        // Statistics in experts: every decode step uses the router's k experts in every layer; what was not found cached was read
        // (reads also count the pre-gated prefetches).
        using var rt = FlashRuntime.Open(folder, RuntimeSettings.Compose([], []), Positions);
        var (_, stats) = FlashPipelineTests.RunFlash(rt, "the robot", 12, SamplingOptions.Greedy);
        var decode = stats.Where(x => !x.Prefill).ToList();
        Assert.NotEmpty(decode);
        foreach (var x in decode)
        {
            Assert.Equal((double)config.ExpertsUsed * config.Layers, x.ExpertsUsed!.Value, 6);
            Assert.InRange(x.ExpertsHit!.Value, 0, x.ExpertsUsed.Value);
            Assert.True(x.ExpertsRead!.Value >= x.ExpertsUsed.Value - x.ExpertsHit.Value - 1e-9, "reads cover every expert not found cached (and the prefetches)");
            Assert.InRange(x.ExpertsPrefetchedUsed!.Value, 0, x.ExpertsUsed.Value);
        }
        Assert.True(decode.Sum(x => x.ExpertsPrefetchedUsed!.Value) > 0, "the pre-gated guess never named an expert the layer then used");
    }

    /// <summary>flashlm.moe-prefetch-experts: the pre-gated guess names only the router's best n experts of the next layer (fewer
    /// wasted reads); the output does not change; a bad value is refused naming the key.</summary>
    [Fact]
    public void The_pre_gated_guess_can_name_fewer_experts_than_the_model_uses()
    {
        var config = SyntheticShapes.Get("mixtral-tiny");
        var folder = F32Layout("guess", config, seed: 9);
        List<TokenStats> StatsOf(FlashRuntime rt) => FlashPipelineTests.RunFlash(rt, "the robot", 10, SamplingOptions.Greedy).Stats;
        byte[] Text(FlashRuntime rt) => FlashPipelineTests.RunFlash(rt, "the robot", 10, SamplingOptions.Greedy).Stdout;
        using var all = FlashRuntime.Open(folder, RuntimeSettings.Compose([], []), Positions);
        using var one = FlashRuntime.Open(folder, RuntimeSettings.Compose([], ["moe-prefetch-experts=1"]), Positions);
        Assert.Contains("pre-gated guess of the best 1 ahead", one.Plan.Predictor);
        Assert.Equal(Text(all), Text(one));
        var guessed = StatsOf(one).Where(x => !x.Prefill && x.LookaheadGuessed is not null).ToList();
        Assert.NotEmpty(guessed);
        // One expert guessed for each layer after the first.
        Assert.All(guessed, x => Assert.Equal(config.HiddenDim * (config.Layers - 1), x.LookaheadGuessed!.Value));
        Assert.All(StatsOf(all).Where(x => !x.Prefill && x.LookaheadGuessed is not null),
            x => Assert.Equal(config.ExpertsUsed * config.HiddenDim * (config.Layers - 1), x.LookaheadGuessed!.Value));
        var e = Assert.Throws<SettingsException>(() => RuntimeSettings.From(RuntimeSettings.Compose([], ["moe-prefetch-experts=0"])));
        Assert.Equal("flashlm.moe-prefetch-experts", e.Key);
    }

    /// <summary>
    /// Experts pinned by measured frequency: calibration counts how often the router chose each expert (every neuron of an
    /// expert gets its expert's share, and each layer's shares sum to the experts used per token), the runtime pins whole
    /// experts, the most frequent first, and the output stays exactly the dense MoE's over the layout while pinned experts are hit.
    /// </summary>
    [Fact]
    public void Experts_pinned_by_measured_frequency_are_whole_and_leave_the_output_exact()
    {
        var config = SyntheticShapes.Get("mixtral-tiny");
        var folder = F32Layout("pin", config, seed: 10);
        int h = config.HiddenDim;
        (List<int>, List<float[]>) dense;
        float[][] frequencies;
        using (var source = new FlashLayoutModel(folder))
        {
            var sequences = Calibrator.Sequences(source, null, 48);
            frequencies = Calibrator.ExpertFrequencies(source, sequences);
            Assert.Equal(config.Layers, frequencies.Length);
            foreach (var layer in frequencies)
            {
                Assert.Equal(config.Experts * h, layer.Length);
                for (int e = 0; e < config.Experts; e++)
                    Assert.All(layer.AsSpan(e * h, h).ToArray(), f => Assert.Equal(layer[e * h], f));
                Assert.Equal(config.ExpertsUsed, Enumerable.Range(0, config.Experts).Sum(e => (double)layer[e * h]), 4);
            }
            FlashLayoutWriter.WriteActivity(folder, new ActivityFrequencies(sequences.Sum(q => q.Length), frequencies));
            using var ffn = new LayoutDenseFfn(source);
            dense = Dense(source, ffn);
        }
        // Rows for three experts per layer, half of them pinned: one whole expert (rounded down to experts), the most frequent.
        long expertBytes;
        using (var source = new FlashLayoutModel(folder)) expertBytes = (long)h * source.Ffn.BundleStride;
        var small = Assert.Throws<DramBudgetException>(() => FlashRuntime.Open(folder, RuntimeSettings.Compose([], ["dram-budget=100KiB", "pin=0.5"]), Positions));
        var pinned = Flash(folder, null, $"dram-budget={small.MinimumBytes + expertBytes * config.Layers * 3}", "pin=0.5", "lookahead=off");
        using (pinned.Runtime)
        {
            int rows = pinned.Runtime.Plan.RowsPerLayer;
            Assert.InRange(rows, 2 * h, 4 * h);
            Assert.True(pinned.Runtime.Plan.PinnedRows > 0, "nothing pinned");
            Assert.Equal(0, pinned.Runtime.Plan.PinnedRows % h);
            Assert.Equal(dense.Item1, pinned.Tokens);
            var hot = HotNeurons.Choose(frequencies, rows, config.Experts * h, 5, 0.5, unit: h);
            Assert.Equal(pinned.Runtime.Plan.PinnedRows, hot.Sum(x => x.Length));
            for (int l = 0; l < config.Layers; l++)
            {
                var perExpert = Enumerable.Range(0, config.Experts).Select(e => frequencies[l][e * h]).ToArray();
                var best = Enumerable.Range(0, config.Experts).OrderByDescending(e => perExpert[e]).ThenBy(e => e).Take(hot[l].Length / h);
                Assert.Equal(best.SelectMany(e => Enumerable.Range(e * h, h)).Order(), hot[l].Order());
            }
        }
        using var rt = FlashRuntime.Open(folder, RuntimeSettings.Compose([], [$"dram-budget={small.MinimumBytes + expertBytes * config.Layers * 3}", "pin=0.5", "lookahead=off"]), Positions);
        var (_, stats) = FlashPipelineTests.RunFlash(rt, "the robot", 12, SamplingOptions.Greedy);
        Assert.True(stats.Sum(x => x.NeuronsPinnedHit) > 0, "no pinned expert was ever used");
        Assert.All(stats, x => Assert.True(x.ExpertsHit!.Value * h >= x.NeuronsPinnedHit - 1e-6, "experts found cached count the pinned ones"));
    }

    /// <summary>A quantized MoE GGUF (Q8_0 experts) converts to a quantized layout (gate and up rows as the source's blocks, down
    /// columns re-quantized, expert by expert in one section) that runs in flash exactly as the dense MoE over its own bundles.</summary>
    [Fact]
    public void A_quantized_moe_gguf_converts_and_runs_in_flash_exactly_as_dense_over_it()
    {
        var f16 = _tmp.File("moe.f16.gguf");
        SyntheticModel.WriteGguf(f16, SyntheticShapes.Get("qwen3moe-tiny"), DType.F16, seed: 8);
        var q8 = _tmp.File("moe.q8_0.gguf");
        using (var src = ModelLoader.Open(f16)) GgufWriter.Copy(src, q8, DType.Q8_0);
        var folder = _tmp.Sub("moe-q8.flash");
        using (var src = ModelLoader.Open(q8))
        {
            Assert.Equal(DType.Q8_0, src.Info("blk.0.ffn_gate_exps.weight").DType);
            var report = FlashLayoutWriter.Convert(src, folder);
            Assert.True(report.Quantized);
        }
        (List<int>, List<float[]>) dense;
        using (var source = new FlashLayoutModel(folder))
        using (var ffn = new LayoutDenseFfn(source))
        {
            Assert.True(source.Ffn.Quantized);
            Assert.Equal(8 * 256, source.Ffn.Neurons);
            dense = Dense(source, ffn);
        }
        Assert.True(dense.Item1.Count >= Positions - 1, "the dense run stopped early");
        var flash = Flash(folder, null);
        using (flash.Runtime) AssertSame(dense, flash);
        // The same tokens as the GGUF's own dense MoE (matrix products, not bundles, and down not re-quantized) for a stretch.
        using var gguf = ModelLoader.Open(q8);
        using var layout = new FlashLayoutModel(folder);
        var own = Dense(layout, new DenseMoe(gguf));
        Assert.Equal(own.Item1.Take(6), dense.Item1.Take(6));
        // The dense MoE loads a quantized layout's experts too (each expert's blocks cut from its layer's; what calibrating
        // expert frequencies runs on), giving the GGUF's gate and up blocks bit for bit.
        var overLayout = Dense(layout, new DenseMoe(layout));
        Assert.Equal(own.Item1.Take(6), overLayout.Item1.Take(6));
        Assert.Equal(gguf.ReadSlab(TensorNames.Block(0, TensorNames.FfnGateExperts), 3).Blocks, layout.ReadSlab(TensorNames.Block(0, TensorNames.FfnGateExperts), 3).Blocks);
    }

    [Fact]
    public void A_quantized_OPT_layout_runs_in_flash_exactly_as_dense_over_it()
    {
        var config = new ModelConfig
        {
            Architecture = FlashLm.Formats.Architecture.Opt, Dim = 64, HiddenDim = 80, Layers = 2, Heads = 4, KvHeads = 4, VocabSize = 300,
            ContextLength = 32, PositionOffset = 2, TiedEmbeddings = false,
        };
        var folder = _tmp.Sub("opt-q4_0");
        using (var src = new QuantTestModel(_tmp.File("opt.bin"), config, QuantTestModel.Types(DType.Q4_0), seed: 4))
            FlashLayoutWriter.Convert(src, folder);
        (List<int>, List<float[]>) dense;
        using (var source = new FlashLayoutModel(folder))
        using (var ffn = new LayoutDenseFfn(source))
        {
            Assert.Equal(new[] { "up", "down" }, source.Ffn.Parts.Select(p => p.Name));
            dense = Dense(source, ffn);
        }
        var flash = Flash(folder, null, "predictor=all");
        using (flash.Runtime) AssertSame(dense, flash);
    }

    [Fact]
    public void Flash_with_thresholds_gives_exactly_the_dense_thresholded_model_on_the_layout()
    {
        var folder = Layout(DType.Q4_0, 64);
        float[] thresholds = [0.02f, 0.03f];
        (List<int>, List<float[]>) dense, plain;
        using (var source = new FlashLayoutModel(folder))
        {
            using (var ffn = new LayoutDenseFfn(source, thresholds)) dense = Dense(source, ffn);
            using (var ffn = new LayoutDenseFfn(source)) plain = Dense(source, ffn);
        }
        Assert.NotEqual(plain.Item2[1], dense.Item2[1]); // the thresholds do cut neurons
        var flash = Flash(folder, thresholds, "predictor=all");
        using (flash.Runtime) AssertSame(dense, flash);
        // The oracle reads only the neurons above threshold (its gate scores from the same blocks and the same quantized input).
        var oracle = Flash(folder, thresholds, "predictor=oracle");
        using (oracle.Runtime) AssertSame(dense, oracle);
    }

    [Theory]
    [InlineData("oracle")]
    [InlineData("gate")]
    public void A_quantized_relu_llama_layout_runs_in_flash_exactly_as_dense_over_it(string predictor)
    {
        // ReLU-fied Llama, Q4_0 gate/up: the quantized bundle kernel applies relu(gate . x) by the same rule as the dense FFN over
        // the bundles and the exact selection, with the model's own threshold (0) and with a FATReLU-like calibrated one.
        var folder = _tmp.Sub($"relu-q4_0-{predictor}");
        using (var src = new QuantTestModel(_tmp.File($"relu-{predictor}.bin"), QuantTestModel.Llama(64, 40, layers: 2, vocab: 300) with { Activation = FfnActivation.Relu },
                   QuantTestModel.Types(DType.Q4_0), seed: 9))
            FlashLayoutWriter.Convert(src, folder);
        float[] fat = [0.05f, 0.05f];
        (List<int>, List<float[]>) plain, thresholded;
        using (var source = new FlashLayoutModel(folder))
        {
            Assert.Equal(FfnActivation.Relu, source.Config.Activation);
            using (var ffn = new LayoutDenseFfn(source)) plain = Dense(source, ffn);
            using (var ffn = new LayoutDenseFfn(source, fat)) thresholded = Dense(source, ffn);
        }
        Assert.NotEqual(plain.Item2[1], thresholded.Item2[1]); // the threshold does cut neurons
        var flash = Flash(folder, null, $"predictor={predictor}");
        using (flash.Runtime) AssertSame(plain, flash);
        var fatFlash = Flash(folder, fat, $"predictor={predictor}");
        using (fatFlash.Runtime) AssertSame(thresholded, fatFlash);
    }

    [Fact]
    public void The_matrix_dense_path_over_the_layout_agrees_with_the_bundle_dense_path()
    {
        // DenseSwiGlu reads the layout's gate/up (the source's blocks) and down (the re-quantized columns, widened): the same
        // weights, summed in another order, so the logits agree closely but not bit for bit.
        var folder = Layout(DType.Q4_0, 64);
        using var source = new FlashLayoutModel(folder);
        using var ffn = new LayoutDenseFfn(source);
        var bundles = Dense(source, ffn);
        var matrices = Dense(source, new DenseSwiGlu(source));
        for (int p = 0; p < 4; p++)
        {
            float scale = bundles.Logits[p].Max(MathF.Abs);
            float diff = bundles.Logits[p].Zip(matrices.Logits[p], (a, b) => MathF.Abs(a - b)).Max();
            Assert.True(diff <= 0.02f * scale, $"position {p}: logits differ by {diff} (largest |logit| {scale})");
        }
    }

    [Fact]
    public void The_DRAM_budget_counts_quantized_bundles()
    {
        // Q4_0, dim 64: bundle 36 + 36 (at 48) + Q8_0 down 68 (at 96) = 164 B, stride 256; F16 would be 3 x 128 = 384 B, stride 512.
        var folder = Layout(DType.Q4_0, 64);
        using var runtime = FlashRuntime.Open(folder, RuntimeSettings.Compose([], []), Positions);
        int layers = 2, neurons = 40;
        Assert.Equal(neurons, runtime.Plan.RowsPerLayer);
        long rows = layers * (NeuronCacheBytes(neurons, neurons, 256)) + 4L * layers * neurons;
        Assert.Equal(rows, runtime.Plan.CacheRows);
        // DRAM tensors at their stored sizes: the layout's dram.bin tensors (Q8_0 attention, F16 embeddings, F32 norms) and RoPE.
        using var layout = new FlashLayoutModel(folder);
        long stored = layout.Tensors.Values.Where(t => !layout.IsOnFlash(t.Name)).Sum(t => t.ByteLength);
        long f32 = layout.Tensors.Values.Where(t => !layout.IsOnFlash(t.Name)).Sum(t => t.Elements * 4);
        Assert.InRange(runtime.Plan.Weights, stored, stored + (f32 - stored) / 2);
    }

    private static long NeuronCacheBytes(int neurons, int capacity, long stride) =>
        FlashLm.Runtime.Io.AlignedBuffer.AlignUp((long)capacity * stride) + 4L * (neurons + 2L * capacity) + 8L * neurons + 16L * capacity + 5L * capacity;
}
