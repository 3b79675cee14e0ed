using FlashLm.Runtime.Config;
using Xunit;

namespace FlashLm.Tests;

public class RuntimeSettingsTests
{
    private static string RepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Pipeline.sln"))) return d.FullName;
        throw new InvalidOperationException("repository root not found above the test assembly");
    }

    [Fact]
    public void Reference_conf_gives_the_documented_defaults()
    {
        var s = RuntimeSettings.From(RuntimeSettings.Reference);
        Assert.Null(s.DramBudget);
        Assert.Equal(5, s.Window);
        Assert.Equal(PredictorKind.Auto, s.Predictor);
        Assert.Equal(32, s.Loader.Readers);
        Assert.Equal(32 * 1024, s.Loader.CoalesceGap);
        Assert.Equal(1 << 20, s.Loader.MaxRead);
        Assert.True(s.Loader.DirectIo);
    }

    [Fact]
    public void Every_profile_under_hocon_parses_and_overrides_the_reference()
    {
        var files = Directory.GetFiles(Path.Combine(RepoRoot(), "hocon"), "*.conf");
        Assert.Contains(files, f => f.EndsWith("low-memory.conf"));
        foreach (var f in files) RuntimeSettings.From(RuntimeSettings.Compose([f], []));
        var low = RuntimeSettings.From(RuntimeSettings.Compose([Path.Combine(RepoRoot(), "hocon", "low-memory.conf")], []));
        Assert.Equal(256L << 20, low.DramBudget);
        Assert.Equal(8, low.Loader.Readers);
        var fast = RuntimeSettings.From(RuntimeSettings.Compose([Path.Combine(RepoRoot(), "hocon", "fast-ssd.conf")], []));
        Assert.Equal(64, fast.Loader.Readers);
    }

    [Fact]
    public void Set_overrides_win_over_files()
    {
        var s = RuntimeSettings.From(RuntimeSettings.Compose([Path.Combine(RepoRoot(), "hocon", "low-memory.conf")], ["window=7", "flashlm.loader.readers=3", "dram-budget=1.5GiB"]));
        Assert.Equal(7, s.Window);
        Assert.Equal(3, s.Loader.Readers);
        Assert.Equal((long)(1.5 * (1L << 30)), s.DramBudget);
    }

    [Theory]
    [InlineData("window=-3", "flashlm.window")]
    [InlineData("dram-budget=lots", "flashlm.dram-budget")]
    [InlineData("loader.coalesce-gap=7 parsecs", "flashlm.loader.coalesce-gap")]
    [InlineData("loader.max-read=5000", "flashlm.loader.max-read")]
    [InlineData("lookahead=maybe", "flashlm.lookahead")]
    [InlineData("sparsity=1.5", "flashlm.sparsity")]
    public void Bad_values_name_their_key(string set, string key)
    {
        var e = Assert.Throws<SettingsException>(() => RuntimeSettings.From(RuntimeSettings.Compose([], [set])));
        Assert.Equal(key, e.Key);
        Assert.Contains(key, e.Message);
    }

    [Fact]
    public void A_config_file_that_is_not_hocon_names_the_file()
    {
        using var dir = new TempDir();
        var f = dir.File("bad.conf");
        File.WriteAllText(f, "flashlm { window = 5 }}} = = {");
        var e = Assert.Throws<SettingsException>(() => RuntimeSettings.Compose([f], []));
        Assert.Contains(f, e.Message);
        Assert.Throws<SettingsException>(() => RuntimeSettings.Compose([dir.File("missing.conf")], []));
    }

    [Theory]
    [InlineData("4096", 4096L)]
    [InlineData("32KiB", 32L << 10)]
    [InlineData("512MiB", 512L << 20)]
    [InlineData("4GiB", 4L << 30)]
    [InlineData("1.5G", 3L << 29)]
    public void Sizes_parse_with_binary_units(string text, long bytes)
    {
        Assert.True(ByteSize.TryParse(text, out var v));
        Assert.Equal(bytes, v);
    }
}
