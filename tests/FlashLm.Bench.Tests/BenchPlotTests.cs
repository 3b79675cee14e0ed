using System.Buffers.Binary;
using FlashLm.Bench;
using Xunit;

namespace FlashLm.Tests;

/// <summary>The bench figure: a PNG of the chosen size for a few rungs, and clear errors for bad input.</summary>
public class BenchPlotTests
{
    private static readonly BenchPlotBar[] Ladder =
    [
        new("naive", 9800, 310, 120),
        new("hybrid", 5200, 300, 150),
        new("predictor", 2100, 280, 260),
        new("window", 1100, 290, 180),
        new("bundling", 620, 285, 110),
        new("lookahead", 340, 270, 45),
    ];

    public static TheoryData<int, bool> Counts => new() { { 3, false }, { 4, true }, { 5, false }, { 6, true } };

    [Theory]
    [MemberData(nameof(Counts))]
    public void Writes_a_png_of_the_chosen_size(int count, bool withLlamaCpp)
    {
        using var dir = new TempDir();
        string path = dir.File("bench.png");
        var bars = Ladder.Take(count).ToList();
        if (withLlamaCpp) bars[^1] = new("llama.cpp", 7400, 0, 0); // a total without breakdown

        BenchPlot.Write(path, bars, $"bench: {count} bars");

        var png = File.ReadAllBytes(path);
        Assert.True(png.Length > 33, $"only {png.Length} bytes");
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A }, png[..8]);
        // The first chunk is IHDR: length 13, then width and height as big-endian 32-bit integers.
        Assert.Equal(13u, BinaryPrimitives.ReadUInt32BigEndian(png.AsSpan(8)));
        Assert.Equal("IHDR", System.Text.Encoding.ASCII.GetString(png, 12, 4));
        Assert.Equal(1000u, BinaryPrimitives.ReadUInt32BigEndian(png.AsSpan(16)));
        Assert.Equal(600u, BinaryPrimitives.ReadUInt32BigEndian(png.AsSpan(20)));
    }

    [Fact]
    public void Compute_and_memory_above_the_total_still_render()
    {
        // Means of compute and memory time can exceed a median total: no waiting segment, no error.
        using var dir = new TempDir();
        string path = dir.File("over.png");
        BenchPlot.Write(path, [new("lookahead", 300, 280, 45), new("window", 0, 0, 0), new("bundling", 500, 100, 50)], "");
        Assert.True(new FileInfo(path).Length > 0);
    }

    [Fact]
    public void The_font_is_embedded()
    {
        // Without it the figure has no text on a machine without system fonts (SkiaSharp's Linux build without dependencies).
        Assert.Contains("FlashLm.Bench.Fonts.DejaVuSans.ttf", typeof(BenchPlot).Assembly.GetManifestResourceNames());
    }

    public static TheoryData<BenchPlotBar[], string[]> BadBars => new()
    {
        { [], ["empty"] },
        { [new("naive", -1, 0, 0)], ["naive", "MsPerToken", "negative"] },
        { [new("hybrid", 100, double.NaN, 0)], ["hybrid", "ComputeMs", "NaN"] },
        { [new("naive", 100, 10, 5), new("window", 100, 10, -5)], ["window", "MemMs", "negative"] },
        { [new("window", double.PositiveInfinity, 10, 5)], ["window", "MsPerToken", "infinite"] },
        { [new(" ", 100, 10, 5)], ["bar 0", "no name"] },
    };

    [Theory]
    [MemberData(nameof(BadBars))]
    public void Bad_bars_throw_naming_the_problem(BenchPlotBar[] bars, string[] named)
    {
        using var dir = new TempDir();
        string path = dir.File("bad.png");
        var e = Assert.Throws<ArgumentException>(() => BenchPlot.Write(path, bars, "bad"));
        foreach (var word in named) Assert.Contains(word, e.Message);
        Assert.False(File.Exists(path));
    }

    [Fact]
    public void A_missing_folder_throws_naming_the_path()
    {
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "no-such-folder", "bench.png");
        var e = Assert.Throws<ArgumentException>(() => BenchPlot.Write(path, Ladder, "bench"));
        Assert.Contains(path, e.Message);
        Assert.Contains("does not exist", e.Message);
    }

    [Theory]
    [InlineData("")]
    [InlineData("   ")]
    public void An_empty_path_throws(string path)
    {
        var e = Assert.Throws<ArgumentException>(() => BenchPlot.Write(path, Ladder, "bench"));
        Assert.Contains("path", e.Message);
    }

    [Fact]
    public void A_folder_as_the_path_throws()
    {
        using var dir = new TempDir();
        var e = Assert.Throws<ArgumentException>(() => BenchPlot.Write(dir.Path, Ladder, "bench"));
        Assert.Contains(dir.Path, e.Message);
    }
}
