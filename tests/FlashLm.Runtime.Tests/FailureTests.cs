using System.Text;
using FlashLm.Models.Sampling;
using FlashLm.Runtime;
using Xunit;

namespace FlashLm.Tests.Runtime;

/// <summary>NativeAccounting is process-wide: the tests that compare it with the idle figure run alone.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class NativeMemoryCollection
{
    public const string Name = "native memory";
}

/// <summary>
/// Failure semantics: an exception injected into each stage fails the session with an error naming the stage, nothing
/// hangs, no row stays pinned and no lease held, native memory returns to the idle figure after dispose, and (when the
/// runtime keeps serving) the next session prints what a fault-free run prints.
/// </summary>
[Collection(NativeMemoryCollection.Name)]
public sealed class FailureTests : IClassFixture<SyntheticFlashFixture>
{
    private const int Steps = 20;
    private const string Prompt = "the robot";
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(30);
    private readonly SyntheticFlashFixture _f;

    public FailureTests(SyntheticFlashFixture f) => _f = f;

    private static Akka.Configuration.Config Config(params string[] extra) =>
        FlashPipelineTests.Settings(["window=3", "loader.readers=4", "loader.threads=4", .. extra]);

    /// <summary>Throws an injected fault on the n-th call only, so the runs after it are fault-free.</summary>
    private sealed class Fault(int at)
    {
        private int _calls;

        public int Calls => Volatile.Read(ref _calls);

        public void Hit()
        {
            if (Interlocked.Increment(ref _calls) == at) throw new InvalidOperationException("injected fault");
        }
    }

    /// <summary>One generation; a hang fails the test after <see cref="Limit"/> instead of blocking the suite.</summary>
    private static Task<string> RunAsync(FlashRuntime runtime) => Task.Run(async () =>
    {
        var text = new StringBuilder();
        await foreach (var ev in runtime.Generate(Prompt, Steps, SamplingOptions.Greedy)) text.Append(ev.Piece);
        return text.ToString();
    }).WaitAsync(Limit);

    private async Task<string> FaultFree(params string[] extra)
    {
        using var runtime = FlashRuntime.Open(_f.Folder, Config(extra), Steps);
        return await RunAsync(runtime);
    }

    private static async Task AssertNothingHeld(FlashRuntime runtime)
    {
        // The failed session's actor stops asynchronously; the cache manager releases what it held when it sees it go.
        var deadline = DateTime.UtcNow + Limit;
        while (true)
        {
            var pins = await runtime.PinsAsync();
            if (pins is { PinnedRows: 0, Leases: 0, PendingAcquires: 0, Sessions: 0 }) return;
            if (DateTime.UtcNow > deadline) Assert.Fail($"still held: {pins}");
            await Task.Delay(20);
        }
    }

    /// <summary>Runs a session with the fault armed and checks everything the failure semantics promise.</summary>
    private async Task Check(string stage, Func<Fault, RuntimeHooks> hooks, int at, bool keepsServing, params string[] extra)
    {
        string expected = await FaultFree(extra);
        long idle = FlashLm.Runtime.Io.NativeAccounting.Bytes;
        var fault = new Fault(at);
        var runtime = FlashRuntime.Open(_f.Folder, Config(extra), Steps, hooks: hooks(fault));
        try
        {
            var e = await Assert.ThrowsAnyAsync<Exception>(() => RunAsync(runtime));
            var failure = Assert.IsType<PipelineException>(e);
            Assert.Equal(stage, failure.Stage);
            Assert.StartsWith(stage + ":", failure.Message);
            Assert.Contains("injected fault", failure.Message);
            Assert.True(fault.Calls >= at, $"the fault was never reached ({fault.Calls} calls)");
            await AssertNothingHeld(runtime);
            if (keepsServing)
            {
                Assert.Null(runtime.StoppedBecause);
                Assert.Equal(expected, await RunAsync(runtime));
                await AssertNothingHeld(runtime);
            }
            else
            {
                Assert.Contains(stage, runtime.StoppedBecause);
                var refused = await Assert.ThrowsAsync<InvalidOperationException>(() => RunAsync(runtime));
                Assert.Contains("runtime stopped because", refused.Message);
            }
        }
        finally
        {
            runtime.Dispose();
        }
        Assert.Equal(idle, FlashLm.Runtime.Io.NativeAccounting.Bytes);
    }

    [Fact]
    public Task Compute_failure_fails_the_session_and_the_runtime_serves_the_next_one_unchanged() =>
        Check("compute", f => new RuntimeHooks(Compute: step => { if (step == "ffn") f.Hit(); }), at: 7, keepsServing: true);

    [Fact]
    public Task Predictor_failure_fails_the_session_and_the_runtime_serves_the_next_one_unchanged() =>
        Check("predictor", f => new RuntimeHooks(Predict: _ => f.Hit()), at: 9, keepsServing: true);

    [Fact]
    public Task Session_failure_fails_the_session_and_the_runtime_serves_the_next_one_unchanged() =>
        Check("session", f => new RuntimeHooks(Session: _ => f.Hit()), at: 3, keepsServing: true);

    [Fact]
    public Task Loader_failure_fails_the_session_waiting_for_the_read_and_the_runtime_serves_the_next_one_unchanged() =>
        Check("loader", f => new RuntimeHooks(Read: _ => f.Hit()), at: 2, keepsServing: true, "loader.max-attempts=1", "lookahead=off");

    [Fact]
    public Task Cache_manager_failure_fails_the_session_and_stops_the_runtime_saying_why() =>
        Check("cache manager", f => new RuntimeHooks(Cache: _ => f.Hit()), at: 6, keepsServing: false);

    [Fact]
    public async Task A_session_that_makes_no_progress_fails_after_the_stall_timeout_naming_what_it_waited_for()
    {
        using var gate = new ManualResetEventSlim(false);
        int calls = 0;
        var runtime = FlashRuntime.Open(_f.Folder, Config("session-stall-timeout=300ms"), Steps,
            hooks: new RuntimeHooks(Compute: step => { if (step == "attend" && Interlocked.Increment(ref calls) == 5) gate.Wait(Limit); }));
        try
        {
            var e = await Assert.ThrowsAnyAsync<Exception>(() => RunAsync(runtime));
            var failure = Assert.IsType<PipelineException>(e);
            Assert.Equal("compute", failure.Stage);
            Assert.Contains("no progress", failure.Message);
            Assert.Contains("attention of layer", failure.Message);
            gate.Set();
            await AssertNothingHeld(runtime);
            Assert.Null(runtime.StoppedBecause);
        }
        finally
        {
            gate.Set();
            runtime.Dispose();
        }
    }
}
