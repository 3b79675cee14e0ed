using System.Runtime.InteropServices;
using FlashLm.Runtime.Cache;
using Xunit;
using static FlashLm.Runtime.Cache.CacheManager;

namespace FlashLm.Tests.Runtime;

/// <summary>
/// The cache manager's core driven directly, with no actor system: the test plays the loader (it lands each read's bytes
/// from ffn.bin itself, or fails it) and the sessions (opaque keys).
/// </summary>
public sealed class CacheCoreTests : IClassFixture<SyntheticFlashFixture>
{
    private const int Layer = 1;
    private readonly SyntheticFlashFixture _f;
    private readonly byte[] _ffn;

    public CacheCoreTests(SyntheticFlashFixture f)
    {
        _f = f;
        _ffn = File.ReadAllBytes(f.Ffn.FilePath);
    }

    private static CacheSettings Settings(int rows, int window = 5, int readsInFlight = 64, int reserve = 0, bool hitsFirst = false) =>
        new(rows, window, CoalesceGap: 0, MaxRead: 64 * 1024, StagingBuffers: 4, MaxReadsInFlight: readsInFlight, DirectIo: false,
            HitsFirst: hitsFirst, DemandReserve: reserve);

    /// <summary>Plays the loader: copies the read's file range from ffn.bin where the plan says, and reports it done.</summary>
    private CacheCore.Effects Land(CacheCore core, CacheCore.ReadStart r)
    {
        var plan = r.Plan;
        int available = (int)Math.Min(plan.Length, _ffn.Length - plan.FileOffset);
        if (plan.Direct)
            Marshal.Copy(_ffn, (int)plan.FileOffset, plan.Destination, available);
        else if (plan.Segments is { } segments)
        {
            // A scatter read: the range in order across its buffers (rows and the discard buffer).
            long at = plan.FileOffset;
            foreach (var g in segments)
            {
                int n = (int)Math.Clamp(_ffn.Length - at, 0, g.Length);
                Marshal.Copy(_ffn, (int)at, g.Address, n);
                at += g.Length;
            }
            Assert.Equal(plan.FileOffset + plan.Length, at);
        }
        else
            foreach (var c in plan.Copies)
                Marshal.Copy(_ffn, (int)(plan.FileOffset + c.SourceOffset), c.Destination, c.Length);
        return core.ReadDone(r.Id, plan.Length);
    }

    /// <summary>Lands every read of <paramref name="first"/> and of what those reads started in turn; returns the leases that became ready.</summary>
    private List<CacheCore.Ready> LandAll(CacheCore core, CacheCore.Effects first)
    {
        var ready = new List<CacheCore.Ready>(first.ReadyLeases);
        var reads = new Queue<CacheCore.ReadStart>(first.Reads);
        while (reads.TryDequeue(out var r))
        {
            var e = Land(core, r);
            Assert.Empty(e.Failures);
            foreach (var next in e.Reads) reads.Enqueue(next);
            ready.AddRange(e.ReadyLeases);
        }
        return ready;
    }

    private byte[] Bundle(int layer, int neuron) =>
        _ffn.AsSpan((int)_f.Ffn.BundleOffset(layer, neuron), (int)_f.Ffn.BundleBytes).ToArray();

    private void AssertRowsHoldTheirBundles(Lease lease)
    {
        for (int i = 0; i < lease.Neurons.Length; i++)
            Assert.Equal(Bundle(lease.Layer, lease.Neurons[i]), RuntimeTestConfig.Copy(lease.Addresses[i], (int)_f.Ffn.BundleBytes));
    }

