using FlashLm.Runtime.Config;
using Xunit;

namespace FlashLm.Tests.Tuning;

/// <summary>`flashlm tune`: argument errors, and one tiny real measurement.</summary>
public sealed class TuneCommandTests
{
    private static void AssertOneLineError(CliRunner.Result r, string expected)
    {
        Assert.Equal(1, r.ExitCode);
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, r.Stderr);
        Assert.StartsWith("flashlm: error: ", lines[0]);
        Assert.Contains(expected, lines[0]);
        Assert.Empty(r.Stdout);
    }

    [Fact]
    public void Bad_size_is_one_clear_error()
    {
        using var dir = new TempDir();
        AssertOneLineError(CliRunner.Run("tune", "--size", "lots", "--out", dir.File("t.conf")), "--size: 'lots' is not a size");
        Assert.Empty(Directory.GetFiles(dir.Path));
    }

    [Fact]
    public void Test_file_too_small_for_the_reads_is_refused_before_writing_it()
    {
        using var dir = new TempDir();
        AssertOneLineError(CliRunner.Run("tune", "--size", "1MiB", "--out", dir.File("t.conf")), "at least 2 MiB");
        Assert.Empty(Directory.GetFiles(dir.Path));
    }

    [Fact]
    public void Missing_file_is_one_clear_error()
    {
        using var dir = new TempDir();
        AssertOneLineError(CliRunner.Run("tune", "--file", dir.File("nope.bin"), "--out", dir.File("t.conf")), "nope.bin: no such file");
    }

    [Fact]
    public void Size_with_an_existing_file_is_refused()
    {
        using var dir = new TempDir();
        File.WriteAllBytes(dir.File("data.bin"), new byte[1 << 20]);
        AssertOneLineError(CliRunner.Run("tune", "--file", dir.File("data.bin"), "--size", "64MiB", "--out", dir.File("t.conf")), "cannot be combined with --file");
    }

    [Fact]
    public void Bad_sizes_readers_model_and_seconds_are_one_clear_error_each()
    {
        using var dir = new TempDir();
        var outFile = dir.File("t.conf");
        AssertOneLineError(CliRunner.Run("tune", "--sizes", "4KiB,5000", "--out", outFile), "5000 is not a positive multiple of 4096");
        AssertOneLineError(CliRunner.Run("tune", "--readers", "1,x", "--out", outFile), "--readers: 'x' is not an integer");
        AssertOneLineError(CliRunner.Run("tune", "--readers", "0", "--out", outFile), "reader count 0 is outside 1..1024");
        AssertOneLineError(CliRunner.Run("tune", "--model", dir.Path, "--out", outFile), "needs a flash-layout folder");
        AssertOneLineError(CliRunner.Run("tune", "--seconds-per-point", "0", "--out", outFile), "seconds per point 0");
        Assert.Empty(Directory.GetFiles(dir.Path));
    }

    [Fact]
    public void Quick_run_prints_the_tables_writes_a_valid_profile_and_removes_its_test_file()
    {
        using var dir = new TempDir();
        var outFile = Path.Combine(dir.Path, "hocon", "tuned.conf");
        var r = CliRunner.Run("tune", "--quick", "--size", "64MiB", "--sizes", "4KiB,64KiB", "--readers", "1,2",
            "--seconds-per-point", "0.05", "--out", outFile);
        Assert.True(r.ExitCode == 0, r.Stderr);
        var lines = System.Text.Encoding.UTF8.GetString(r.Stdout).Split('\n');
        Assert.Equal(3, lines.Count(l => l == "| read size | 1 | 2 |")); // MB/s, IOPS, latency
        Assert.Equal(3, lines.Count(l => l.StartsWith("| 4 KiB | ", StringComparison.Ordinal)));
        Assert.Equal(3, lines.Count(l => l.StartsWith("| 64 KiB | ", StringComparison.Ordinal)));
        Assert.Contains("| readers | MB/s | IOPS |", lines);
        var mbps = lines.First(l => l.StartsWith("| 64 KiB | ", StringComparison.Ordinal)).Split('|', StringSplitOptions.TrimEntries);
        Assert.True(double.Parse(mbps[2], System.Globalization.CultureInfo.InvariantCulture) > 0, lines[0]);
        Assert.Contains("measuring 5 points x 0.05 s", r.Stderr);

        var s = RuntimeSettings.From(RuntimeSettings.Compose([outFile], []));
        Assert.Contains(s.Loader.Readers, new[] { 1, 2 });
        Assert.Equal(s.Loader.Readers, s.Loader.Threads);
        Assert.Equal(64 * 1024, s.Loader.MaxRead); // the only measured size of at least one 24 KiB bundle
        Assert.Equal(0, s.Loader.CoalesceGap % 4096);
        Assert.True(s.Loader.CoalesceGap <= 64 * 1024 - 48 * 1024);
        Assert.Equal(["tuned.conf"], Directory.GetFiles(Path.Combine(dir.Path, "hocon")).Select(Path.GetFileName));
    }
}
