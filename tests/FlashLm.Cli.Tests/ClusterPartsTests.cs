using Akka.Actor;
using FlashLm.Cluster;
using FlashLm.Models.Sampling;
using FlashLm.Runtime;
using FlashLm.Runtime.Config;
using FlashLm.Server;
using Xunit;

namespace FlashLm.Tests.Cli;

/// <summary>The cluster's parts in one process: the binary serializer of its messages, and the pool that lends a node's sessions.</summary>
public sealed class ClusterPartsTests : IClassFixture<SyntheticLayoutFixture>, IDisposable
{
    private readonly SyntheticLayoutFixture _layout;
    private readonly ActorSystem _system = ActorSystem.Create("parts", "akka.loglevel = OFF\nakka.stdout-loglevel = OFF");

    public ClusterPartsTests(SyntheticLayoutFixture layout) => _layout = layout;

    public void Dispose() => _system.Terminate().Wait(TimeSpan.FromSeconds(10));

    private ClusterSerializer Serializer => new((ExtendedActorSystem)_system);

    public static TheoryData<string> MessageKinds => new() { "T", "TS", "TT", "TA", "TE", "TC", "SS", "SR", "SL" };

    private IClusterMessage Sample(string kind)
    {
        var actor = _system.ActorOf(Props.Empty);
        var sampling = new SamplingOptions(0.7f, 0.9f, 40, 12345678901234UL);
        return kind switch
        {
            "T" => new Turn("conv-1", 42, [1, 2, 300], 99, sampling, actor, [2, 511]),
            "TS" => new TurnStarted(42, "akka.tcp://flashlm@127.0.0.1:4000", 17),
            "TT" => new TurnToken(42, 3, 20, 311, [0xE6, 0x97], 4096, 700, 650, 12.5),
            "TA" => new TurnAck(42, 3),
            "TE" => new TurnEnd(42, "node x: broke", Busy: true),
            "TC" => new TurnCancel("conv-1", 42),
            "SS" => new StageStep("conv-1", 2, 7, -1, [1.5f, -2.25f, float.Epsilon], true, false, sampling, actor, [1.25, 3.5], 8192, 90, 80),
            "SR" => new StageResult("conv-1", 7, 311, [1.25, 3.5, 0.5], 8192, 90, 80, null),
            _ => new StageRelease("conv-1"),
        };
    }

    [Theory]
    [MemberData(nameof(MessageKinds))]
    public void Every_cluster_message_comes_back_as_it_was_sent(string kind)
    {
        var message = Sample(kind);
        var s = Serializer;
        Assert.Equal(kind, s.Manifest(message));
        var back = s.FromBinary(s.ToBinary(message), kind);
        Assert.Equal(message.GetType(), back.GetType());
        // Records compare arrays by reference: compare their serialized forms, which cover every field.
        Assert.Equal(s.ToBinary(message), s.ToBinary(back));
        if (back is StageStep step) Assert.Equal([1.5f, -2.25f, float.Epsilon], step.Hidden!);
    }

    [Fact]
    public void Cut_or_mislabelled_bytes_are_refused_not_misread()
    {
        var s = Serializer;
        var bytes = s.ToBinary(Sample("SS"));
        for (int cut = 0; cut < bytes.Length; cut += 7)
            Assert.Throws<System.Runtime.Serialization.SerializationException>(() => s.FromBinary(bytes[..cut], "SS"));
        Assert.Throws<System.Runtime.Serialization.SerializationException>(() => s.FromBinary(bytes, "ZZ"));
        Assert.Throws<ArgumentException>(() => s.ToBinary("not a cluster message"));
        // A length field claiming more than any message holds is refused before anything is allocated for it.
        var huge = s.ToBinary(new Turn("c", 1, [5], 9, SamplingOptions.Greedy, _system.ActorOf(Props.Empty), []));
        BitConverter.GetBytes(int.MaxValue).CopyTo(huge, 2 + 8); // the token count, after the id "c" and the request
        Assert.Throws<System.Runtime.Serialization.SerializationException>(() => s.FromBinary(huge, "T"));
    }

    [Fact]
    public async Task The_pool_keeps_sessions_for_their_conversations_and_gives_the_longest_idle_one_up_when_full()
    {
        using var runtime = FlashRuntime.Open(_layout.Folder, RuntimeSettings.Compose([], ["max-sessions=2"]), 32);
        var pool = new SessionPool(runtime);
        var (a, b, c) = (new SessionPool.Slot(), new SessionPool.Slot(), new SessionPool.Slot());
        var wait = TimeSpan.FromSeconds(5);
        var sa = await pool.AcquireAsync(a, wait, default);
        Assert.False(sa.Kept);
        pool.Release(a, drop: false);
        var sb = await pool.AcquireAsync(b, wait, default);
        pool.Release(b, drop: false);
        Assert.True((await pool.AcquireAsync(a, wait, default)).Kept); // a is used again: b is now the longest idle
        pool.Release(a, drop: false);
        var sc = await pool.AcquireAsync(c, wait, default); // full: b gives its session up
        Assert.False(sc.Kept);
        Assert.Null(b.Session);
        Assert.Same(sa.Session, a.Session);
        Assert.Equal(2, pool.Open);
        // Both sessions generating: a third conversation waits, then is refused as busy.
        var busy = await pool.AcquireAsync(a, wait, default);
        var refused = await Assert.ThrowsAsync<ModelBusyException>(() => pool.AcquireAsync(b, TimeSpan.FromMilliseconds(300), default));
        Assert.Contains("flashlm.max-sessions", refused.Message);
        // A waiting conversation gets a session as soon as one is given back.
        var waiting = pool.AcquireAsync(b, wait, default);
        Assert.False(waiting.IsCompleted);
        pool.Release(c, drop: false);
        var got = await waiting.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.False(got.Kept);
        Assert.Null(c.Session);
        // A conversation that ends while its turn holds the session gives it back when the turn ends, not under it.
        pool.Forget(a);
        Assert.Equal(2, pool.Open);
        Assert.NotNull(a.Session);
        pool.Release(a, drop: false);
        Assert.Equal(1, pool.Open);
        Assert.Null(a.Session);
        pool.Forget(b);
        pool.Release(b, drop: false);
        Assert.Equal(0, pool.Open);
        _ = busy;
        _ = sb;
    }
}
