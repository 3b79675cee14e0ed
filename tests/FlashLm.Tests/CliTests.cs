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

    [RequiresSharedModelsFact]
    public void Prompt_longer_than_the_requested_positions_is_refused()
    {
        var r = CliRunner.Run("generate", "--model", SharedModels.StoriesBin, "--tokenizer", SharedModels.Tok512,
            "--prompt", "Once upon a time there was a very long prompt", "-n", "4", "--temperature", "0");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("prompt", r.Stderr);
    }
}
