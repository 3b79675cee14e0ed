using FlashLm.Runtime.Config;
using Xunit;

namespace FlashLm.Tests.Cli;

/// <summary>Keys under flashlm that reference.conf does not define are refused, naming the nearest defined key.</summary>
public class SettingsKeyTests
{
    private static string RepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Pipeline.sln"))) return d.FullName;
        throw new InvalidOperationException("repository root not found above the test assembly");
    }

    [Theory]
    [InlineData("loader.reader=4", "flashlm.loader.reader", "flashlm.loader.readers")]
    [InlineData("flashlm.windw=3", "flashlm.windw", "flashlm.window")]
    [InlineData("predicter=all", "flashlm.predicter", "flashlm.predictor")]
    [InlineData("loader.max_read=1MiB", "flashlm.loader.max_read", "flashlm.loader.max-read")]
    [InlineData("dram-budjet=64MiB", "flashlm.dram-budjet", "flashlm.dram-budget")]
    public void An_unknown_set_key_is_refused_naming_the_nearest_key(string set, string key, string nearest)
    {
        var e = Assert.Throws<SettingsException>(() => RuntimeSettings.Compose([], [set]));
        Assert.Equal(key, e.Key);
        Assert.Contains("unknown key", e.Message);
        Assert.Contains($"'{nearest}'", e.Message);
    }

    [Fact]
    public void An_unknown_key_in_a_profile_is_refused_naming_the_file_and_the_nearest_key()
    {
        using var dir = new TempDir();
        var f = dir.File("typo.conf");
        File.WriteAllText(f, "flashlm {\n  window = 3\n  loader { readers = 4, coalesce-gapp = 8KiB }\n}\n");
        var e = Assert.Throws<SettingsException>(() => RuntimeSettings.Compose([f], []));
        Assert.Equal("flashlm.loader.coalesce-gapp", e.Key);
        Assert.Contains(f, e.Message);
        Assert.Contains("'flashlm.loader.coalesce-gap'", e.Message);
    }

    [Fact]
    public void A_value_where_a_section_belongs_and_the_reverse_are_refused()
    {
        var e = Assert.Throws<SettingsException>(() => RuntimeSettings.Compose([], ["loader=4"]));
        Assert.Equal("flashlm.loader", e.Key);
        Assert.Contains("section", e.Message);
        using var dir = new TempDir();
        var f = dir.File("nested.conf");
        File.WriteAllText(f, "flashlm.window { size = 3 }\n");
        e = Assert.Throws<SettingsException>(() => RuntimeSettings.Compose([f], []));
        Assert.Equal("flashlm.window", e.Key);
    }

    [Fact]
    public void Every_key_reference_conf_defines_is_accepted_and_keys_outside_flashlm_pass_through()
    {
        // Setting each reference key to its own default must compose and validate: the check is driven by reference.conf.
        var reference = RuntimeSettings.Reference;
        var sets = new List<string>();
        foreach (var key in new[] { "dram-budget", "window", "predictor", "lookahead", "sparsity", "max-sessions", "session-overflow",
                     "loader.readers", "loader.threads", "loader.coalesce-gap", "loader.max-read", "loader.direct-io", "loader.max-attempts" })
            sets.Add($"{key}={reference.GetString("flashlm." + key)}");
        var s = RuntimeSettings.From(RuntimeSettings.Compose([], sets));
        Assert.Equal(RuntimeSettings.From(reference), s);
        using var dir = new TempDir();
        var f = dir.File("akka.conf");
        File.WriteAllText(f, "akka.loglevel = ERROR\nflashlm.io-dispatcher.throughput = 2\n");
        Assert.Equal("ERROR", RuntimeSettings.Compose([f], []).GetString("akka.loglevel"));
    }

    [Theory]
    [InlineData("window=-1", "flashlm.window", "-1")]
    [InlineData("window=five", "flashlm.window", "five")]
    [InlineData("loader.readers=0", "flashlm.loader.readers", "0")]
    [InlineData("loader.readers=2.5", "flashlm.loader.readers", "2.5")]
    [InlineData("loader.coalesce-gap=-4KiB", "flashlm.loader.coalesce-gap", "-4KiB")]
    [InlineData("dram-budget=12 apples", "flashlm.dram-budget", "12 apples")]
    [InlineData("max-sessions=-2", "flashlm.max-sessions", "-2")]
    [InlineData("loader.direct-io=sometimes", "flashlm.loader.direct-io", "sometimes")]
    [InlineData("session-overflow=queue", "flashlm.session-overflow", "queue")]
    public void A_bad_value_names_the_key_and_the_value(string set, string key, string value)
    {
        var e = Assert.Throws<SettingsException>(() => RuntimeSettings.From(RuntimeSettings.Compose([], [set])));
        Assert.Equal(key, e.Key);
        Assert.Contains(key, e.Message);
        Assert.Contains(value, e.Message);
    }

    [Fact]
    public void Profiles_hold_only_what_they_change_and_all_of_them_load()
    {
        var reference = RuntimeSettings.From(RuntimeSettings.Reference);
        foreach (var f in Directory.GetFiles(Path.Combine(RepoRoot(), "hocon"), "*.conf"))
        {
            var s = RuntimeSettings.From(RuntimeSettings.Compose([f], []));
            if (Path.GetFileName(f) == "default.conf") Assert.Equal(reference, s);
            // A key a profile sets to the reference's own value restates the default: defaults live in reference.conf only.
            var parsed = Akka.Configuration.ConfigurationFactory.ParseString(File.ReadAllText(f));
            foreach (var key in new[] { "dram-budget", "window", "predictor", "lookahead", "sparsity", "loader.readers", "loader.threads",
                         "loader.coalesce-gap", "loader.max-read", "loader.direct-io" })
            {
                var path = "flashlm." + key;
                if (parsed.HasPath(path))
                    Assert.False(parsed.GetString(path) == RuntimeSettings.Reference.GetString(path), $"{f} restates the default {path}");
            }
        }
    }

    [Fact]
    public void The_cli_refuses_a_typo_in_set_with_one_line_and_exit_code_1()
    {
        var r = CliRunner.Run("generate", "--mode", "flash", "--set", "loader.reader=4", "-n", "4");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("flashlm.loader.reader", r.Stderr);
        Assert.Contains("flashlm.loader.readers", r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr);
    }
}
