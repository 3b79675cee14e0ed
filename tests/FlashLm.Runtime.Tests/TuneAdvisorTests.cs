using FlashLm.Runtime.Config;
using FlashLm.Runtime.Io;
using FlashLm.Runtime.Tuning;
using Xunit;

namespace FlashLm.Tests.Tuning;

/// <summary>The loader recommendation on synthetic measurement tables, and the profile it writes.</summary>
public sealed class TuneAdvisorTests
{
    private static readonly int[] Sizes = TuneOptions.PowersOfTwo(4096, 1 << 20);
    private static readonly int[] Readers = [1, 2, 4, 8, 16, 32, 64];

    /// <summary>
    /// A synthetic device: each read costs <paramref name="overheadSeconds"/> plus size / <paramref name="streamBytesPerSecond"/>,
    /// and at most <paramref name="queueDepth"/> reads are served at once (more readers just wait).
    /// </summary>
    private static TuneResult Device(double overheadSeconds, double streamBytesPerSecond, int queueDepth, int[]? sizes = null, int[]? readers = null)
    {
        var points = new List<TunePoint>();
        foreach (int s in sizes ?? Sizes)
            foreach (int p in readers ?? Readers)
            {
                double service = overheadSeconds + s / streamBytesPerSecond;
                double iops = Math.Min(p, queueDepth) / service;
                points.Add(new TunePoint(s, p, (long)Math.Round(iops * 10), 10.0)); // 10 s per point: counts large enough to be exact
            }
        return new TuneResult(points, [], "/synthetic", 1L << 32, true, 10.0, DateTimeOffset.UnixEpoch, "synthetic machine");
    }

    [Fact]
    public void Throughput_saturating_at_16_readers_recommends_16_readers_and_threads()
    {
        var c = TuneAdvisor.Recommend(Device(100e-6, 1e9, queueDepth: 16), 24 * 1024);
        Assert.Equal(16, c.Readers);
        Assert.Equal(16, c.Threads);
        Assert.Equal(24 * 1024, c.BundleReadBytes);
    }

    [Fact]
    public void Readers_within_five_percent_of_the_best_are_enough()
    {
        // 32 readers are 3 % slower than 64: the fewer threads win.
        var r = Device(100e-6, 1e9, queueDepth: 64);
        var points = r.Random.Select(p => p.Parallelism switch
        {
            32 => p with { Reads = (long)(r.At(p.ReadBytes, 64)!.Reads * 0.97) },
            _ => p,
        }).ToList();
        var c = TuneAdvisor.Recommend(r with { Random = points }, 24 * 1024);
        Assert.Equal(32, c.Readers);
    }

    [Fact]
    public void Bundle_sizes_are_rounded_up_to_whole_pages_for_O_DIRECT()
    {
        var c = TuneAdvisor.Recommend(Device(100e-6, 1e9, 16), 3 * 288 * 4); // stories260K F32: 3456 bytes
        Assert.Equal(4096, c.BundleReadBytes);
        Assert.Equal(3456, c.BundleBytes);
    }

    [Fact]
    public void Coalesce_gap_is_per_read_overhead_times_streaming_rate_for_a_linear_device()
    {
        // latency(s) = a + s / B, so latency(2b + g) <= 2 latency(b)  <=>  g <= a * B = 100 us * 1 GB/s = 100000 bytes,
        // rounded down to whole pages: 24 pages.
        var curve = TuneAdvisor.Curve(Device(100e-6, 1e9, 16), 16);
        Assert.Equal(24 * 4096, TuneAdvisor.CoalesceGap(curve, 24 * 1024, 1 << 20));
        // A device with a tenth of the overhead is worth only a tenth of the gap (10000 bytes -> 2 pages).
        var fast = TuneAdvisor.Curve(Device(10e-6, 1e9, 16), 16);
        Assert.Equal(2 * 4096, TuneAdvisor.CoalesceGap(fast, 24 * 1024, 1 << 20));
    }

