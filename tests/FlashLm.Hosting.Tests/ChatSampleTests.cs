using System.Diagnostics;
using Xunit;

namespace FlashLm.Tests.Cli;

/// <summary>samples/FlashLm.Chat: a failed start is one clear line and exit code 1; a line too long for the context is refused, the chat goes on.</summary>
public class ChatSampleTests
{
    private sealed record Result(int ExitCode, string Stdout, string Stderr);

    /// <summary>The sample's dll, built beside the tests (same configuration and target framework).</summary>
    private static string ChatDll()
    {
        var bin = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)); // tests/FlashLm.Tests/bin/<Configuration>/<tfm>
        string tfm = bin.Name, configuration = bin.Parent!.Name;
        for (var d = bin; d is not null; d = d.Parent)
        {
            var dll = Path.Combine(d.FullName, "samples", "FlashLm.Chat", "bin", configuration, tfm, "FlashLm.Chat.dll");
            if (File.Exists(dll)) return dll;
        }
        throw new FileNotFoundException($"FlashLm.Chat.dll ({configuration}/{tfm}) not found above {bin.FullName}: build the tests, which build the sample");
    }

    private static Result Run(TempDir dir, string stdin, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(ChatDll());
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["FLASHLM_CACHE"] = dir.Sub("cache");
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        p.StandardInput.Write(stdin);
        p.StandardInput.Close();
        if (!p.WaitForExit(120_000))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail("the chat did not finish in 2 minutes");
        }
        return new Result(p.ExitCode, stdout.Result, stderr.Result);
    }

    private static void OneLine(Result r, string expected)
    {
        Assert.Equal(1, r.ExitCode);
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => !l.Contains("writing the synthetic tiny model")).ToArray();
        var line = Assert.Single(lines);
        Assert.StartsWith("flashlm-chat: error: ", line);
        Assert.Contains(expected, line);
    }

    [Fact]
    public void A_missing_model_is_one_line_and_exit_code_1()
    {
        using var dir = new TempDir();
        OneLine(Run(dir, "hi\n", "--model", dir.File("nope.gguf")), "nope.gguf");
    }

    [Fact]
    public void A_corrupt_model_is_one_line_and_exit_code_1()
    {
        using var dir = new TempDir();
        var bad = dir.File("bad.gguf");
        File.WriteAllBytes(bad, [.. "GGUF"u8, 3, 0, 0, 0, .. new byte[64]]);
        OneLine(Run(dir, "hi\n", "--model", bad), "bad.gguf");
    }

    [Fact]
    public void A_budget_below_the_minimum_is_one_line_and_exit_code_1()
    {
        using var dir = new TempDir();
        OneLine(Run(dir, "hi\n", "--budget", "1KiB"), "DRAM budget");
    }

    [Fact]
    public void An_unknown_setting_is_one_line_naming_the_nearest_key()
    {
        using var dir = new TempDir();
        OneLine(Run(dir, "hi\n", "--set", "loader.reader=4"), "flashlm.loader.readers");
    }

    [Fact]
    public void A_line_longer_than_the_context_is_refused_and_the_chat_goes_on()
    {
        using var dir = new TempDir();
        var longLine = string.Join(' ', Enumerable.Repeat("word", 8000));
        var r = Run(dir, $"hello\n{longLine}\nagain\n", "--max-tokens", "4", "--seed", "1");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("more than the context's 256; line skipped", r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr);
        Assert.Contains("-- 2 turns, 8 tokens generated", r.Stdout);
    }
}
