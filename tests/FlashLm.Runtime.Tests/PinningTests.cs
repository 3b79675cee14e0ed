using System.Runtime.InteropServices;
using System.Text;
using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Models.Sampling;
using FlashLm.Models.Sparsity;
using FlashLm.Runtime;
using FlashLm.Runtime.Cache;
using FlashLm.Runtime.Config;
using Xunit;
using static FlashLm.Runtime.Cache.CacheManager;

namespace FlashLm.Tests.Runtime;

/// <summary>A synthetic model of stories260K's shape in flash layout, calibrated to half sparsity with its activation frequencies stored.</summary>
public sealed class PinnedLayoutFixture : IDisposable
{
    private readonly TempDir _dir = new();

    public PinnedLayoutFixture()
    {
        Folder = SyntheticModels.WriteLayout(_dir.File("pinned.flash"), SyntheticModels.StoriesShape);
        Calibration c;
        using (var source = new FlashLayoutModel(Folder)) c = Calibrator.Calibrate(source, Calibrator.Sequences(source, null, 128), 0.5);
        FlashLayoutWriter.WriteThresholds(Folder, c.Thresholds.Select(t => (double)t).ToArray());
        FlashLayoutWriter.WriteActivity(Folder, new ActivityFrequencies(c.Positions, c.Frequencies));
        Calibration = c;
    }

    public string Folder { get; }
    public Calibration Calibration { get; }

    public void Dispose() => _dir.Dispose();
}

/// <summary>Hot-neuron pinning: the frequencies in the layout, the choice of hot neurons, the cache core, the plan and the runtime.</summary>
public sealed class PinningTests(SyntheticFlashFixture f, PinnedLayoutFixture pinned) : IClassFixture<SyntheticFlashFixture>, IClassFixture<PinnedLayoutFixture>
{
    private readonly byte[] _ffn = File.ReadAllBytes(f.Ffn.FilePath);

    private static CacheSettings Settings(int rows, int[][]? hot, int window = 0, int reserve = 0) =>
        new(rows, window, CoalesceGap: 0, MaxRead: 64 * 1024, StagingBuffers: 4, MaxReadsInFlight: 64, DirectIo: false, DemandReserve: reserve, Hot: hot);

    private CacheCore.Effects Land(CacheCore core, CacheCore.ReadStart r)
    {
        var plan = r.Plan;
        int available = (int)Math.Min(plan.Length, _ffn.Length - plan.FileOffset);
        if (plan.Direct) Marshal.Copy(_ffn, (int)plan.FileOffset, plan.Destination, available);
        else
            foreach (var c in plan.Copies)
                Marshal.Copy(_ffn, (int)(plan.FileOffset + c.SourceOffset), c.Destination, c.Length);
        return core.ReadDone(r.Id, plan.Length);
    }

    /// <summary>Lands every read (and the reads those start); returns the ready leases and the neurons each read filled.</summary>
    private (List<CacheCore.Ready> Ready, List<(int Layer, int Neuron)> Read) LandAll(CacheCore core, CacheCore.Effects first)
    {
        var ready = new List<CacheCore.Ready>(first.ReadyLeases);
        var read = new List<(int, int)>();
        var reads = new Queue<CacheCore.ReadStart>(first.Reads);
        while (reads.TryDequeue(out var r))
        {
            int layer = LayerOf(r.Plan);
            foreach (var row in r.Plan.Rows) read.Add((layer, core.CacheOf(layer).NeuronAt(row)));
            var e = Land(core, r);
            Assert.Empty(e.Failures);
            foreach (var next in e.Reads) reads.Enqueue(next);
            ready.AddRange(e.ReadyLeases);
        }
        return (ready, read);
    }

    private int LayerOf(PlannedRead p)
    {
        for (int l = 0; l < f.Ffn.Layers; l++)
            if (p.FileOffset >= f.Ffn.BundleOffset(l, 0) && p.FileOffset < f.Ffn.BundleOffset(l, 0) + f.Ffn.LayerBytes) return l;
        throw new InvalidOperationException($"read at {p.FileOffset} is in no layer");
    }

    private byte[] Bundle(int layer, int neuron) => _ffn.AsSpan((int)f.Ffn.BundleOffset(layer, neuron), (int)f.Ffn.BundleBytes).ToArray();

