using System.Diagnostics;
using FlashLm.Formats.FlashLayout;
using FlashLm.Models.Sampling;
using FlashLm.Runtime;
using FlashLm.Runtime.Config;
using FlashLm.Runtime.Io;
using FlashLm.Runtime.Loader;
using FlashLm.Tests.Layout;
using Microsoft.Win32.SafeHandles;
using Xunit;
using Xunit.Abstractions;

namespace FlashLm.Tests.Runtime;

/// <summary>
/// Faults injected into the flash readers' reads, end to end on a synthetic layout whose rows are read by direct
/// reads: transient faults (attempt 1 only) leave the output identical to a fault-free run; persistent ones fail the
/// session within seconds, naming ffn.bin, the layer, the neuron and the offset; nothing leaks; the runtime keeps serving.
/// </summary>
[Collection(NativeMemoryCollection.Name)]
public sealed class ReadFaultTests : Akka.TestKit.Xunit2.TestKit
{
    private const int Positions = 10;
    private const string Prompt = "abc";
    private static readonly SamplingOptions Sampling = new(0.9f, 0.9f, 0, 99);
    private readonly SyntheticLayout _layout = new(wide: true, layers: 2);
    private readonly ITestOutputHelper _out;

    public ReadFaultTests(ITestOutputHelper output) : base(RuntimeTestConfig.Hocon) => _out = output;

    /// <summary>The layout's FFN geometry (ffn.bin's path as the runtime's readers see it).</summary>
    private FfnLayout Ffn()
    {
        using var model = new FlashLayoutModel(_layout.Folder);
        return model.Ffn;
    }

    /// <summary>Delegates to whichever faults are current (none between runs): one runtime serves many differently-faulted sessions.</summary>
    private sealed class Switch : ReadFaults
    {
        public volatile ReadFaults? Current;

        public override void Before(FlashLoader.ReadRequest r) => Current?.Before(r);

        public override int Pread(FlashLoader.ReadRequest r, SafeFileHandle h, Span<byte> buffer, long offset) =>
            Current is { } c ? c.Pread(r, h, buffer, offset) : base.Pread(r, h, buffer, offset);

        public override void Landed(FlashLoader.ReadRequest r, Span<byte> landed, long fileOffset) => Current?.Landed(r, landed, fileOffset);

        public override bool Kill(FlashLoader.ReadRequest r) => Current?.Kill(r) ?? false;
    }

    /// <summary>
    /// Every neuron, no window, no lookahead, and a budget a little above the minimum: far fewer cache rows than neurons,
    /// so every position reads most of the FFN again (many reads to fault).
    /// </summary>
    private Akka.Configuration.Config Settings()
    {
        string[] common = ["predictor=all", "window=0", "lookahead=off", "sparsity=0", "loader.readers=4", "loader.max-attempts=3", "loader.max-read=64KiB"];
        long minimum;
        try
        {
            FlashRuntime.Open(_layout.Folder, RuntimeSettings.Compose([], [.. common, "dram-budget=1"]), Positions, Sys).Dispose();
            throw new InvalidOperationException("a 1-byte budget was accepted");
        }
        catch (DramBudgetException e)
        {
            minimum = e.MinimumBytes;
        }
        return RuntimeSettings.Compose([], [.. common, $"dram-budget={minimum + 64 * 8192}"]);
    }

    private static async Task<(string Text, Exception? Error, TimeSpan Elapsed)> Run(FlashRuntime runtime)
    {
        var text = new System.Text.StringBuilder();
        var watch = Stopwatch.StartNew();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        try
        {
            await foreach (var ev in runtime.Generate(Prompt, Positions, Sampling, timeout.Token)) text.Append($"{ev.Token} ");
            return (text.ToString(), null, watch.Elapsed);
        }
        catch (Exception e)
        {
            return (text.ToString(), e, watch.Elapsed);
        }
    }

    /// <summary>Waits for the cache manager to settle (reads of a failed session may still be landing): pinned rows, leases, reads in flight.</summary>
    private static async Task<CacheManagerPins> Settled(FlashRuntime runtime)
    {
        var until = Stopwatch.StartNew();
        while (true)
        {
            var p = await runtime.PinsAsync();
            var pins = new CacheManagerPins(p.PinnedRows, p.Leases, p.PendingAcquires, p.ReadsInFlight);
            if (pins.IsIdle || until.Elapsed > TimeSpan.FromSeconds(5)) return pins;
            await Task.Delay(20);
        }
    }

    private readonly record struct CacheManagerPins(int PinnedRows, int Leases, int Pending, int InFlight)
    {
        public bool IsIdle => PinnedRows == 0 && Leases == 0 && Pending == 0 && InFlight == 0;
    }

