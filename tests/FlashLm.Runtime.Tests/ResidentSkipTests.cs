using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Formats.Synth;
using FlashLm.Models.Sampling;
using FlashLm.Runtime;
using FlashLm.Runtime.Cache;
using Xunit;

namespace FlashLm.Tests.Runtime;

/// <summary>
/// Gate-resident selection already holds each bundle's leading part (the gate row; OPT: the up row) in DRAM, so reads
/// leave its whole pages out and the reader copies it into the row (flashlm.loader.skip-resident). The output, the sets and
/// the checks are the same as reading whole bundles; only the bytes from flash shrink. SwiGLU and ReLU Llama shapes with a
/// 4 KiB leading part (dim 1024, F32), where there is a page to skip.
/// </summary>
public sealed class ResidentSkipTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string Layout(string shape) =>
        SyntheticModels.WriteLayout(_dir.File(shape + ".flash"), SyntheticShapes.Get(shape) with { Dim = 1024, Layers = 2, HiddenDim = 320 }, seed: 31);

    private static (byte[] Text, List<FlashLm.Runtime.Session.TokenStats> Stats, long Skip) Run(string folder, params string[] settings)
    {
        using var rt = FlashRuntime.Open(folder, FlashPipelineTests.Settings(["predictor=gate", "window=1", .. settings]), 24);
        var (text, stats) = FlashPipelineTests.RunFlash(rt, "the robot", 16, SamplingOptions.Greedy);
        return (text, stats, rt.CacheSettings.ResidentSkip);
    }

    [Theory]
    [InlineData("tiny", "sparsity=0.5")]
    [InlineData("tiny-relu", "sparsity=0.9")]
    public void Reads_without_the_resident_part_print_the_same_and_read_a_third_less(string shape, string sparsity)
    {
        var folder = Layout(shape);
        var (whole, wholeStats, noSkip) = Run(folder, sparsity, "loader.skip-resident=off");
        var (skipped, skippedStats, skip) = Run(folder, sparsity, "loader.skip-resident=on");
        Assert.Equal(0, noSkip);
        Assert.Equal(4096, skip);
        Assert.Equal(whole, skipped);
        Assert.Equal(wholeStats.Select(s => s.NeuronsActive), skippedStats.Select(s => s.NeuronsActive));
        Assert.Equal(wholeStats.Select(s => s.Reads), skippedStats.Select(s => s.Reads));
        long a = wholeStats.Sum(s => s.BytesRead), b = skippedStats.Sum(s => s.BytesRead);
        Assert.True(a > 0, "the runs read from flash");
        // Bundles are gate, up, down (12 KiB): reads of one bundle shrink to 8 KiB. Coalesced ranges skip only their first bundle's head, so the saving is at most a head per bundle.
        using var model = new FlashLayoutModel(folder);
        double headShare = 4096.0 / model.Ffn.BundleBytes;
        Assert.InRange(b, 1, a - 1);
        Assert.True(b >= a * (1 - headShare) - 1, $"{b} bytes with the skip, {a} without: more saved than the heads");
    }

    [Fact]
    public void The_oracle_and_trace_reads_keep_whole_bundles()
    {
        var folder = Layout("tiny");
        using var oracle = FlashRuntime.Open(folder, FlashPipelineTests.Settings("predictor=oracle", "sparsity=0.5"), 24);
        Assert.Equal(0, oracle.CacheSettings.ResidentSkip);
        using var all = FlashRuntime.Open(folder, FlashPipelineTests.Settings("predictor=all", "sparsity=0.5"), 24);
        Assert.Equal(0, all.CacheSettings.ResidentSkip);
    }

    [Fact]
    public void A_corrupt_byte_in_the_part_read_from_flash_is_still_caught_naming_the_bundle()
    {
        var folder = Layout("tiny");
        long at;
        using (var model = new FlashLayoutModel(folder)) at = model.Ffn.BundleOffset(1, 0); // neuron 0: the first bundle of its range
        using var rt = FlashRuntime.Open(folder, FlashPipelineTests.Settings("predictor=gate", "sparsity=0", "loader.skip-resident=on"), 24);
        Assert.Equal(4096, rt.CacheSettings.ResidentSkip);
        // After the gates were read (and checked) at start, the disk goes bad in neuron 0's up row, past the 4 KiB gate: the part
        // the reads bring. Every neuron of layer 1 is read (sparsity 0); O_DIRECT sees the new bytes.
        using (var h = File.OpenHandle(Path.Combine(folder, "ffn.bin"), FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite))
        {
            var b = new byte[1];
            RandomAccess.Read(h, b, at + 4096 + 100);
            b[0] ^= 4;
            RandomAccess.Write(h, b, at + 4096 + 100);
            RandomAccess.FlushToDisk(h);
        }
        var e = Assert.ThrowsAny<Exception>(() => FlashPipelineTests.RunFlash(rt, "the robot", 4, SamplingOptions.Greedy));
        var message = e.ToString();
        Assert.Contains("checksum", message);
        Assert.Contains("layer 1", message);
    }

    [Fact]
    public void Planned_ranges_start_past_the_head_and_copies_leave_it_out()
    {
        var folder = Layout("tiny");
        using var model = new FlashLayoutModel(folder);
        var ffn = model.Ffn;
        long stride = ffn.BundleStride;
        // Rows 0..2 consecutive and page-aligned (direct); neurons 9 and 11 coalesced across 11's head and the 16 KiB between (staged).
        nint baseAddress = 1 << 20;
        var loads = new List<(int, int, nint)>
        {
            (3, 0, baseAddress), (4, 1, baseAddress + (nint)stride), (5, 2, baseAddress + 2 * (nint)stride),
            (9, 7, baseAddress + 7 * (nint)stride), (11, 3, baseAddress + 3 * (nint)stride),
        };
        var plans = ReadPlanner.Plan(ffn, 1, loads, coalesceGap: 16384, maxRead: 1 << 20, skip: 4096);
        Assert.Equal(2, plans.Count);
        var direct = plans[0];
        Assert.True(direct.Direct);
        Assert.Equal(ffn.BundleOffset(1, 3) + 4096, direct.FileOffset);
        Assert.Equal(3 * stride - 4096, direct.Length);
        Assert.Equal(baseAddress + 4096, direct.Destination);
        Assert.Equal([3, 4, 5], direct.Fill!.Neurons);
        Assert.Equal([ffn.BundleOffset(1, 3), ffn.BundleOffset(1, 4), ffn.BundleOffset(1, 5)], direct.Fill.BundleOffsets);
        var staged = plans[1];
        Assert.False(staged.Direct);
        Assert.Equal(ffn.BundleOffset(1, 9) + 4096, staged.FileOffset);
        Assert.Equal(ffn.BundleOffset(1, 11) + ffn.BundleBytes - staged.FileOffset, staged.Length);
        Assert.Equal(2, staged.Copies.Length);
        Assert.All(staged.Copies, c => Assert.Equal((int)ffn.BundleBytes - 4096, c.Length));
        Assert.Equal(0, staged.Copies[0].SourceOffset);
        Assert.Equal(baseAddress + 7 * (nint)stride + 4096, staged.Copies[0].Destination);
        Assert.Equal(ffn.BundleOffset(1, 11) + 4096 - staged.FileOffset, staged.Copies[1].SourceOffset);
        Assert.Equal([9, 11], staged.Fill!.Neurons);
        // With a discard buffer the coalesced range is one scatter read: 9 (past its head) in its row, the gap between 9 and 11
        // in the discard buffer, 11 whole in its row; nothing staged.
        nint discard = 64 << 20;
        var scattered = ReadPlanner.Plan(ffn, 1, loads, coalesceGap: 16384, maxRead: 1 << 20, skip: 4096, discard: discard, discardBytes: 16384);
        Assert.True(scattered[0].Direct);
        var scatter = scattered[1];
        Assert.False(scatter.Staged);
        Assert.Equal(staged.FileOffset, scatter.FileOffset);
        Assert.Equal(staged.Length, scatter.Length);
        long between = ffn.BundleOffset(1, 11) - ffn.BundleOffset(1, 9) - stride;
        Assert.Equal([(baseAddress + 7 * (nint)stride + 4096, stride - 4096), (discard, between), (baseAddress + 3 * (nint)stride, ffn.BundleBytes)],
            scatter.Segments!.Select(g => (g.Address, (long)g.Length)).ToArray());
        Assert.Equal(scatter.Length, scatter.Segments!.Sum(g => g.Length));
        Assert.Equal(staged.Copies, scatter.Copies); // where each bundle landed, for the checks
        // A gap larger than the discard buffer takes several pieces of it.
        var pieces = ReadPlanner.Plan(ffn, 1, loads, coalesceGap: 16384, maxRead: 1 << 20, skip: 4096, discard: discard, discardBytes: 4096)[1];
        Assert.Equal(between / 4096, pieces.Segments!.Count(g => g.Address == discard));
        Assert.Equal(pieces.Length, pieces.Segments!.Sum(g => g.Length));
        // Without a head the same loads read whole bundles and fill nothing.
        Assert.All(ReadPlanner.Plan(ffn, 1, loads, 4096, 1 << 20), p => Assert.Null(p.Fill));
        Assert.Throws<ArgumentOutOfRangeException>(() => ReadPlanner.Plan(ffn, 1, loads, 4096, 1 << 20, skip: 100));
        Assert.Throws<ArgumentOutOfRangeException>(() => ReadPlanner.Plan(ffn, 1, loads, 4096, 1 << 20, skip: ffn.BundleBytes));
    }
}