    [Fact]
    public void Pinned_neurons_are_read_once_at_start_and_never_again()
    {
        int layers = f.Ffn.Layers;
        var hot = Enumerable.Range(0, layers).Select(l => new[] { 5, 1, 300, 7 + l }).ToArray();
        using var core = new CacheCore(f.Ffn, Settings(rows: 24, hot, window: 0));
        var (_, start) = LandAll(core, core.LoadHot());
        Assert.Equal(hot.SelectMany((h, l) => h.Select(n => (l, n))).Order(), start.Order());
        Assert.Equal(4 * layers, core.HotRows);
        Assert.Equal(0, core.PinnedRows);                        // the permanent pins are not in-flight pins
        Assert.Empty(core.LoadHot().Reads);                      // once

        var random = new Random(3);
        for (int token = 0; token < 12; token++)
        {
            int layer = token % layers;
            // Half of the hot neurons and a random set of others (window 0: the others are evicted at every token end).
            var neurons = hot[layer].Where((_, i) => (i + token) % 2 == 0)
                .Concat(Enumerable.Range(0, 20).Select(_ => random.Next(f.Ffn.Neurons))).Distinct().ToArray();
            var (ready, read) = LandAll(core, core.Acquire("s", layer, neurons, prefill: false));
            Assert.DoesNotContain(read, x => core.IsHot(x.Layer, x.Neuron));
            var lease = Assert.Single(ready).Lease;
            for (int i = 0; i < lease.Neurons.Length; i++)
                Assert.Equal(Bundle(layer, lease.Neurons[i]), RuntimeTestConfig.Copy(lease.Addresses[i], (int)f.Ffn.BundleBytes));
            core.Release("s", lease);
            var stats = core.TokenDone("s", token, out _);
            int hotUsed = neurons.Count(n => core.IsHot(layer, n));
            Assert.Equal(hotUsed, stats.PinnedHits);
            Assert.Equal(neurons.Length, stats.NeuronsActive);
            Assert.Equal(neurons.Length - hotUsed, stats.NeuronsLoaded);  // every other neuron was a miss (window 0)
            Assert.Equal(0, stats.WindowHits);
            Assert.All(hot[layer], n => Assert.True(core.CacheOf(layer).Contains(n)));
        }
        Assert.Equal(0, core.PinnedRows);
        Assert.Equal(4 * layers, core.HotRows);
    }

    [Fact]
    public void Window_hits_and_pinned_hits_are_counted_apart()
    {
        var hot = Enumerable.Range(0, f.Ffn.Layers).Select(_ => new[] { 2, 4 }).ToArray();
        using var core = new CacheCore(f.Ffn, Settings(rows: 24, hot, window: 5));
        LandAll(core, core.LoadHot());
        var first = Assert.Single(LandAll(core, core.Acquire("s", 1, [2, 10, 11], prefill: false)).Ready).Lease;
        core.Release("s", first);
        var t0 = core.TokenDone("s", 0, out _);
        Assert.Equal((1, 0, 2), (t0.PinnedHits, t0.WindowHits, t0.NeuronsLoaded));
        var second = Assert.Single(LandAll(core, core.Acquire("s", 1, [2, 4, 10, 12], prefill: false)).Ready).Lease;
        core.Release("s", second);
        var t1 = core.TokenDone("s", 1, out _);
        Assert.Equal((2, 1, 1), (t1.PinnedHits, t1.WindowHits, t1.NeuronsLoaded));
    }

    [Fact]
    public void A_pinned_neuron_whose_read_failed_is_no_longer_pinned_and_is_read_again_on_demand()
    {
        var hot = Enumerable.Range(0, f.Ffn.Layers).Select(_ => new[] { 40 }).ToArray();
        using var core = new CacheCore(f.Ffn, Settings(rows: 24, hot));
        var start = core.LoadHot();
        var failed = start.Reads.Single(r => LayerOf(r.Plan) == 2);
        core.ReadFailed(failed.Id, "EIO");
        foreach (var r in start.Reads.Where(r => r.Id != failed.Id)) Land(core, r);
        Assert.False(core.IsHot(2, 40));
        Assert.False(core.CacheOf(2).Contains(40));
        Assert.True(core.IsHot(1, 40));
        var (ready, read) = LandAll(core, core.Acquire("s", 2, [40], prefill: false));
        Assert.Contains((2, 40), read);
        var lease = Assert.Single(ready).Lease;
        Assert.Equal(Bundle(2, 40), RuntimeTestConfig.Copy(lease.Addresses[0], (int)f.Ffn.BundleBytes));
    }

    [Fact]
    public void Pinning_every_row_of_a_layer_that_does_not_hold_every_neuron_is_refused()
    {
        var hot = Enumerable.Range(0, f.Ffn.Layers).Select(_ => Enumerable.Range(0, 16).ToArray()).ToArray();
        var e = Assert.Throws<ArgumentException>(() => new CacheCore(f.Ffn, Settings(rows: 16, hot)));
        Assert.Contains("window", e.Message);
    }