    /// <summary>The error names ffn.bin, the layer and the target neuron (alone or in a range), and an offset.</summary>
    private static bool NamesTheBundle(string message, string ffnPath, int layer, int neuron)
    {
        if (!message.Contains(ffnPath) || !message.Contains("offset")) return false;
        if (message.Contains($"layer {layer} neuron {neuron} ") || message.Contains($"layer {layer}, neuron {neuron})")) return true;
        var m = System.Text.RegularExpressions.Regex.Match(message, $@"layer {layer}, neurons (\d+)\.\.(\d+)\)");
        return m.Success && int.Parse(m.Groups[1].Value) <= neuron && neuron <= int.Parse(m.Groups[2].Value);
    }

    [Theory]
    [InlineData(FaultKind.Eio)]
    [InlineData(FaultKind.ShortRead)]
    [InlineData(FaultKind.Delay)]
    [InlineData(FaultKind.FlippedBit)]
    [InlineData(FaultKind.KilledReader)]
    public async Task A_transient_fault_leaves_the_output_identical_to_a_fault_free_run(FaultKind kind)
    {
        var faults = new Switch();
        int retries = 0;
        FlashLoader.ReadHook countRetries = r =>
        {
            if (r.Attempt > 1) Interlocked.Increment(ref retries);
        };
        using var runtime = FlashRuntime.Open(_layout.Folder, Settings(), Positions, new RuntimeHooks(Read: countRetries) { Faults = faults }, Sys);
        var clean = await Run(runtime);
        Assert.Null(clean.Error);
        var injected = SeededReadFaults.Transient(Ffn(), 11, kind == FaultKind.Delay ? 0.05 : 0.3, kind);
        faults.Current = injected;
        var faulted = await Run(runtime);
        faults.Current = null;
        Assert.Null(faulted.Error);
        Assert.True(injected.Total > 0, "no fault was injected: the test sees nothing");
        Assert.Equal(clean.Text, faulted.Text);
        Assert.True((await Settled(runtime)).IsIdle);
        // Short reads are continued and delays waited out within the attempt; the others are retried.
        if (kind is FaultKind.ShortRead or FaultKind.Delay) Assert.Equal(0, retries);
        else Assert.True(retries >= injected.Total, $"{injected.Total} faults, {retries} retries");
    }

    [Theory]
    [InlineData(FaultKind.Eio)]
    [InlineData(FaultKind.ShortRead)]
    [InlineData(FaultKind.FlippedBit)]
    [InlineData(FaultKind.KilledReader)]
    public async Task A_persistent_fault_fails_the_session_within_seconds_naming_file_layer_neuron_and_offset_and_the_next_session_is_unchanged(FaultKind kind)
    {
        using (var probe = new DirectFile(_layout.FfnPath))
            if (kind == FaultKind.ShortRead && !probe.IsDirect) return; // buffered reads make progress 512 bytes at a time: not a failure
        long idle = NativeAccounting.Bytes;
        var faults = new Switch();
        using (var runtime = FlashRuntime.Open(_layout.Folder, Settings(), Positions, new RuntimeHooks { Faults = faults }, Sys))
        {
            var clean = await Run(runtime);
            faults.Current = SeededReadFaults.Persistent(Ffn(), 5, 1, 150, kind);
            var failed = await Run(runtime);
            faults.Current = null;
            Assert.NotNull(failed.Error);
            var pipeline = Assert.IsType<PipelineException>(failed.Error);
            Assert.Equal("loader", pipeline.Stage);
            Assert.True(NamesTheBundle(failed.Error!.Message, _layout.FfnPath, 1, 150), failed.Error.Message);
            Assert.True(failed.Elapsed < TimeSpan.FromSeconds(10), $"took {failed.Elapsed}");
            Assert.True((await Settled(runtime)).IsIdle);
            var after = await Run(runtime);
            Assert.Null(after.Error);
            Assert.Equal(clean.Text, after.Text);
        }
        Assert.Equal(idle, NativeAccounting.Bytes);
    }

