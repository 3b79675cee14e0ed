using Xunit;

namespace FlashLm.Tests;

/// <summary>The driver end to end: stdout must equal run.c's, errors must be one clear line.</summary>
public class CliTests
{
    private static string Greedy => SharedModels.Reference("greedy_once_upon_a_time_n64.stdout.txt");

    [RequiresSharedModelsFact]
    public void Generate_from_llama2c_bin_prints_run_c_output()
    {
        var r = CliRunner.Run("generate", "--model", SharedModels.StoriesBin, "--tokenizer", SharedModels.Tok512,
            "--prompt", "Once upon a time", "-n", "64", "--temperature", "0");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(File.ReadAllBytes(Greedy), r.Stdout);
    }

    [RequiresSharedModelsFact]
    public void Generate_from_gguf_with_its_own_tokenizer_prints_run_c_output()
    {
        var r = CliRunner.Run("generate", "--model", SharedModels.StoriesGguf, "--prompt", "Once upon a time", "-n", "64", "--temperature", "0");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(File.ReadAllBytes(Greedy), r.Stdout);
    }

    [RequiresSharedModelsFact]
    public void Convert_gguf_then_generate_from_the_flash_layout_prints_run_c_output()
    {
        using var dir = new TempDir();
        var layout = dir.File("gguf-flash");
        var c = CliRunner.Run("convert", SharedModels.StoriesGguf, "--out", layout);
        Assert.True(c.ExitCode == 0, c.Stderr);
        var r = CliRunner.Run("generate", "--model", layout, "--prompt", "Once upon a time", "-n", "64", "--temperature", "0");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(File.ReadAllBytes(Greedy), r.Stdout);
    }

    [RequiresSharedModelsFact]
    public void Convert_then_generate_from_the_flash_layout_prints_the_same()
    {
        using var dir = new TempDir();
        var layout = dir.File("stories-flash");
        var c = CliRunner.Run("convert", SharedModels.StoriesBin, "--tokenizer", SharedModels.Tok512, "--out", layout);
        Assert.True(c.ExitCode == 0, c.Stderr);
        var r = CliRunner.Run("generate", "--model", layout, "--prompt", "Once upon a time", "-n", "64", "--temperature", "0");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(File.ReadAllBytes(Greedy), r.Stdout);
    }

    [Fact]
    public void Missing_model_fails_with_one_clear_line_and_exit_code_1()
    {
        var r = CliRunner.Run("generate", "--model", "/nonexistent/model.bin", "-n", "4");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("/nonexistent/model.bin", r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr); // no stack trace
    }

    [Fact]
    public void Prompt_longer_than_the_requested_positions_is_refused()
    {
        using var dir = new TempDir();
        var model = SyntheticModels.WriteGguf(dir.File("synthetic.gguf"), SyntheticModels.StoriesShape);
        var r = CliRunner.Run("generate", "--model", model,
            "--prompt", "Once upon a time there was a very long prompt", "-n", "4", "--temperature", "0");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("prompt", r.Stderr);
    }
}

/// <summary>The driver's flash mode: same stdout as dense, stats file, budget refusal.</summary>
public class CliFlashTests
{
    [RequiresSharedModelsFact]
    public void Flash_mode_prints_run_c_output_and_writes_per_token_stats()
    {
        using var dir = new TempDir();
        var layout = dir.File("stories-flash");
        Assert.Equal(0, CliRunner.Run("convert", SharedModels.StoriesBin, "--tokenizer", SharedModels.Tok512, "--out", layout).ExitCode);
        var statsFile = dir.File("stats.jsonl");
        var r = CliRunner.Run("generate", "--model", layout, "--mode", "flash", "--prompt", "Once upon a time", "-n", "64", "--temperature", "0",
            "--stats", statsFile, "--set", "loader.readers=4");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(File.ReadAllBytes(SharedModels.Reference("greedy_once_upon_a_time_n64.stdout.txt")), r.Stdout);
        var lines = File.ReadAllLines(statsFile);
        Assert.Equal(64, lines.Length);
        using var first = System.Text.Json.JsonDocument.Parse(lines[0]);
        foreach (var key in new[] { "token_index", "bytes_read", "reads", "neurons_active", "neurons_loaded", "neurons_evicted", "cached_rows",
                     "io_ms", "mem_ms", "compute_ms", "wait_ms", "overlap_ms", "dram_bytes" })
            Assert.True(first.RootElement.TryGetProperty(key, out _), $"missing {key}");
        Assert.True(first.RootElement.GetProperty("bytes_read").GetInt64() > 0);
        Assert.Contains("achieved tok/s", r.Stderr);
    }

    [Fact]
    public void Budget_below_the_minimum_fails_at_start_naming_the_minimum()
    {
        using var dir = new TempDir();
        var layout = SyntheticModels.WriteLayout(dir.File("synthetic.flash"), SyntheticModels.StoriesShape);
        var r = CliRunner.Run("generate", "--model", layout, "--mode", "flash", "-n", "16", "--dram-budget", "64KiB");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("below the minimum", r.Stderr);
        Assert.Empty(r.Stdout);
    }

    [Theory]
    [InlineData("window=-1", "flashlm.window")]
    [InlineData("loader.readers=lots", "flashlm.loader.readers")]
    [InlineData("loader.max-read=1000", "flashlm.loader.max-read")]
    [InlineData("predictor=psychic", "flashlm.predictor")]
    public void Bad_settings_name_the_key(string setting, string key)
    {
        var r = CliRunner.Run("generate", "--mode", "flash", "-n", "8", "--set", setting);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains(key, r.Stderr);
    }
}
