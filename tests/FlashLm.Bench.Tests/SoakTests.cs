using System.Text.Json;
using FlashLm.Bench;
using Xunit;

namespace FlashLm.Tests;

/// <summary>flashlm-bench soak: the slope it reports, and a short soak on a synthetic model.</summary>
public class SoakTests(SyntheticLayoutFixture layout) : IClassFixture<SyntheticLayoutFixture>
{
    [Fact]
    public void Slope_is_the_least_squares_line_through_the_points()
    {
        // Points on y = 3x + 2 with noise that sums to zero and is uncorrelated with x: the fit recovers the line.
        var points = new (double X, double Y)[] { (0, 2 + 1), (1, 5 - 1), (2, 8 - 1), (3, 11 + 1) };
        Assert.Equal(3.0, SoakCommand.Slope(points), 9);
        Assert.Equal(0.0, SoakCommand.Slope([(5, 1), (5, 9)])); // one distinct x: no slope to speak of
    }

    [Fact]
    public void Trend_skips_the_warm_up_tenth_and_reports_bytes_per_thousand_positions()
    {
        // RSS grows 4 KiB per position during the first 10 % (warm-up), then stays flat.
        var samples = Enumerable.Range(0, 101).Select(i => new SoakCommand.SoakSample(i, i * 10, i <= 10 ? i * 40_960L : 409_600, 0, 0, 1)).ToList();
        var rss = SoakCommand.TrendOf(samples, s => s.RssBytes, 1000);
        Assert.Equal(0.0, rss.BytesPer1000Positions, 6);
        Assert.Equal(409_600, rss.Max);
        Assert.Equal(91, rss.Samples);
    }

    [Fact]
    public void RSS_is_read_from_proc()
    {
        if (!File.Exists("/proc/self/status")) return; // not Linux: the soak reports 0 there
        long rss = SoakCommand.RssBytes();
        Assert.True(rss > Environment.WorkingSet / 4 && rss < Environment.WorkingSet * 4, $"VmRSS {rss}, working set {Environment.WorkingSet}");
    }

    [Fact]
    public void A_short_soak_runs_its_positions_over_random_sessions_and_writes_its_samples()
    {
        using var dir = new TempDir();
        var json = dir.File("soak.json");
        var r = BenchTests.Bench("soak", "--model", layout.Folder, "--tokens", "300", "--sessions", "2", "--positions", "32", "--cap", "1GiB",
            "--sample-ms", "20", "--seed", "7", "--json", json);
        Assert.True(r.ExitCode == 0, r.Stderr);
        var stdout = System.Text.Encoding.UTF8.GetString(r.Stdout);
        Assert.Contains("KiB per 1000 positions", stdout);
        var report = JsonSerializer.Deserialize<SoakCommand.SoakReport>(File.ReadAllText(json), BenchJson.Options)!;
        Assert.InRange(report.Positions, 300, 300 + 2 * 32);
        Assert.Equal(0, report.Sessions.Failed);
        Assert.True(report.Sessions.Started >= 2, $"{report.Sessions.Started} sessions started");
        Assert.True(report.Samples.Count >= 2);
        Assert.All(report.Samples, s => Assert.True(s.RssBytes > 0));
        Assert.True(report.Rss.Max < report.CapBytes);
        // With no session open the runtime keeps its neuron cache and staging buffers, no more than it held while running.
        Assert.InRange(report.IdleNativeAfter, report.IdleNativeBefore, report.Native.Max);
    }
}
