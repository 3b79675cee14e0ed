using FlashLm.Models.Sampling;
using FlashLm.Runtime;
using FlashLm.Runtime.Io;
using FlashLm.Runtime.Session;
using Xunit;

namespace FlashLm.Tests;

/// <summary>Sessions of the embedded runtime: concurrency, chat turns, cancellation.</summary>
/// <remarks>Not run beside other test classes: the leak check reads the process-wide native memory count.</remarks>
[Collection(NativeMemoryCollection.Name)]
public class SessionTests(SyntheticLayoutFixture layout) : IClassFixture<SyntheticLayoutFixture>
{
    private static readonly string[] Prompts =
        ["Once upon a time", "Lily and Ben", "The cat sat", "One day, a big", "Tom had a red", "The sun was", "A little bird", "Mom said"];

    private FlashRuntime Open(int sessions, params string[] extra) =>
        FlashRuntime.Open(layout.Folder, FlashPipelineTests.Settings([$"max-sessions={sessions}", "sparsity=0.5", "window=3", .. extra]), 96);

    private static async Task<int[]> Tokens(IAsyncEnumerable<TokenEvent> events)
    {
        var list = new List<int>();
        await foreach (var e in events) list.Add(e.Token);
        return list.ToArray();
    }

    private static SamplingOptions Options(int i) => i % 2 == 0 ? SamplingOptions.Greedy : new SamplingOptions(0.9f, 0.9f, 0, (ulong)(1000 + i));

    [Fact]
    public async Task Eight_concurrent_sessions_produce_what_each_produces_alone()
    {
        using var runtime = Open(8);
        var alone = new int[Prompts.Length][];
        for (int i = 0; i < Prompts.Length; i++) alone[i] = await Tokens(runtime.Generate(Prompts[i], 80, Options(i)));
        var together = await Task.WhenAll(Prompts.Select((p, i) => Task.Run(() => Tokens(runtime.Generate(p, 80, Options(i))))));
        for (int i = 0; i < Prompts.Length; i++) Assert.Equal(alone[i], together[i]);
        Assert.All(alone, a => Assert.True(a.Length > 20));
    }

    [Fact]
    public async Task A_chat_of_three_turns_equals_one_generation_over_the_concatenated_context()
    {
        using var runtime = Open(2);
        var turns = new List<int[]>();
        var context = new List<int>();
        await using (var chat = await runtime.CreateSessionAsync())
        {
            string[] said = ["Once upon a time", " She saw a dog.", " The end"];
            foreach (var text in said)
            {
                int[] prompt = runtime.Tokenizer.Encode(text, addBos: context.Count == 0);
                var events = new List<TokenEvent>();
                await foreach (var e in chat.GenerateTokensAsync(prompt, 24, SamplingOptions.Greedy)) events.Add(e);
                context.AddRange(prompt);
                context.AddRange(events.Where(e => !e.FromPrompt).Select(e => e.Token).SkipLast(1));
                turns.Add(events.Where(e => !e.FromPrompt).Select(e => e.Token).ToArray());
                context.Add(turns[^1][^1]);
            }
        }
        // One generation: the whole context of the first two turns plus the third prompt, then the third turn's output.
        await using var one = await runtime.CreateSessionAsync();
        var lastPrompt = runtime.Tokenizer.Encode(" The end", addBos: false);
        int prefix = context.Count - turns[2].Length; // everything before the third turn's output
        var input = context.Take(prefix).ToArray();
        var events2 = new List<TokenEvent>();
        await foreach (var e in one.GenerateTokensAsync(input, input.Length + turns[2].Length - 1, SamplingOptions.Greedy)) events2.Add(e);
        Assert.Equal(turns[2], events2.Where(e => !e.FromPrompt).Select(e => e.Token).ToArray());
        Assert.Equal(lastPrompt, input[^lastPrompt.Length..]);
    }

    [Fact]
    public async Task Hundred_cancelled_sessions_leave_nothing_pinned_and_do_not_change_the_next_output()
    {
        using var runtime = Open(4);
        var before = await Tokens(runtime.Generate("Once upon a time", 64, SamplingOptions.Greedy));
        long idleNative = NativeAccounting.Bytes;
        var random = new Random(5);
        var tasks = Enumerable.Range(0, 100).Select(i => Task.Run(async () =>
        {
            using var cts = new CancellationTokenSource();
            int stopAfter = random.Next(0, 40);
            int seen = 0;
            try
            {
                await foreach (var _ in runtime.Generate(Prompts[i % Prompts.Length], 90, Options(i), cts.Token))
                    if (++seen >= stopAfter) cts.Cancel();
            }
            catch (OperationCanceledException)
            {
            }
            return seen;
        })).ToArray();
        await Task.WhenAll(tasks);
        // Sessions stop asynchronously: wait until the cache manager has seen them all go.
        CacheManagerPins pins = default;
        for (int i = 0; i < 100; i++)
        {
            var p = await runtime.PinsAsync();
            pins = new CacheManagerPins(p.PinnedRows, p.Leases, p.PendingAcquires, p.Sessions, p.ReadsInFlight);
            if (p.PinnedRows == 0 && p.Leases == 0 && p.Sessions == 0 && p.ReadsInFlight == 0) break;
            await Task.Delay(50);
        }
        Assert.Equal(new CacheManagerPins(0, 0, 0, 0, 0), pins);
        Assert.Equal(idleNative, NativeAccounting.Bytes);
        Assert.Equal(0, runtime.Stats.OpenSessions);
        var after = await Tokens(runtime.Generate("Once upon a time", 64, SamplingOptions.Greedy));
        Assert.Equal(before, after);
    }

    [Fact]
    public async Task A_full_runtime_refuses_or_waits_per_configuration()
    {
        using (var refusing = Open(1, "session-overflow=refuse"))
        {
            await using var first = await refusing.CreateSessionAsync();
            var e = await Assert.ThrowsAsync<InvalidOperationException>(() => refusing.CreateSessionAsync());
            Assert.Contains("max-sessions", e.Message);
        }
        using var waiting = Open(1);
        var one = await waiting.CreateSessionAsync();
        var second = waiting.CreateSessionAsync();
        await Task.Delay(100);
        Assert.False(second.IsCompleted);
        await one.DisposeAsync();
        await using var got = await second.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(0, got.Position);
    }

    [Fact]
    public async Task Disposing_the_runtime_cancels_running_sessions()
    {
        var runtime = Open(2);
        var started = new TaskCompletionSource();
        var run = Task.Run(async () =>
        {
            await foreach (var _ in runtime.Generate("Once upon a time", 96, SamplingOptions.Greedy)) started.TrySetResult();
        });
        await started.Task.WaitAsync(TimeSpan.FromSeconds(30));
        runtime.Dispose();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => run.WaitAsync(TimeSpan.FromSeconds(30)));
    }

    private readonly record struct CacheManagerPins(int PinnedRows, int Leases, int PendingAcquires, int Sessions, int ReadsInFlight);
}