    /// <summary>
    /// The soak: N generations (FLASHLM_FAULT_SOAK_RUNS, default 24) on one runtime, each with seeded random faults:
    /// two in three transient (random kinds, 2-30 % of reads), one in three persistent on a random bundle. Prints the figures.
    /// </summary>
    [Fact]
    public async Task FaultSoak_transient_faults_never_change_the_output_and_persistent_ones_fail_with_the_right_error_without_leaks()
    {
        int runs = int.TryParse(Environment.GetEnvironmentVariable("FLASHLM_FAULT_SOAK_RUNS"), out var n) ? n : 24;
        bool direct;
        using (var probe = new DirectFile(_layout.FfnPath)) direct = probe.IsDirect;
        long idle = NativeAccounting.Bytes;
        var faults = new Switch();
        var rng = new Random(20261129);
        var kinds = Enum.GetValues<FaultKind>();
        var injected = kinds.ToDictionary(k => k, _ => 0);
        int transientRuns = 0, identical = 0, persistentRuns = 0, expectedFailures = 0, rightError = 0, wrongOutcome = 0, hangs = 0, leakyRuns = 0;
        var worst = TimeSpan.Zero;
        var watch = Stopwatch.StartNew();
        using (var runtime = FlashRuntime.Open(_layout.Folder, Settings(), Positions, new RuntimeHooks { Faults = faults }, Sys))
        {
            var layout = Ffn();
            var clean = await Run(runtime);
            Assert.Null(clean.Error);
            for (int i = 0; i < runs; i++)
            {
                SeededReadFaults plan;
                bool persistent = rng.Next(3) == 0;
                FaultKind kind = kinds[rng.Next(kinds.Length)];
                int layer = rng.Next(layout.Layers), neuron = rng.Next(layout.Neurons);
                if (persistent)
                    plan = SeededReadFaults.Persistent(layout, (ulong)rng.NextInt64(), layer, neuron, kind);
                else
                {
                    var some = kinds.Where(_ => rng.Next(2) == 0).DefaultIfEmpty(kind).ToArray();
                    double rate = some.Contains(FaultKind.Delay) ? 0.02 : 0.02 + rng.NextDouble() * 0.28;
                    plan = SeededReadFaults.Transient(layout, (ulong)rng.NextInt64(), rate, some);
                }
                faults.Current = plan;
                var r = await Run(runtime);
                faults.Current = null;
                foreach (var (k, v) in plan.Injected) injected[k] += v;
                if (r.Elapsed > worst) worst = r.Elapsed;
                if (r.Error is OperationCanceledException) hangs++;
                // A persistent delay only slows the reads; persistent short reads fail only under O_DIRECT.
                bool shouldFail = persistent && kind != FaultKind.Delay && (kind != FaultKind.ShortRead || direct);
                if (!persistent) transientRuns++;
                else persistentRuns++;
                if (shouldFail)
                {
                    expectedFailures++;
                    if (r.Error is PipelineException { Stage: "loader" } && NamesTheBundle(r.Error.Message, _layout.FfnPath, layer, neuron)) rightError++;
                    else
                    {
                        wrongOutcome++;
                        _out.WriteLine($"run {i}: persistent {kind} at layer {layer} neuron {neuron}: {(r.Error?.Message ?? "no error")}");
                    }
                }
                else if (r.Error is null && r.Text == clean.Text) identical++;
                else
                {
                    wrongOutcome++;
                    _out.WriteLine($"run {i}: {(persistent ? "persistent" : "transient")} faults: {(r.Error?.Message ?? "output differs")}");
                }
                if (!(await Settled(runtime)).IsIdle) leakyRuns++;
            }
        }
        long leaked = NativeAccounting.Bytes - idle;
        _out.WriteLine($"fault soak: {runs} generations in {watch.Elapsed.TotalSeconds:F1} s (slowest {worst.TotalMilliseconds:F0} ms), reads {(direct ? "O_DIRECT" : "buffered")}");
        _out.WriteLine($"faults injected: {string.Join(", ", injected.Select(kv => $"{kv.Key} {kv.Value}"))} (total {injected.Values.Sum()})");
        _out.WriteLine($"transient-fault runs {transientRuns} + persistent delays/short reads that must not fail {runs - transientRuns - expectedFailures}: outputs identical to fault-free {identical}");
        _out.WriteLine($"persistent-fault runs that must fail {expectedFailures}: failed with the right error (file, layer, neuron, offset) {rightError}");
        _out.WriteLine($"wrong outcomes {wrongOutcome}, hangs (30 s) {hangs}, runs leaving pinned rows/leases/reads {leakyRuns}, native bytes leaked after dispose {leaked}");
        Assert.Equal(0, wrongOutcome);
        Assert.Equal(0, hangs);
        Assert.Equal(0, leakyRuns);
        Assert.Equal(0, leaked);
        Assert.Equal(runs - expectedFailures, identical);
        Assert.True(injected.Values.Sum() > runs, "too few faults injected for the soak to mean anything");
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) _layout.Dispose();
        base.Dispose(disposing);
    }
}