    [Theory]
    [InlineData(64, 1)]
    [InlineData(100, 5)]
    [InlineData(200, 5)]
    [InlineData(280, 3)]
    public void Auto_pins_the_most_frequent_neurons_and_nearly_the_most_expected_hits(int rows, int span)
    {
        var random = new Random(rows);
        var freq = new float[2][];
        freq[0] = Enumerable.Range(0, 300).Select(_ => (float)Math.Pow(random.NextDouble(), 3)).ToArray(); // skewed
        freq[1] = Enumerable.Range(0, 300).Select(i => i % 7 == 0 ? 0.9f : 0.05f).ToArray();                // hot and cold, with ties
        var hot = HotNeurons.Choose(freq, rows, 300, span, share: null);
        for (int l = 0; l < 2; l++)
        {
            var sorted = freq[l].OrderDescending().ToArray();
            // The most frequent, ties in neuron order.
            var expected = freq[l].Select((x, i) => (x, i)).OrderByDescending(p => p.x).ThenBy(p => p.i).Select(p => p.i).Take(hot[l].Length);
            Assert.Equal(expected, hot[l]);
            Assert.InRange(hot[l].Length, 0, rows - HotNeurons.MinWindowRows);
            // Against every count by brute force: within 2 % of the best (auto looks at 17 counts, not all).
            double chosen = HotNeurons.ExpectedHits(sorted, hot[l].Length, rows, span);
            double best = Enumerable.Range(0, rows - HotNeurons.MinWindowRows + 1).Max(h => HotNeurons.ExpectedHits(sorted, h, rows, span));
            Assert.True(chosen >= 0.98 * best, $"layer {l}: auto pinned {hot[l].Length} for {chosen:F2} expected hits; the best count gives {best:F2}");
            Assert.True(chosen >= HotNeurons.ExpectedHits(sorted, 0, rows, span));
        }
        // Hot and cold frequencies with a one-token window: the window loses a hot neuron each time it sits a token out
        // (10 % of tokens), pinning keeps it, so the hot ones are worth pinning. (With a five-token window LRU already keeps
        // them: 0.1^5 misses, and pinning gains under 0.1 %.)
        if (span == 1 && rows == 64) Assert.True(hot[1].Length >= 40, $"pinned {hot[1].Length} of the 43 hot neurons");
    }

    [Fact]
    public void Auto_pins_nothing_when_frequencies_are_alike_and_the_window_can_use_its_rows()
    {
        var freq = new[] { Enumerable.Repeat(0.1f, 300).ToArray() };
        Assert.Empty(HotNeurons.Choose(freq, 100, 300, 5, share: null)[0]);
        // A window of one token holds about 30 of them: the idle rows are better pinned.
        Assert.NotEmpty(HotNeurons.Choose(freq, 200, 300, 1, share: null)[0]);
    }

    [Fact]
    public void Expected_hits_match_a_simulation_of_pinned_rows_and_the_window()
    {
        // Independent neurons: simulate the window (rows left after the pinned ones, at most span tokens back) and count hits.
        var random = new Random(11);
        var sorted = Enumerable.Range(0, 200).Select(_ => (float)Math.Pow(random.NextDouble(), 2)).OrderDescending().ToArray();
        const int rows = 80, span = 5, hot = 30, tokens = 4000;
        var lastUsed = new int[sorted.Length];
        Array.Fill(lastUsed, int.MinValue / 2);
        long hits = 0;
        for (int t = 0; t < tokens; t++)
        {
            var active = Enumerable.Range(0, sorted.Length).Where(i => random.NextDouble() < sorted[i]).ToArray();
            // The window: the most recent (rows - hot) unpinned neurons used within span tokens.
            var held = Enumerable.Range(hot, sorted.Length - hot).Where(i => lastUsed[i] >= t - span)
                .OrderByDescending(i => lastUsed[i]).Take(rows - hot).ToHashSet();
            hits += active.Count(i => i < hot || held.Contains(i));
            foreach (var i in active) lastUsed[i] = t;
        }
        double simulated = hits / (double)tokens, model = HotNeurons.ExpectedHits(sorted, hot, rows, span);
        Assert.InRange(model, 0.85 * simulated, 1.15 * simulated);
    }

