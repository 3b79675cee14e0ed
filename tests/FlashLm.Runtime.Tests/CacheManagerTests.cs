using Akka.Actor;
using FlashLm.Runtime.Cache;
using FlashLm.Runtime.Config;
using FlashLm.Runtime.Loader;
using Xunit;
using static FlashLm.Runtime.Cache.CacheManager;

namespace FlashLm.Tests.Runtime;

/// <summary>The DRAM cache manager: leases hold the right bundles, the window is exact, the budget holds, reads are bounded.</summary>
public sealed class CacheManagerTests : Akka.TestKit.Xunit2.TestKit, IClassFixture<StoriesFlashFixture>
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(10);
    private readonly StoriesFlashFixture _f;

    public CacheManagerTests(StoriesFlashFixture f) : base(RuntimeTestConfig.Hocon) => _f = f;

    private static CacheSettings Settings(int rows, int window, int maxInFlight = 4, int staging = 4, long gap = 32 * 1024, int maxRead = 64 * 1024) =>
        new(rows, window, gap, maxRead, staging, maxInFlight, DirectIo: true);

    private IActorRef Start(CacheSettings s, FlashLoader.ReadHook? hook = null, int readers = 4)
    {
        var loader = Sys.ActorOf(FlashLoader.Pool(new LoaderSettings(readers, 4, s.CoalesceGap, s.MaxRead, true, 3, 0), RuntimeTestConfig.IoDispatcher, hook));
        return Sys.ActorOf(CacheManager.Props(_f.Ffn, s, loader));
    }

    /// <summary>Every row of the lease holds exactly its neuron's bundle bytes from ffn.bin.</summary>
    private void AssertLeaseBytes(Lease lease)
    {
        Assert.Equal(lease.Neurons.Length, lease.Rows.Length);
        Assert.Equal(lease.Neurons.Length, lease.Addresses.Length);
        for (int i = 0; i < lease.Neurons.Length; i++)
            Assert.True(_f.Bundle(lease.Layer, lease.Neurons[i]).AsSpan().SequenceEqual(RuntimeTestConfig.Copy(lease.Addresses[i], (int)_f.Ffn.BundleBytes)),
                $"layer {lease.Layer}: lease row {lease.Rows[i]} does not hold neuron {lease.Neurons[i]}'s bundle");
    }

    private Snapshot SnapshotOf(IActorRef cache, int layer)
    {
        cache.Tell(new GetSnapshot(layer), TestActor);
        return ExpectMsg<Snapshot>(Wait);
    }

    private Pins PinsOf(IActorRef cache)
    {
        cache.Tell(new GetPins(), TestActor);
        return ExpectMsg<Pins>(Wait);
    }

    [Fact]
    public void A_forward_acquire_hands_the_lease_to_compute_and_charges_it_to_the_session_it_names()
    {
        var cache = Start(Settings(rows: _f.Ffn.Neurons, window: 5));
        var session = CreateTestProbe();
        var compute = CreateTestProbe();
        var predictor = CreateTestProbe();
        var state = new FlashLm.Models.InferenceState(_f.Source.Config, 1);
        var route = new FlashLm.Runtime.Session.LayerPath.Route(session.Ref, compute.Ref, predictor.Ref, cache, state, Position: 0, Prefill: false);
        var tally = new FlashLm.Runtime.Session.LayerPath.Tally(ComputeTicks: 7, PredictTicks: 3);

        cache.Tell(new AcquireFor(route, 2, [1, 5, 9], tally, Sent: 42), predictor.Ref); // the predictor asks on the session's behalf
        var run = compute.ExpectMsg<FlashLm.Runtime.Compute.LayerCompute.RunLeasedFfn>(Wait);
        Assert.Same(route, run.Route);
        Assert.Same(tally, run.Tally);
        Assert.Equal(42, run.AcquireSent);
        Assert.Equal([1, 5, 9], run.Lease.Neurons.Order());
        AssertLeaseBytes(run.Lease);
        session.ExpectNoMsg(TimeSpan.FromMilliseconds(100)); // the session is not in the loop
        Assert.Equal(new Pins(3, 1, 0, 1, 0), PinsOf(cache));

        cache.Tell(new Release(run.Lease, session.Ref), compute.Ref); // compute releases it for the session
        Assert.Equal(new Pins(0, 0, 0, 1, 0), PinsOf(cache));

        cache.Tell(new AcquireFor(route, 3, [2, 4], tally, Sent: 43), predictor.Ref);
        compute.ExpectMsg<FlashLm.Runtime.Compute.LayerCompute.RunLeasedFfn>(Wait);
        Sys.Stop(session.Ref); // the session stops while compute holds its lease: the lease is released for it
        AwaitAssert(() => Assert.Equal(new Pins(0, 0, 0, 0, 0), PinsOf(cache)), Wait);
    }

    [Fact]
    public void Hits_first_answers_with_the_cached_neurons_and_hands_the_ones_being_read_back_as_the_remainder()
    {
        var s = Settings(rows: _f.Ffn.Neurons, window: 5) with { HitsFirst = true };
        var cache = Start(s);
        int[] cached = [3, 4, 5, 60], fresh = [7, 61, 150];
        cache.Tell(new Acquire(1, cached, 0, Prefill: false), TestActor);
        var first = ExpectMsg<RowsReady>(Wait).Lease;
        Assert.True(first.Last); // nothing cached yet: all of them are read, one lease
        cache.Tell(new Release(first), TestActor);
        cache.Tell(new TokenDone(0), TestActor);
        ExpectMsg<TokenCacheStats>(Wait);

        cache.Tell(new Acquire(1, [.. cached, .. fresh], 1, Prefill: false), TestActor);
        var hits = ExpectMsg<RowsReady>(Wait).Lease;
        Assert.True(hits.First);
        Assert.Equal(cached, hits.Neurons.Order());
        Assert.Equal(fresh, hits.Remaining.Order());
        AssertLeaseBytes(hits);
        cache.Tell(new Release(hits), TestActor);
        cache.Tell(new Acquire(1, hits.Remaining, 1, Prefill: false, First: false), TestActor);
        var misses = ExpectMsg<RowsReady>(Wait).Lease;
        Assert.True(misses.Last);
        Assert.False(misses.First);
        Assert.Equal(fresh, misses.Neurons.Order());
        AssertLeaseBytes(misses);
        cache.Tell(new Release(misses), TestActor);
        cache.Tell(new TokenDone(1), TestActor);
        var stats = ExpectMsg<TokenCacheStats>(Wait);
        Assert.Equal(cached.Length + fresh.Length, stats.NeuronsActive); // counted once, on the first acquire
        Assert.Equal(fresh.Length, stats.NeuronsLoaded);
    }

    [Fact]
    public void Acquire_gives_rows_holding_each_neurons_bundle_and_token_done_reports_the_token()
    {
        var s = Settings(rows: _f.Ffn.Neurons, window: 5);
        var cache = Start(s);
        int[] neurons = [0, 1, 2, 3, 17, 18, 40, 99, 100, 171];

        cache.Tell(new Acquire(2, neurons, 0, Prefill: false), TestActor);
        var lease = ExpectMsg<RowsReady>(Wait).Lease;
        Assert.Equal(2, lease.Layer);
        Assert.True(lease.First);
        Assert.True(lease.Last);
        Assert.Equal(neurons, lease.Neurons.Order());
        Assert.Equal(lease.Rows.Length, lease.Rows.Distinct().Count());
        AssertLeaseBytes(lease);
        cache.Tell(new Release(lease), TestActor);
        cache.Tell(new TokenDone(0), TestActor);
        var stats = ExpectMsg<TokenCacheStats>(Wait);
        Assert.Equal(0, stats.Position);
        Assert.Equal(neurons.Length, stats.NeuronsActive);
        Assert.Equal(neurons.Length, stats.NeuronsLoaded);
        Assert.Equal(0, stats.NeuronsEvicted);
        Assert.Equal(neurons.Length, stats.CachedRows);
        Assert.InRange(stats.Reads, 1, neurons.Length);
        Assert.True(stats.BytesRead >= neurons.Length * _f.Ffn.BundleBytes, $"{stats.BytesRead} bytes read for {neurons.Length} bundles");
        Assert.True(stats.BytesRead % 4096 == 0);
        Assert.InRange(stats.DramBytes, 1, BytesFor(_f.Ffn, s));
        Assert.True(stats.IoMs >= 0 && stats.MemMs >= 0);

        // The same set again is served from DRAM: no read, nothing loaded.
        cache.Tell(new Acquire(2, neurons, 1, Prefill: false), TestActor);
        var again = ExpectMsg<RowsReady>(Wait).Lease;
        AssertLeaseBytes(again);
        cache.Tell(new Release(again), TestActor);
        cache.Tell(new TokenDone(1), TestActor);
        var second = ExpectMsg<TokenCacheStats>(Wait);
        Assert.Equal(0, second.NeuronsLoaded);
        Assert.Equal(0, second.Reads);
        Assert.Equal(0, second.BytesRead);
        Assert.Equal(neurons.Length, second.NeuronsActive);
    }

    /// <summary>
    /// Property: after every token and for every layer the cache holds exactly the union of the last k
    /// tokens' sets, each row holds its neuron's bundle, and the DRAM in use stays within BytesFor.
    /// </summary>
    [Theory]
    [InlineData(0, 11)]
    [InlineData(1, 12)]
    [InlineData(2, 13)]
    [InlineData(5, 14)]
    public void Random_tokens_keep_exactly_the_window_union_with_correct_rows_within_budget(int window, int seed)
    {
        const int tokens = 200;
        var ffn = _f.Ffn;
        int layers = ffn.Layers, n = ffn.Neurons;
        var s = Settings(rows: n, window, gap: seed % 2 == 0 ? 0 : 32 * 1024, maxRead: seed % 2 == 0 ? 4096 : 64 * 1024);
        long promised = BytesFor(ffn, s);
        var cache = Start(s);
        var rng = new Random(seed);
        var history = new List<int[][]>(); // (token, layer) sets

        for (int t = 0; t < tokens; t++)
        {
            var sets = new int[layers][];
            for (int l = 0; l < layers; l++)
            {
                // Sizes from empty to all neurons, skewed small as in a sparse FFN.
                int size = rng.Next(8) == 0 ? rng.Next(n + 1) : rng.Next(n / 4);
                sets[l] = Enumerable.Range(0, n).OrderBy(_ => rng.Next()).Take(size).ToArray();
            }
            history.Add(sets);

            var leases = new List<Lease>();
            if (rng.Next(2) == 0)
            {
                // One layer at a time, as the session does.
                foreach (int l in Enumerable.Range(0, layers).OrderBy(_ => rng.Next()))
                {
                    cache.Tell(new Acquire(l, sets[l], t, Prefill: rng.Next(4) == 0), TestActor);
                    var lease = ExpectMsg<RowsReady>(Wait).Lease;
                    leases.Add(lease);
                    cache.Tell(new Release(lease), TestActor);
                }
            }
            else
            {
                // Every layer in flight at once, released together.
                for (int l = 0; l < layers; l++) cache.Tell(new Acquire(l, sets[l], t, Prefill: false), TestActor);
                for (int l = 0; l < layers; l++) leases.Add(ExpectMsg<RowsReady>(Wait).Lease);
                foreach (var lease in leases) cache.Tell(new Release(lease), TestActor);
            }
            foreach (var lease in leases)
            {
                Assert.True(lease.Last, $"token {t} layer {lease.Layer}: a cache of every neuron left neurons for later");
                Assert.Equal(sets[lease.Layer].Order(), lease.Neurons.Order());
                AssertLeaseBytes(lease);
            }

            cache.Tell(new TokenDone(t), TestActor);
            var stats = ExpectMsg<TokenCacheStats>(Wait);
            Assert.Equal(t, stats.Position);
            Assert.Equal(sets.Sum(x => x.Length), stats.NeuronsActive);
            Assert.InRange(stats.DramBytes, 1, promised);

            int cachedRows = 0;
            for (int l = 0; l < layers; l++)
            {
                var expected = history.Skip(Math.Max(0, history.Count - window)).Take(window).SelectMany(h => h[l]).Distinct().Order().ToArray();
                var snap = SnapshotOf(cache, l);
                Assert.True(expected.SequenceEqual(snap.Neurons.Order()),
                    $"k={window} token {t} layer {l}: cached [{string.Join(",", snap.Neurons.Order())}], window union [{string.Join(",", expected)}]");
                for (int r = 0; r < snap.Neurons.Length; r++)
                    Assert.True(_f.Bundle(l, snap.Neurons[r]).AsSpan().SequenceEqual(snap.RowBytes[r]), $"k={window} token {t} layer {l}: row {r} (neuron {snap.Neurons[r]}) bytes differ");
                Assert.InRange(snap.CacheBytes, 1, promised);
                cachedRows += snap.Neurons.Length;
            }
            Assert.Equal(cachedRows, stats.CachedRows);
        }
    }

    /// <summary>
    /// With fewer rows than an active set, leases come in batches (Remaining, then follow-ups with First = false)
    /// whose neurons together are the requested set, each exactly once, every row holding its bundle.
    /// </summary>
    [Theory]
    [InlineData(16, 0, 21)]
    [InlineData(16, 2, 22)]
    [InlineData(24, 5, 23)]
    public void Sets_larger_than_the_cache_come_in_batches_covering_the_set_once(int rows, int window, int seed)
    {
        const int tokens = 60;
        var ffn = _f.Ffn;
        int layers = ffn.Layers, n = ffn.Neurons;
        var s = Settings(rows, window);
        long promised = BytesFor(ffn, s);
        var cache = Start(s);
        var rng = new Random(seed);
        var history = new List<int[][]>();
        int batched = 0;

        for (int t = 0; t < tokens; t++)
        {
            var sets = new int[layers][];
            for (int l = 0; l < layers; l++)
                sets[l] = Enumerable.Range(0, n).OrderBy(_ => rng.Next()).Take(rng.Next(1, 4 * rows)).ToArray();
            history.Add(sets);
            for (int l = 0; l < layers; l++)
            {
                var seen = new List<int>();
                cache.Tell(new Acquire(l, sets[l], t, Prefill: false), TestActor);
                var lease = ExpectMsg<RowsReady>(Wait).Lease;
                Assert.True(lease.First);
                int batches = 1;
                while (true)
                {
                    Assert.Equal(l, lease.Layer);
                    Assert.InRange(lease.Rows.Length, 1, rows);
                    AssertLeaseBytes(lease);
                    seen.AddRange(lease.Neurons);
                    cache.Tell(new Release(lease), TestActor);
                    if (lease.Last) break;
                    Assert.True(batches++ < 4 * rows, "batches never end");
                    var remaining = lease.Remaining;
                    cache.Tell(new Acquire(l, remaining, t, Prefill: false, First: false), TestActor);
                    lease = ExpectMsg<RowsReady>(Wait).Lease;
                    Assert.False(lease.First);
                    Assert.Equal(remaining.Order(), lease.Neurons.Concat(lease.Remaining).Order());
                }
                if (batches > 1) batched++;
                Assert.Equal(seen.Count, seen.Distinct().Count());
                Assert.Equal(sets[l].Order(), seen.Order());
            }
            cache.Tell(new TokenDone(t), TestActor);
            var stats = ExpectMsg<TokenCacheStats>(Wait);
            Assert.Equal(sets.Sum(x => x.Length), stats.NeuronsActive);
            Assert.InRange(stats.DramBytes, 1, promised);
            for (int l = 0; l < layers; l++)
            {
                var window_ = history.Skip(Math.Max(0, history.Count - window)).Take(window).SelectMany(h => h[l]).ToHashSet();
                var snap = SnapshotOf(cache, l);
                Assert.InRange(snap.Neurons.Length, 0, rows);
                Assert.Equal(snap.Neurons.Length, snap.Neurons.Distinct().Count());
                Assert.All(snap.Neurons, x => Assert.Contains(x, window_));
                for (int r = 0; r < snap.Neurons.Length; r++)
                    Assert.True(_f.Bundle(l, snap.Neurons[r]).AsSpan().SequenceEqual(snap.RowBytes[r]), $"token {t} layer {l}: row {r} bytes differ");
            }
        }
        Assert.True(batched > tokens, $"only {batched} acquires came in batches: the test did not exercise Remaining");
    }

    [Fact]
    public void Reads_in_flight_never_exceed_the_limit_and_every_acquire_is_answered()
    {
        const int limit = 3;
        int current = 0, peak = 0, total = 0;
        FlashLoader.ReadHook hook = _ =>
        {
            int now = Interlocked.Increment(ref current);
            Interlocked.Increment(ref total);
            int seen;
            while ((seen = Volatile.Read(ref peak)) < now && Interlocked.CompareExchange(ref peak, now, seen) != seen) { }
            Thread.Sleep(15);
            Interlocked.Decrement(ref current);
        };
        // No coalescing and one page per read: every page of neurons is its own read. Eight readers on four
        // I/O threads and more staging buffers than the limit, so only the cache manager can hold reads back.
        var s = Settings(rows: _f.Ffn.Neurons, window: 1, maxInFlight: limit, staging: 8, gap: 0, maxRead: 4096);
        var cache = Start(s, hook, readers: 8);
        int layers = _f.Ffn.Layers;
        var sets = Enumerable.Range(0, layers).Select(l => Enumerable.Range(0, _f.Ffn.Neurons).Where(x => (x / 4 + l) % 3 == 0).ToArray()).ToArray();
        for (int l = 0; l < layers; l++) cache.Tell(new Acquire(l, sets[l], 0, Prefill: false), TestActor);
        var leases = Enumerable.Range(0, layers).Select(_ => ExpectMsg<RowsReady>(TimeSpan.FromSeconds(20)).Lease).ToList();

        Assert.Equal(Enumerable.Range(0, layers), leases.Select(x => x.Layer).Order());
        foreach (var lease in leases)
        {
            Assert.Equal(sets[lease.Layer], lease.Neurons.Order());
            AssertLeaseBytes(lease);
        }
        Assert.True(total >= 5 * limit, $"only {total} reads: too few to test the limit");
        Assert.InRange(peak, 2, limit); // at least 2: the hook does see parallel reads
    }
}
