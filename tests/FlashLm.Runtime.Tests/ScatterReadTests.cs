using System.Runtime.InteropServices;
using FlashLm.Formats.FlashLayout;
using FlashLm.Formats.Synth;
using FlashLm.Runtime.Cache;
using FlashLm.Runtime.Io;
using Xunit;
using static FlashLm.Runtime.Cache.CacheManager;

namespace FlashLm.Tests.Runtime;

/// <summary>
/// Rows never move: an evicted neuron leaves a hole the next miss fills, so neighbouring neurons can sit in rows far apart.
/// Their range is still one read, scattered into the rows (the gaps into the discard buffer), through the file for real.
/// </summary>
public sealed class ScatterReadTests : IDisposable
{
    private const int Layer = 1;
    private readonly TempDir _dir = new();
    private readonly FlashLayoutModel _model;
    private readonly DirectFile _file;

    public ScatterReadTests()
    {
        // F32, dim 1024: 12 KiB bundles, page-strided (scatter reads need page-aligned rows).
        var folder = SyntheticModels.WriteLayout(_dir.File("wide.flash"), SyntheticShapes.Get("tiny") with { Dim = 1024, Layers = 2, HiddenDim = 320 }, seed: 41);
        _model = new FlashLayoutModel(folder);
        _file = new DirectFile(_model.Ffn.FilePath);
    }

    public void Dispose()
    {
        _file.Dispose();
        _model.Dispose();
        _dir.Dispose();
    }

    /// <summary>Plays the loader with the real file: scatter reads through DirectFile.ReadScatter (preadv), the rest as planned.</summary>
    private unsafe List<CacheCore.Ready> LandAll(CacheCore core, CacheCore.Effects first, ref int scatterReads)
    {
        var ready = new List<CacheCore.Ready>(first.ReadyLeases);
        var reads = new Queue<CacheCore.ReadStart>(first.Reads);
        while (reads.TryDequeue(out var r))
        {
            var plan = r.Plan;
            if (plan.Segments is { } segments)
            {
                Assert.Equal(plan.Length, segments.Sum(g => (long)g.Length));
                _file.ReadScatter(plan.FileOffset, segments);
                scatterReads++;
            }
            else if (plan.Direct) _file.Read(plan.FileOffset, (byte*)plan.Destination, plan.Length);
            else
            {
                _file.Read(plan.FileOffset, r.Staging!.Pointer, plan.Length);
                foreach (var c in plan.Copies) Buffer.MemoryCopy(r.Staging.Pointer + c.SourceOffset, (void*)c.Destination, c.Length, c.Length);
            }
            var e = core.ReadDone(r.Id, plan.Length);
            Assert.Empty(e.Failures);
            foreach (var next in e.Reads) reads.Enqueue(next);
            ready.AddRange(e.ReadyLeases);
        }
        return ready;
    }

    private void AssertRowsHoldTheirBundles(Lease lease)
    {
        var ffn = _model.Ffn;
        using var h = File.OpenHandle(ffn.FilePath);
        for (int i = 0; i < lease.Neurons.Length; i++)
        {
            var expected = new byte[ffn.BundleBytes];
            RandomAccess.Read(h, expected, ffn.BundleOffset(lease.Layer, lease.Neurons[i]));
            Assert.Equal(expected, RuntimeTestConfig.Copy(lease.Addresses[i], (int)ffn.BundleBytes));
        }
    }

    [Fact]
    public void A_range_over_rows_apart_is_one_scatter_read_that_lands_every_bundle_in_its_row()
    {
        var ffn = _model.Ffn;
        Assert.Equal(0, ffn.BundleStride % 4096);
        var settings = new CacheSettings(6, 5, CoalesceGap: 2 * ffn.BundleStride, MaxRead: 1 << 20, StagingBuffers: 2, MaxReadsInFlight: 16, DirectIo: true);
        using var core = new CacheCore(ffn, settings);
        int scatterReads = 0;
        var first = Assert.Single(LandAll(core, core.Acquire("s", Layer, [40, 50, 60, 70], prefill: false), ref scatterReads));
        core.Release("s", first.Lease);
        core.TokenDone("s", 0, out _);
        var cache = core.CacheOf(Layer);
        int rowOf70 = cache.RowOf(70);
        // 70 is used again; 20, 21 and 23 are new: two rows are free at the end, so the oldest neuron (40, row 0) goes and leaves a hole.
        var ready = Assert.Single(LandAll(core, core.Acquire("s", Layer, [70, 20, 21, 23], prefill: false), ref scatterReads));
        Assert.Equal(rowOf70, cache.RowOf(70));      // never moved
        Assert.False(cache.Contains(40));
        Assert.Equal(0, cache.RowOf(20));             // the hole, filled
        Assert.Equal(1, scatterReads);                // 20, 21 and 23 (22 into the discard buffer): one read
        AssertRowsHoldTheirBundles(ready.Lease);
    }
}