    [Fact]
    public void Coalesce_gap_fits_max_read_and_is_zero_when_two_bundles_do_not()
    {
        var curve = TuneAdvisor.Curve(Device(100e-6, 1e9, 16), 16);
        Assert.Equal(64 * 1024 - 48 * 1024, TuneAdvisor.CoalesceGap(curve, 24 * 1024, 64 * 1024));
        Assert.Equal(0, TuneAdvisor.CoalesceGap(curve, 24 * 1024, 32 * 1024));
    }

    [Fact]
    public void Latency_curve_ignores_noise_dips_and_interpolates_between_sizes()
    {
        var curve = new LatencyCurve([(4096, 100e-6), (8192, 90e-6), (16384, 140e-6)], 1);
        Assert.Equal(100e-6, curve.Latency(8192), 12); // a larger read never counts as faster
        Assert.Equal(120e-6, curve.Latency(12288), 12);
        Assert.Equal(180e-6, curve.Latency(24576), 12); // beyond the largest: the last segment's slope
        Assert.Equal(100e-6, curve.Latency(1024), 12);
    }

    [Fact]
    public void Max_read_is_where_larger_reads_stop_paying()
    {
        // Throughput grows until 256 KiB, then within 2 %.
        var perSize = new (int, double)[] { (4096, 100), (65536, 900), (262144, 1960), (524288, 1990), (1 << 20, 2000) };
        Assert.Equal(262144, TuneAdvisor.MaxRead(perSize, 24 * 1024));
        // Never below one bundle, even when small reads are as fast.
        var flat = new (int, double)[] { (4096, 2000), (65536, 2000), (1 << 20, 2000) };
        Assert.Equal(65536, TuneAdvisor.MaxRead(flat, 24 * 1024));
        Assert.Equal(2 << 20, TuneAdvisor.MaxRead(flat, 2 << 20));
    }

    [Fact]
    public void Recommendation_on_a_synthetic_device_is_consistent()
    {
        var c = TuneAdvisor.Recommend(Device(100e-6, 1e9, 16), 24 * 1024);
        Assert.Equal(1 << 20, c.MaxRead); // 512 KiB reads still give only 92 % of 1 MiB's throughput
        Assert.Equal(24 * 4096, c.CoalesceGap);
        Assert.True(c.CoalescedLatencySeconds <= 2 * c.BundleLatencySeconds);
    }

    [Fact]
    public void Written_profile_parses_and_round_trips_the_chosen_values()
    {
        using var dir = new TempDir();
        var result = Device(100e-6, 1e9, 16);
        var c = TuneAdvisor.Recommend(result, 24 * 1024) with { CoalesceGap = 40 * 1024 + 4096, MaxRead = 256 * 1024 };
        var path = Path.Combine(dir.Path, "sub", "tuned.conf");
        DiskTuner.WriteProfile(path, result, c, "test bundle");
        var s = RuntimeSettings.From(RuntimeSettings.Compose([path], []));
        Assert.Equal(16, s.Loader.Readers);
        Assert.Equal(16, s.Loader.Threads);
        Assert.Equal(44 * 1024, s.Loader.CoalesceGap);
        Assert.Equal(256 * 1024, s.Loader.MaxRead);
        var text = File.ReadAllText(path);
        Assert.Contains("synthetic machine", text);
        Assert.Contains("1970-01-01", text);
        Assert.Contains("coalesce-gap = 44KiB", text);
    }

    [Fact]
    public void Markdown_table_has_a_row_per_size_and_a_column_per_reader_count()
    {
        var md = TuneReport.Markdown(Device(100e-6, 1e9, 16, sizes: [4096, 1 << 20], readers: [1, 16]));
        var lines = md.Split('\n');
        Assert.Contains("| read size | 1 | 16 |", lines);
        // 4 KiB at 1 reader: 1 / (100 us + 4.096 us) = 9607 IOPS = 39.3 MB/s.
        Assert.Contains(lines, l => l.StartsWith("| 4 KiB | 39.3 |", StringComparison.Ordinal));
        // 1 MiB at 1 reader: 1 / (100 us + 1048.6 us) = 871 IOPS.
        Assert.Contains(lines, l => l.StartsWith("| 1 MiB | 871 |", StringComparison.Ordinal));
    }
}
