using System.Text;
using FlashLm.Models.Sampling;
using FlashLm.Runtime;
using FlashLm.Runtime.Session;
using Xunit;

namespace FlashLm.Tests.Runtime;

/// <summary>
/// A consumer that leaves its await foreach early (without cancelling) ends the turn: the turn's actor stops, holds no
/// rows, and the next turn of the same session runs alone on its KV cache (found by the soak: before, the actor waited
/// forever for room in the channel, about 170 KB per abandoned turn, and could run beside the next turn).
/// </summary>
public sealed class AbandonedTurnTests : IClassFixture<SyntheticFlashFixture>
{
    private const int Steps = 40;
    private readonly SyntheticFlashFixture _f;

    public AbandonedTurnTests(SyntheticFlashFixture f) => _f = f;

    private static Akka.Configuration.Config Config() => FlashPipelineTests.Settings(["window=3", "loader.readers=4", "loader.threads=4"]);

    private static async Task<string> Text(IAsyncEnumerable<TokenEvent> events)
    {
        var text = new StringBuilder();
        await foreach (var ev in events) text.Append(Encoding.UTF8.GetString(ev.Piece));
        return text.ToString();
    }

    [Fact]
    public async Task An_abandoned_turn_stops_its_actor_and_the_next_turn_is_unchanged()
    {
        using var runtime = FlashRuntime.Open(_f.Folder, Config(), Steps);
        string expected;
        await using (var fresh = await runtime.CreateSessionAsync()) expected = await Text(fresh.GenerateAsync("the robot", 20, SamplingOptions.Greedy));

        await using var session = await runtime.CreateSessionAsync();
        int seen = 0;
        await foreach (var _ in session.GenerateAsync("a cat", 30, SamplingOptions.Greedy))
            if (++seen == 3) break; // walk away: the channel (8 events) fills and the actor would block without the fix
        Assert.Equal(3, seen);
        // The abandoned turn is over once the enumerator is disposed: nothing of it is left running or pinned.
        Assert.True(session.Running.IsCompleted, "the abandoned turn's actor is still running");
        var pins = await runtime.PinsAsync();
        Assert.Equal(0, pins.PinnedRows);
        Assert.Equal(0, pins.Leases);
        Assert.Equal(0, pins.PendingAcquires);

        // Its context was not kept (Position did not advance), so a fresh turn on the same session gives the fresh answer.
        Assert.Equal(0, session.Position);
        Assert.Equal(expected, await Text(session.GenerateAsync("the robot", 20, SamplingOptions.Greedy)));
    }
}
