using FlashLm.Models.Sampling;
using FlashLm.Runtime;
using FlashLm.Runtime.Config;
using FlashLm.Runtime.Loader;
using Xunit;

namespace FlashLm.Tests.Runtime;

/// <summary>End to end: a slow consumer still gets the whole, correct generation, and the session never runs far ahead of it.</summary>
public sealed class SessionBackPressureTests : Akka.TestKit.Xunit2.TestKit, IClassFixture<StoriesFlashFixture>
{
    /// <summary>FlashRuntime.Generate's channel capacity.</summary>
    private const int ChannelCapacity = 8;

    private readonly StoriesFlashFixture _f;

    public SessionBackPressureTests(StoriesFlashFixture f) : base(RuntimeTestConfig.Hocon) => _f = f;

    [Fact]
    public async Task Slow_consumer_gets_every_token_and_the_session_stays_within_the_channel_capacity_ahead()
    {
        // Every neuron, no window: each position reads layer 0 from flash exactly once, and that read (the one
        // starting at layer 0's first page) is the first flash read of the position's FFN. Counting those reads
        // counts the positions the session has started.
        var config = RuntimeSettings.Compose([], ["predictor=all", "window=0", "sparsity=0", "loader.readers=4", "lookahead=on"]);
        long layer0 = _f.Ffn.LayerOffset(0);
        int started = 0;
        FlashLoader.ReadHook hook = r =>
        {
            if (r.FileOffset == layer0 && r.Attempt == 1) Interlocked.Increment(ref started);
        };
        // The same generation consumed at full speed (its own runtime and actor system): the slow consumer must get the same tokens.
        var expected = new List<int>();
        using (var fast = FlashRuntime.Open(_f.Folder, config, 64))
            await foreach (var ev in fast.Generate("Once upon a time", 64, SamplingOptions.Greedy)) expected.Add(ev.Token);
        using var runtime = FlashRuntime.Open(_f.Folder, config, 64, new RuntimeHooks(Read: hook), Sys);

        var events = new List<(int Position, int Token, int TokenIndex, int Started)>();
        await foreach (var ev in runtime.Generate("Once upon a time", 64, SamplingOptions.Greedy))
        {
            events.Add((ev.Position, ev.Token, ev.Stats.TokenIndex, Volatile.Read(ref started)));
            await Task.Delay(25); // a consumer far slower than the producer
        }

        Assert.Equal(Enumerable.Range(0, 64), events.Select(e => e.Position));
        Assert.Equal(Enumerable.Range(0, 64), events.Select(e => e.TokenIndex));
        Assert.Equal(expected, events.Select(e => e.Token));
        Assert.Equal(64, Volatile.Read(ref started)); // one layer-0 read per position: the counter counts positions

        // When event p is taken, positions p+1..p+8 may sit in the channel, and p+9 may just have started
        // (room opened by taking p): at most capacity + 1 positions beyond p. Unbounded, the session would
        // finish all 64 positions while the consumer is still near the start.
        var ahead = events.Select(e => e.Started - (e.Position + 1)).ToArray();
        Assert.True(ahead.Max() <= ChannelCapacity + 1, $"the session ran {ahead.Max()} positions ahead of the consumer: [{string.Join(",", ahead)}]");
        Assert.True(ahead.Max() >= ChannelCapacity / 2, $"the session never ran ahead (max {ahead.Max()}): the measurement sees nothing");
    }
}