    [Fact]
    public void Misses_produce_reads_that_make_the_lease_ready_once_they_land()
    {
        using var core = new CacheCore(_f.Ffn, Settings(rows: 32));
        int[] neurons = [200, 3, 10, 11];
        var e = core.Acquire("s", Layer, neurons, prefill: false);
        Assert.NotEmpty(e.Reads);
        Assert.Empty(e.ReadyLeases);                      // nothing to compute over before the bytes arrive
        Assert.Equal(1, core.PendingAcquires);
        var ready = Assert.Single(LandAll(core, e));
        Assert.Equal("s", ready.Session);
        Assert.Equal(neurons.Order(), ready.Lease.Neurons);
        Assert.True(ready.Lease.Last);
        AssertRowsHoldTheirBundles(ready.Lease);
        Assert.Equal(0, core.PendingAcquires);
        Assert.Equal(0, core.ReadsInFlight);
        Assert.Equal(neurons.Length, core.PinnedRows);    // only the lease's pins are left
    }

    [Fact]
    public void Reads_that_land_together_make_the_lease_ready_once_and_a_repeated_answer_is_ignored()
    {
        using var core = new CacheCore(_f.Ffn, Settings(rows: 32));
        int[] neurons = [200, 3, 100, 50];                 // four separate reads (no coalescing gap)
        var e = core.Acquire("s", Layer, neurons, prefill: false);
        Assert.Equal(4, e.Reads.Count);
        foreach (var r in e.Reads)
        {
            var plan = r.Plan;
            foreach (var c in plan.Copies) Marshal.Copy(_ffn, (int)(plan.FileOffset + c.SourceOffset), c.Destination, c.Length);
            if (plan.Direct) Marshal.Copy(_ffn, (int)plan.FileOffset, plan.Destination, plan.Length);
        }
        // The io_uring loader answers what it reaped at once in one message: three, then the last one twice.
        var first = core.ReadsDone(e.Reads.Take(3).Select(r => (r.Id, r.Plan.Length)).ToArray());
        Assert.Empty(first.ReadyLeases);
        Assert.Equal(1, core.ReadsInFlight);
        var last = e.Reads[3];
        var second = core.ReadsDone([(last.Id, last.Plan.Length), (last.Id, last.Plan.Length)]);
        var ready = Assert.Single(second.ReadyLeases);
        AssertRowsHoldTheirBundles(ready.Lease);
        Assert.Equal(0, core.ReadsInFlight);
        Assert.Empty(core.ReadsDone([(last.Id, last.Plan.Length)]).ReadyLeases);
    }

    [Fact]
    public void Acquire_of_cached_neurons_answers_at_once_and_release_unpins()
    {
        using var core = new CacheCore(_f.Ffn, Settings(rows: 32));
        int[] neurons = [5, 6, 7, 100];
        var first = Assert.Single(LandAll(core, core.Acquire("s", Layer, neurons, prefill: false))).Lease;
        Assert.Empty(core.Release("s", first).ReadyLeases);
        Assert.Equal(0, core.PinnedRows);

        var e = core.Acquire("s", Layer, neurons, prefill: false);
        Assert.Empty(e.Reads);
        var lease = Assert.Single(e.ReadyLeases).Lease;
        Assert.Equal(first.Rows, lease.Rows);             // the same rows, still holding their bundles
        AssertRowsHoldTheirBundles(lease);
        Assert.Equal(neurons.Length, core.PinnedRows);
        Assert.Equal(1, core.Leases);

        core.Release("s", lease);
        Assert.Equal(0, core.PinnedRows);
        Assert.Equal(0, core.Leases);
        core.Release("s", lease);                         // a second release never unpins twice
        Assert.Equal(0, core.PinnedRows);
    }

    [Fact]
    public void Hits_first_hands_out_the_cached_neurons_and_leaves_the_misses_as_the_remainder()
    {
        using var core = new CacheCore(_f.Ffn, Settings(rows: 32, hitsFirst: true));
        var warm = Assert.Single(LandAll(core, core.Acquire("s", Layer, [1, 2], prefill: false))).Lease;
        core.Release("s", warm);

        var e = core.Acquire("s", Layer, [1, 2, 50, 51], prefill: false);
        Assert.NotEmpty(e.Reads);                         // the misses are being read ...
        var hits = Assert.Single(e.ReadyLeases).Lease;    // ... while the hits go out at once
        Assert.Equal(new[] { 1, 2 }, hits.Neurons);
        Assert.Equal(new[] { 50, 51 }, hits.Remaining);
        Assert.False(hits.Last);
    }

