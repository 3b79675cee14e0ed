using FlashLm.Formats.FlashLayout;
using FlashLm.Formats.Synth;
using FlashLm.Models.Sampling;
using FlashLm.Runtime;
using FlashLm.Runtime.Config;
using FlashLm.Runtime.Io;
using Xunit;

namespace FlashLm.Tests.Runtime;

/// <summary>A fact skipped, with the kernel's reason, where io_uring cannot be used (not Linux, before 5.6, disabled).</summary>
public sealed class RequiresIoUringFactAttribute : FactAttribute
{
    public RequiresIoUringFactAttribute()
    {
        using var ring = IoUring.TryCreate(4, out var reason);
        if (ring is null) Skip = $"io_uring is not available here: {reason}";
    }
}

/// <summary>
/// The io_uring loader (flashlm.loader.engine = io_uring) against the reader pool: the same rows, so the same text, reads and
/// bytes; the same checks (a bad byte on disk is retried, then reported naming the bundle); and the raw ring reads what
/// the file holds, short at the end of the file.
/// </summary>
public sealed class UringLoaderTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string Layout() =>
        SyntheticModels.WriteLayout(_dir.File("wide.flash"), SyntheticShapes.Get("tiny") with { Dim = 1024, Layers = 2, HiddenDim = 320 }, seed: 37);

    private static (byte[] Text, List<FlashLm.Runtime.Session.TokenStats> Stats) Run(string folder, params string[] settings)
    {
        // hits-first = off: the neurons are summed in one order whatever the readers' timing, so the two engines' texts can
        // be compared (with hits first, which reads land first may reorder the sums in the last bits and flip a near tie).
        using var rt = FlashRuntime.Open(folder, FlashPipelineTests.Settings(["window=1", "hits-first=off", .. settings]), 24);
        return FlashPipelineTests.RunFlash(rt, "the robot", 12, SamplingOptions.Greedy);
    }

    [RequiresIoUringFact]
    public void The_ring_prints_what_the_reader_pool_prints_with_the_same_reads()
    {
        var folder = Layout();
        // Gate-resident (scattered reads that skip the resident gate, staged and direct) and every neuron (long coalesced reads).
        foreach (var predictor in new[] { "predictor=gate", "predictor=all" })
        {
            var (threads, threadStats) = Run(folder, predictor, "sparsity=0.5", "loader.engine=threads");
            var (ring, ringStats) = Run(folder, predictor, "sparsity=0.5", "loader.engine=io_uring");
            Assert.Equal(threads, ring);
            Assert.Equal(threadStats.Select(s => s.Reads), ringStats.Select(s => s.Reads));
            Assert.Equal(threadStats.Select(s => s.BytesRead), ringStats.Select(s => s.BytesRead));
            Assert.True(ringStats.Sum(s => s.BytesRead) > 0, $"{predictor}: the runs read from flash");
        }
    }

    [RequiresIoUringFact]
    public void A_bad_byte_read_through_the_ring_is_reported_naming_the_bundle()
    {
        var folder = Layout();
        long at;
        using (var model = new FlashLayoutModel(folder)) at = model.Ffn.BundleOffset(1, 0);
        using var rt = FlashRuntime.Open(folder, FlashPipelineTests.Settings("predictor=all", "sparsity=0", "loader.engine=io_uring", "loader.max-attempts=2"), 24);
        using (var h = File.OpenHandle(Path.Combine(folder, "ffn.bin"), FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite))
        {
            var b = new byte[1];
            RandomAccess.Read(h, b, at + 5000);
            b[0] ^= 1;
            RandomAccess.Write(h, b, at + 5000);
            RandomAccess.FlushToDisk(h);
        }
        var e = Assert.ThrowsAny<Exception>(() => FlashPipelineTests.RunFlash(rt, "the robot", 4, SamplingOptions.Greedy));
        var message = e.ToString();
        Assert.Contains("checksum", message);
        Assert.Contains("layer 1", message);
        Assert.Contains("after 2 attempts", message);
    }

    [RequiresIoUringFact]
    public unsafe void The_ring_reads_the_file_and_reads_short_at_its_end()
    {
        var path = _dir.File("data.bin");
        var data = new byte[3 * 4096 + 100];
        new Random(3).NextBytes(data);
        File.WriteAllBytes(path, data);
        using var file = new DirectFile(path);
        using var buffer = new AlignedBuffer(4 * 4096);
        using var ring = IoUring.TryCreate(4, out var reason) ?? throw new InvalidOperationException(reason);
        ring.Prepare((int)file.Handle.DangerousGetHandle(), 4096, (nint)buffer.Pointer, 8192, 7);
        ring.Prepare((int)file.Handle.DangerousGetHandle(), 0, (nint)buffer.Pointer + 8192, 8192, 8); // two of its pages are past the end
        ring.Submit(2, wait: 2);
        var results = new Dictionary<ulong, int>();
        while (ring.TryReap(out var tag, out int result)) results[tag] = result;
        Assert.Equal(new Dictionary<ulong, int> { [7] = 8192, [8] = 8192 }, results);
        Assert.Equal(data.AsSpan(4096, 8192).ToArray(), new Span<byte>(buffer.Pointer, 8192).ToArray());
        ring.Prepare((int)file.Handle.DangerousGetHandle(), 3 * 4096, (nint)buffer.Pointer, 8192, 9);
        ring.Submit(1, wait: 1);
        Assert.True(ring.TryReap(out var last, out int n));
        Assert.Equal((9ul, 100), (last, n));
        Assert.Equal(data.AsSpan(3 * 4096, 100).ToArray(), new Span<byte>(buffer.Pointer, 100).ToArray());
    }

    [RequiresIoUringFact]
    public async Task A_ring_that_stops_taking_reads_fails_the_generation_with_its_reason_and_stops_without_hanging()
    {
        var folder = Layout();
        int submissions = 0;
        var hooks = new RuntimeHooks
        {
            UringSubmit = _ =>
            {
                if (Interlocked.Increment(ref submissions) >= 3) throw new IOException("io_uring_enter failed: errno 5 (test)");
            },
        };
        var watch = System.Diagnostics.Stopwatch.StartNew();
        // window = 0: every token reads its neurons again, so submissions go on until the third one fails.
        var rt = await Within(Step, "opening the runtime with the failing ring",
            () => FlashRuntime.Open(folder, FlashPipelineTests.Settings("predictor=all", "sparsity=0", "window=0"), 24, hooks));
        try
        {
            Assert.Equal("io_uring", rt.ReadEngine);
            var (e, _) = await Generate(rt, 8, "the generation on the failing ring");
            Assert.NotNull(e);
            Assert.Contains("io_uring submission failed", e.ToString());
            Assert.Contains("errno 5 (test)", e.ToString());
            await Within(Step, "disposing the runtime whose ring failed", rt.Dispose);
        }
        finally
        {
            // After a failed assertion or a hang: stop it without waiting here (a no-op once disposed).
            _ = Task.Run(rt.Dispose);
        }
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(30), $"failing and stopping took {watch.Elapsed}");
        // The next runtime gets a ring of its own and reads normally.
        var again = await Within(Step, "opening the next runtime", () => FlashRuntime.Open(folder, FlashPipelineTests.Settings("predictor=all", "sparsity=0"), 24));
        try
        {
            var (error, tokens) = await Generate(again, 8, "the generation on the next runtime");
            Assert.Null(error);
            Assert.Equal(8, tokens);
            await Within(Step, "disposing the next runtime", again.Dispose);
        }
        finally
        {
            _ = Task.Run(again.Dispose);
        }
    }

    [RequiresIoUringFact]
    public async Task A_ring_that_fails_with_every_slot_queued_answers_every_read_and_stops_promptly()
    {
        // One slot: a layer's reads arrive together, so the failing submission is made for want of a slot with every slot
        // queued and none with the kernel. The submitter used to wait for a slot then, forever (only the stop hands such
        // reads to the kernel): the read it held was never answered, and the stop waited 30 s before leaving the ring open.
        var folder = Layout();
        var hooks = new RuntimeHooks { UringSubmit = _ => throw new IOException("io_uring_enter failed: errno 5 (test)") };
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var rt = await Within(Step, "opening the runtime with a one-slot failing ring",
            () => FlashRuntime.Open(folder, FlashPipelineTests.Settings("predictor=all", "sparsity=0", "window=0", "loader.readers=1"), 24, hooks));
        try
        {
            var (e, _) = await Generate(rt, 8, "the generation on the one-slot failing ring");
            Assert.NotNull(e);
            Assert.Contains("errno 5 (test)", e.ToString());
            await Within(Step, "disposing the runtime whose one-slot ring failed", rt.Dispose);
        }
        finally
        {
            _ = Task.Run(rt.Dispose);
        }
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(20), $"failing and stopping took {watch.Elapsed}");
    }

    /// <summary>How long one step of a test may take before it counts as hung: well past the session stall timeout (60 s), so a
    /// stalled generation fails with the runtime's own error naming the stage first.</summary>
    private static readonly TimeSpan Step = TimeSpan.FromSeconds(90);

    /// <summary>A step that did not finish within its bound (the test fails naming it instead of stalling the suite).</summary>
    private sealed class HungException(string message) : TimeoutException(message);

    private static async Task<T> Within<T>(TimeSpan limit, string what, Task<T> step)
    {
        try
        {
            return await step.WaitAsync(limit);
        }
        catch (TimeoutException) when (!step.IsCompleted)
        {
            throw new HungException($"{what}: not done after {limit.TotalSeconds:0} s (hung)");
        }
    }

    private static async Task Within(TimeSpan limit, string what, Task step)
    {
        try
        {
            await step.WaitAsync(limit);
        }
        catch (TimeoutException) when (!step.IsCompleted)
        {
            throw new HungException($"{what}: not done after {limit.TotalSeconds:0} s (hung)");
        }
    }

    /// <summary>A blocking step (opening, disposing) off the test's thread, bounded.</summary>
    private static Task<T> Within<T>(TimeSpan limit, string what, Func<T> step) => Within(limit, what, Task.Run(step));

    private static Task Within(TimeSpan limit, string what, Action step) => Within(limit, what, Task.Run(step));

    /// <summary>Runs "the robot" greedily for up to <paramref name="steps"/> positions, each position (and the ending) bounded:
    /// the failure it ended with, if any, and the positions it produced. A hang throws <see cref="HungException"/>.</summary>
    private static async Task<(Exception? Error, int Tokens)> Generate(FlashRuntime rt, int steps, string what)
    {
        int tokens = 0;
        Exception? error = null;
        var events = rt.Generate("the robot", steps, SamplingOptions.Greedy).GetAsyncEnumerator();
        try
        {
            while (await Within(Step, $"{what}: position {tokens}", events.MoveNextAsync().AsTask())) tokens++;
        }
        catch (Exception e) when (e is not HungException)
        {
            error = e;
        }
        await Within(Step, $"{what}: ending it", events.DisposeAsync().AsTask());
        return (error, tokens);
    }

    [RequiresIoUringFact]
    public void The_runtime_says_which_engine_reads()
    {
        var folder = Layout();
        using (var ring = FlashRuntime.Open(folder, FlashPipelineTests.Settings("predictor=all"), 24)) Assert.Equal("io_uring", ring.ReadEngine); // auto
        using (var pool = FlashRuntime.Open(folder, FlashPipelineTests.Settings("predictor=all", "loader.engine=threads"), 24)) Assert.Equal("threads", pool.ReadEngine);
        // A debug delay lives in the reader pool: auto takes the pool for it.
        using (var delayed = FlashRuntime.Open(folder, FlashPipelineTests.Settings("predictor=all", "loader.debug-delay-ms=1"), 24)) Assert.Equal("threads", delayed.ReadEngine);
    }

    [Fact]
    public void An_unknown_engine_is_refused_naming_the_key()
    {
        var e = Assert.Throws<SettingsException>(() => RuntimeSettings.From(FlashPipelineTests.Settings("loader.engine=aio")));
        Assert.Equal("flashlm.loader.engine", e.Key);
        Assert.Equal(LoaderEngine.Auto, RuntimeSettings.From(FlashPipelineTests.Settings()).Loader.Engine);
    }
}