    [Fact]
    public void A_share_pins_that_share_of_the_rows_and_always_leaves_the_window_rows_of_its_own()
    {
        var freq = new[] { Enumerable.Range(0, 100).Select(i => i / 100f).ToArray() };
        Assert.Equal(Enumerable.Range(0, 15).Select(i => 99 - i), HotNeurons.Choose(freq, 50, 100, 5, share: 0.3)[0]);
        Assert.Equal(50 - HotNeurons.MinWindowRows, HotNeurons.Choose(freq, 50, 100, 5, share: 0.99)[0].Length);
        Assert.Empty(HotNeurons.Choose(freq, 16, 100, 5, share: 0.5)[0]);
        Assert.Empty(HotNeurons.Choose(freq, 50, 100, 5, share: 0)[0]);
    }

    [Fact]
    public void With_a_unit_whole_units_are_pinned_the_most_frequent_first()
    {
        // Four experts of ten neurons, each expert's neurons sharing its frequency (as calibration records them).
        var perExpert = new[] { 0.2f, 0.9f, 0.5f, 0.9f };
        var freq = new[] { perExpert.SelectMany(f => Enumerable.Repeat(f, 10)).ToArray() };
        // A share of 45 % of 50 rows is 22 neurons: two whole experts, the two most frequent (ties: the lower expert first).
        Assert.Equal(Enumerable.Range(10, 10).Concat(Enumerable.Range(30, 10)), HotNeurons.Choose(freq, 50, 40, 5, share: 0.45, unit: 10)[0]);
        Assert.Equal(22, HotNeurons.Choose(freq, 50, 40, 5, share: 0.45)[0].Length);
        // Less than an expert's worth pins nothing; auto pins whole experts too.
        Assert.Empty(HotNeurons.Choose(freq, 50, 40, 5, share: 0.15, unit: 10)[0]);
        Assert.Equal(0, HotNeurons.Choose(freq, 30, 40, 1, share: null, unit: 10)[0].Length % 10);
        Assert.Throws<ArgumentException>(() => HotNeurons.Choose(freq, 50, 40, 5, share: 0.5, unit: 3));
    }

    [Theory]
    [InlineData("auto", null)]
    [InlineData("off", 0.0)]
    [InlineData("0", 0.0)]
    [InlineData("0.25", 0.25)]
    [InlineData("30%", 0.3)]
    public void Pin_setting_reads_auto_off_and_shares(string value, double? expected)
    {
        var s = RuntimeSettings.From(RuntimeSettings.Compose([], [$"pin={value}"]));
        if (expected is null) Assert.Null(s.Pin);
        else Assert.Equal(expected.Value, s.Pin!.Value, 9);
    }

    [Theory]
    [InlineData("1")]
    [InlineData("-0.1")]
    [InlineData("lots")]
    [InlineData("150%")]
    public void Bad_pin_values_are_refused_naming_the_key(string value)
    {
        var e = Assert.Throws<SettingsException>(() => RuntimeSettings.From(RuntimeSettings.Compose([], [$"pin={value}"])));
        Assert.Contains("flashlm.pin", e.Message);
    }

    [Fact]
    public void Frequencies_round_trip_through_the_layout_and_a_corrupt_file_is_refused()
    {
        using var dir = new TempDir();
        var folder = SyntheticModels.WriteLayout(dir.File("rt.flash"), SyntheticModels.StoriesShape);
        using (var plain = new FlashLayoutModel(folder))
        {
            Assert.False(plain.HasActivity);
            Assert.Null(plain.LoadActivity());
        }
        var freq = pinned.Calibration.Frequencies;
        FlashLayoutWriter.WriteActivity(folder, new ActivityFrequencies(pinned.Calibration.Positions, freq));
        using (var stored = new FlashLayoutModel(folder))
        {
            var back = stored.LoadActivity()!;
            Assert.Equal(pinned.Calibration.Positions, back.Positions);
            Assert.Equal(freq.Length, back.Frequencies.Length);
            for (int l = 0; l < freq.Length; l++) Assert.Equal(freq[l], back.Frequencies[l]);
        }
        // The frequencies are what the thresholds select: the mean frequency is the measured density.
        for (int l = 0; l < freq.Length; l++)
            Assert.Equal(1 - pinned.Calibration.MeasuredSparsity[l], freq[l].Average(), 4);
        // Thresholds written again unchanged keep the frequencies; different thresholds drop them (they were counted under the old ones).
        using (var m = new FlashLayoutModel(folder)) FlashLayoutWriter.WriteThresholds(folder, m.Thresholds?.ToArray());
        using (var kept = new FlashLayoutModel(folder)) Assert.True(kept.HasActivity);
        using (var m = new FlashLayoutModel(folder))
            FlashLayoutWriter.WriteThresholds(folder, Enumerable.Repeat(0.25, m.Config.Layers).ToArray());
        using (var dropped = new FlashLayoutModel(folder))
        {
            Assert.False(dropped.HasActivity);
            Assert.Null(dropped.LoadActivity());
        }
        FlashLayoutWriter.WriteActivity(folder, new ActivityFrequencies(pinned.Calibration.Positions, freq));
        var path = Path.Combine(folder, "activity.bin");
        var bytes = File.ReadAllBytes(path);
        bytes[17] ^= 0x40;
        File.WriteAllBytes(path, bytes);
        using var corrupt = new FlashLayoutModel(folder);                // opens: the file is checked when it is used
        var e = Assert.Throws<ModelFormatException>(() => corrupt.LoadActivity());
        Assert.Contains("activity", e.Message);
        Assert.Contains("checksum", e.Message);
    }