    [Fact]
    public void Prefetch_never_takes_the_demand_reserve()
    {
        const int rows = 32;
        int reserve = ReserveFor(rows);
        using var core = new CacheCore(_f.Ffn, Settings(rows, reserve: reserve));
        int[] speculative = Enumerable.Range(0, _f.Ffn.Neurons / 2).Select(i => 2 * i).ToArray();
        var e = core.Prefetch(null, Layer, speculative);
        Assert.Empty(e.ReadyLeases);
        Assert.Equal(rows - reserve, core.PinnedRows);    // every read pinned at once, none landed yet
        Assert.Equal(rows - reserve, e.Reads.Sum(r => r.Plan.Rows.Length));

        int[] demand = Enumerable.Range(0, reserve).Select(i => 2 * i + 1).ToArray(); // none of them prefetched
        var d = core.Acquire("s", Layer, demand, prefill: false);
        Assert.NotEmpty(d.Reads);                          // admitted at once, not waiting for a row
        var lease = LandAll(core, CacheEffects(e, d)).Single().Lease;
        Assert.Equal(demand, lease.Neurons);
        Assert.True(lease.Last);
        AssertRowsHoldTheirBundles(lease);
    }

    [Fact]
    public void Demand_withdraws_queued_prefetches_to_find_rows()
    {
        const int rows = 32;
        // Two read slots: prefetches fill at most one, so all but one of the spread-out prefetch reads stay queued.
        using var core = new CacheCore(_f.Ffn, Settings(rows, readsInFlight: 2));
        int[] speculative = Enumerable.Range(0, rows).Select(i => 8 * i + 4).Where(n => n < _f.Ffn.Neurons).ToArray();
        Assert.True(speculative.Length >= rows - 1);
        var p = core.Prefetch(null, Layer, speculative);
        var started = Assert.Single(p.Reads);
        Assert.Equal(speculative.Length, core.PinnedRows);
        var cache = core.CacheOf(Layer);
        int[] reading = started.Plan.Rows.Select(cache.NeuronAt).ToArray();

        int[] demand = Enumerable.Range(0, 8).Select(i => 8 * i + 1).ToArray();
        var d = core.Acquire("s", Layer, demand, prefill: false);
        Assert.NotEmpty(d.Reads);                          // demand reads went out; it did not wait
        var lease = LandAll(core, CacheEffects(p, d)).Single().Lease;
        Assert.Equal(demand, lease.Neurons);
        Assert.True(lease.Last);
        AssertRowsHoldTheirBundles(lease);
        // Every queued prefetch of the layer was withdrawn and its rows freed; the one already reading kept its rows.
        Assert.Equal(reading, speculative.Where(cache.Contains));
    }

    [Fact]
    public void Demand_that_finds_every_row_pinned_waits_and_is_admitted_when_a_lease_is_released()
    {
        const int rows = 8;
        using var core = new CacheCore(_f.Ffn, Settings(rows));
        int[] all = Enumerable.Range(0, rows).ToArray();
        var held = Assert.Single(LandAll(core, core.Acquire("a", Layer, all, prefill: false))).Lease;

        var w = core.Acquire("b", Layer, [100, 101], prefill: false);
        Assert.Empty(w.Reads);
        Assert.Empty(w.ReadyLeases);
        Assert.Equal(1, core.PendingAcquires);             // waiting, not failed

        var r = core.Release("a", held);
        Assert.NotEmpty(r.Reads);                          // admitted: its reads start
        var lease = Assert.Single(LandAll(core, r));
        Assert.Equal("b", lease.Session);
        Assert.Equal(new[] { 100, 101 }, lease.Lease.Neurons);
        Assert.Equal(0, core.PendingAcquires);
    }

    [Fact]
    public void Window_evicts_at_token_end_what_fell_out_of_it()
    {
        using var core = new CacheCore(_f.Ffn, Settings(rows: 32, window: 1));
        int[] a = [10, 20, 30], b = [40, 50];
        var la = Assert.Single(LandAll(core, core.Acquire("s", Layer, a, prefill: false))).Lease;
        core.Release("s", la);
        var t0 = core.TokenDone("s", 0, out _);
        Assert.Equal(0, t0.NeuronsEvicted);                // used by the token just done: inside a window of one
        Assert.Equal(a.Length, t0.NeuronsActive);
        Assert.Equal(a.Length, t0.NeuronsLoaded);
        Assert.Equal(a.Length, t0.CachedRows);

        var lb = Assert.Single(LandAll(core, core.Acquire("s", Layer, b, prefill: false))).Lease;
        core.Release("s", lb);
        var t1 = core.TokenDone("s", 1, out _);
        Assert.Equal(a.Length, t1.NeuronsEvicted);
        Assert.Equal(b.Length, t1.CachedRows);
        var cache = core.CacheOf(Layer);
        Assert.DoesNotContain(a, cache.Contains);
        Assert.All(b, n => Assert.True(cache.Contains(n)));
    }

    [Fact]
    public void Token_stats_count_the_reads_and_bytes_charged_to_the_session()
    {
        using var core = new CacheCore(_f.Ffn, Settings(rows: 32));
        var e = core.Acquire("s", Layer, [3, 90, 91, 92], prefill: false);
        long bytes = e.Reads.Sum(r => (long)r.Plan.Length);
        int reads = e.Reads.Count;
        Assert.Single(LandAll(core, e));
        var other = core.Acquire("t", 2, [7], prefill: false); // another session's reads are not charged to "s"
        LandAll(core, other);
        var stats = core.TokenDone("s", 0, out _);
        Assert.Equal(bytes, stats.BytesRead);
        Assert.Equal(reads, stats.Reads);
        Assert.Equal(4, stats.NeuronsLoaded);
        Assert.NotEqual(0, stats.ReadStartTicks);
        Assert.Equal(_f.Ffn.Layers, stats.PrefetchStartTicks.Length);
        Assert.All(stats.PrefetchStartTicks, t => Assert.Equal(0, t)); // no lookahead this token
        var next = core.TokenDone("s", 1, out _);                      // the books start again for the next token
        Assert.Equal(0, next.BytesRead);
        Assert.Equal(0, next.Reads);
    }

    [Fact]
    public void Lookahead_reads_are_charged_to_their_session_with_the_time_the_first_one_started()
    {
        using var core = new CacheCore(_f.Ffn, Settings(rows: 32));
        var p = core.Prefetch("s", 2, [30, 31, 32]);
        Assert.NotEmpty(p.Reads);
        Assert.Empty(LandAll(core, p));                    // a prefetch pins nothing for compute and answers nobody
        Assert.Equal(0, core.PinnedRows);
        var stats = core.TokenDone("s", 0, out _);
        Assert.Equal(3, stats.NeuronsLoaded);
        Assert.Equal(0, stats.NeuronsActive);
        Assert.Equal(p.Reads.Sum(r => (long)r.Plan.Length), stats.BytesRead);
        for (int l = 0; l < _f.Ffn.Layers; l++)
            Assert.Equal(l == 2, stats.PrefetchStartTicks[l] != 0);
    }

    [Fact]
    public void A_layer_or_neuron_outside_the_model_is_refused_naming_it()
    {
        using var core = new CacheCore(_f.Ffn, Settings(rows: 32));
        var layer = Assert.Throws<ArgumentOutOfRangeException>(() => core.Acquire("s", _f.Ffn.Layers, [1], prefill: false));
        Assert.Contains($"layer {_f.Ffn.Layers}", layer.Message);
        var neuron = Assert.Throws<ArgumentOutOfRangeException>(() => core.Prefetch(null, Layer, [_f.Ffn.Neurons]));
        Assert.Contains($"neuron {_f.Ffn.Neurons}", neuron.Message);
        Assert.Equal(0, core.PinnedRows);
    }