    [Fact]
    public void The_plan_with_pinning_stays_within_the_budget_and_pinned_rows_are_cache_rows()
    {
        using var probe = FlashRuntime.Open(pinned.Folder, FlashPipelineTests.Settings("pin=off"), 64);
        long budget = probe.Plan.Total - probe.Plan.CacheRows / 2;  // about half the cache
        foreach (var pin in new[] { "off", "auto", "0.5" })
        {
            using var runtime = FlashRuntime.Open(pinned.Folder, FlashPipelineTests.Settings($"pin={pin}", $"dram-budget={budget}"), 64);
            var plan = runtime.Plan;
            Assert.True(plan.Total <= plan.Budget, $"pin={pin}: plan {plan.Total} over budget {plan.Budget}");
            if (pin == "off") Assert.Equal(0, plan.PinnedRows);
            else Assert.InRange(plan.PinnedRows, pin == "auto" ? 0 : 1, runtime.Config.Layers * (plan.RowsPerLayer - HotNeurons.MinWindowRows));
            if (pin == "0.5") Assert.Equal(runtime.Config.Layers * (plan.RowsPerLayer / 2), plan.PinnedRows);
        }
    }

    [Fact]
    public void Output_is_identical_with_and_without_pinning_and_pinned_hits_cut_the_reads()
    {
        const string prompt = "Once upon a time";
        using var probe = FlashRuntime.Open(pinned.Folder, FlashPipelineTests.Settings("pin=off"), 64);
        long budget = probe.Plan.Total - probe.Plan.CacheRows / 2;
        probe.Dispose();
        (byte[] Out, List<FlashLm.Runtime.Session.TokenStats> Stats) Run(string pin)
        {
            using var runtime = FlashRuntime.Open(pinned.Folder, FlashPipelineTests.Settings($"pin={pin}", $"dram-budget={budget}", "predictor=oracle", "window=2"), 64);
            return FlashPipelineTests.RunFlash(runtime, prompt, 48, SamplingOptions.Greedy);
        }
        var off = Run("off");
        var on = Run("0.5");
        Assert.Equal(Encoding.UTF8.GetString(off.Out), Encoding.UTF8.GetString(on.Out));
        Assert.All(off.Stats, s => Assert.Equal(0, s.NeuronsPinnedHit));
        var decodeOn = on.Stats.Where(s => !s.Prefill).ToList();
        var decodeOff = off.Stats.Where(s => !s.Prefill).ToList();
        Assert.True(decodeOn.Sum(s => s.NeuronsPinnedHit) > 0);
        Assert.All(on.Stats, s => Assert.InRange(s.NeuronsPinnedHit + s.NeuronsWindowHit, 0, s.NeuronsActive));
        // The most frequent half of the rows serves hits the window alone does not keep: fewer neurons read per token.
        Assert.True(decodeOn.Average(s => s.NeuronsLoaded) < decodeOff.Average(s => s.NeuronsLoaded),
            $"neurons loaded per decode token: pinned {decodeOn.Average(s => s.NeuronsLoaded):F1}, not pinned {decodeOff.Average(s => s.NeuronsLoaded):F1}");
    }

    [Fact]
    public void A_share_on_a_layout_without_frequencies_is_refused_and_auto_pins_nothing()
    {
        var e = Assert.Throws<SettingsException>(() => FlashRuntime.Open(f.Folder, FlashPipelineTests.Settings("pin=0.3"), 32));
        Assert.Contains("flashlm.pin", e.Message);
        Assert.Contains("--activity-only", e.Message);
        using var runtime = FlashRuntime.Open(f.Folder, FlashPipelineTests.Settings("pin=auto"), 32);
        Assert.Equal(0, runtime.Plan.PinnedRows);
    }
}