    [Fact]
    public void Session_that_goes_away_releases_its_leases_and_pending_acquires()
    {
        using var core = new CacheCore(_f.Ffn, Settings(rows: 32));
        var held = Assert.Single(LandAll(core, core.Acquire("s", 0, [1, 2, 3], prefill: false))).Lease;
        var pending = core.Acquire("s", Layer, [40, 41, 200], prefill: false);
        Assert.NotEmpty(pending.Reads);
        Assert.Equal(1, core.PendingAcquires);
        Assert.Equal(2, core.Leases);

        Assert.Empty(core.SessionGone("s").ReadyLeases);
        Assert.Equal(0, core.Sessions);
        Assert.Equal(0, core.Leases);
        Assert.Equal(0, core.PendingAcquires);
        Assert.True(core.ReadsInFlight > 0);               // its reads still land in their rows ...
        Assert.Empty(LandAll(core, pending));              // ... but answer nobody
        Assert.Equal(0, core.PinnedRows);
        Assert.Equal(0, core.ReadsInFlight);
        Assert.True(core.CacheOf(0).Contains(held.Neurons[0])); // the rows stay cached, only unpinned
    }

    [Fact]
    public void Failed_read_fails_the_pending_acquires_of_its_layer_and_drops_the_rows_never_filled()
    {
        using var core = new CacheCore(_f.Ffn, Settings(rows: 32));
        var other = Assert.Single(LandAll(core, core.Acquire("s", 0, [9], prefill: false))).Lease; // another layer: untouched
        int[] neurons = [10, 11, 100, 300];
        var e = core.Acquire("s", Layer, neurons, prefill: false);
        Assert.True(e.Reads.Count > 1);
        var failed = e.Reads[0];
        var f = core.ReadFailed(failed.Id, "disk on fire");
        var failure = Assert.Single(f.Failures);
        Assert.Equal(new CacheCore.Failed("s", Layer, "disk on fire"), failure);
        Assert.Equal(0, core.PendingAcquires);
        Assert.Equal(1, core.Leases);                      // only the other layer's lease is left

        Assert.Empty(LandAll(core, CacheEffects(e.Reads.Skip(1))));   // the reads that do land answer nobody
        var cache = core.CacheOf(Layer);
        var lost = failed.Plan.Rows.Length;
        Assert.Equal(neurons.Length - lost, neurons.Count(cache.Contains)); // the failed read's neurons are not cached
        Assert.Equal(1, core.PinnedRows);                  // the other layer's lease
        core.Release("s", other);
        Assert.Equal(0, core.PinnedRows);

        // The layer still works: a new acquire reads the dropped neurons again and gets their bytes.
        var again = Assert.Single(LandAll(core, core.Acquire("s", Layer, neurons, prefill: false))).Lease;
        Assert.Equal(neurons, again.Neurons);
        AssertRowsHoldTheirBundles(again);
    }

    [Fact]
    public void Abandon_forgets_every_acquire_and_names_the_sessions_to_fail()
    {
        using var core = new CacheCore(_f.Ffn, Settings(rows: 32));
        core.Acquire("a", Layer, [1, 2], prefill: false);
        core.Prefetch("b", 2, [5, 6]);
        Assert.Equal(new[] { "a", "b" }, core.Abandon().Cast<string>().Order());
        Assert.Equal(0, core.PendingAcquires);
    }

    /// <summary>The effects of several operations as one (their reads in order), to land them together.</summary>
    private static CacheCore.Effects CacheEffects(params CacheCore.Effects[] all)
    {
        var e = new CacheCore.Effects();
        foreach (var x in all)
        {
            foreach (var r in x.Reads) e.Add(r);
            foreach (var r in x.ReadyLeases) e.Add(r);
        }
        return e;
    }

    private static CacheCore.Effects CacheEffects(IEnumerable<CacheCore.ReadStart> reads)
    {
        var e = new CacheCore.Effects();
        foreach (var r in reads) e.Add(r);
        return e;
    }
}
