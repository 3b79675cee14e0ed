using System.Text;
using FlashLm.Cli.Commands;
using FlashLm.Formats;
using Xunit;

namespace FlashLm.Tests;

/// <summary>`flashlm tokenize`: the ids of llama.cpp's tokenizer suite by the command, the piece listing, bad arguments and files.</summary>
public sealed class TokenizeCommandTests
{
    [RequiresSharedTokenizersTheory]
    [MemberData(nameof(SharedTokenizers.FamilyData), MemberType = typeof(SharedTokenizers))]
    public void The_command_prints_the_reference_ids_for_every_test_string(string family)
    {
        var tok = GgufTokenizer.Read(SharedTokenizers.Gguf(family));
        var cases = SharedTokenizers.Cases(family);
        var wrong = new List<string>();
        foreach (var (text, want) in cases)
        {
            var output = new MemoryStream();
            TokenizeCommand.Write(tok, text, idsOnly: true, bos: false, parseSpecial: false, output);
            var line = Encoding.UTF8.GetString(output.ToArray());
            if (line != string.Join(' ', want) + "\n") wrong.Add($"{System.Text.Json.JsonSerializer.Serialize(text)} -> {line.TrimEnd()}");
        }
        Assert.True(wrong.Count == 0, $"{family}: {wrong.Count} of {cases.Length} differ:\n{string.Join('\n', wrong)}");

        // The whole driver, once per family, on the longest test string given as a file.
        var (longest, ids) = cases.MaxBy(c => c.Text.Length);
        using var dir = new TempDir();
        File.WriteAllText(dir.File("in.txt"), longest, new UTF8Encoding(false));
        var r = CliRunner.Run("tokenize", "--model", SharedTokenizers.Gguf(family), "--file", dir.File("in.txt"), "--ids", "--no-special");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(string.Join(' ', ids) + "\n", Encoding.UTF8.GetString(r.Stdout));
    }

    [Fact]
    public void Lists_id_and_piece_per_line_and_puts_BOS_first_only_when_asked()
    {
        using var dir = new TempDir();
        var (tokens, types, merges) = VocabGguf.Bpe(("<s>", VocabGguf.TypeControl));
        var path = dir.File("v.gguf");
        VocabGguf.Write(path, tokens, types, merges, "gpt-2", bos: tokens.Count - 1, eos: tokens.Count - 1, addBos: true);
        var r = CliRunner.Run("tokenize", "-m", path, "--text", "hello world\n");
        Assert.True(r.ExitCode == 0, r.Stderr);
        var lines = Encoding.UTF8.GetString(r.Stdout).TrimEnd('\n').Split('\n');
        Assert.Equal($"{tokens.IndexOf("hello")}\thello", lines[0]);
        Assert.Equal($"{tokens.IndexOf("Ġwo")}\t wo", lines[1]);
        Assert.Equal($"{(int)'\n'}\t\\n", lines[^1]);  // the newline byte token, escaped to stay on one line
        var withBos = CliRunner.Run("tokenize", "-m", path, "--text", "hello", "--ids", "--bos");
        Assert.Equal($"{tokens.Count - 1} {tokens.IndexOf("hello")}\n", Encoding.UTF8.GetString(withBos.Stdout));
        var noBos = CliRunner.Run("tokenize", "-m", path, "--text", "hello", "--ids");
        Assert.Equal($"{tokens.IndexOf("hello")}\n", Encoding.UTF8.GetString(noBos.Stdout));
    }

    [Fact]
    public void Refuses_an_unknown_pre_tokenizer_by_name_and_a_missing_text()
    {
        using var dir = new TempDir();
        var (tokens, types, merges) = VocabGguf.Bpe(("<s>", VocabGguf.TypeControl));
        var path = dir.File("odd.gguf");
        VocabGguf.Write(path, tokens, types, merges, "frobnicator-7", bos: tokens.Count - 1, eos: tokens.Count - 1);
        var refused = CliRunner.Run("tokenize", "-m", path, "--text", "hello");
        Assert.Equal(1, refused.ExitCode);
        Assert.Contains("frobnicator-7", refused.Stderr);
        Assert.Contains("tokenizer.ggml.pre", refused.Stderr);
        var allowed = CliRunner.Run("tokenize", "-m", path, "--text", "hello", "--ids", "--allow-unknown-pre");
        Assert.True(allowed.ExitCode == 0, allowed.Stderr);
        Assert.Contains("warning", allowed.Stderr);
        Assert.Equal($"{tokens.IndexOf("hello")}\n", Encoding.UTF8.GetString(allowed.Stdout));
        var noText = CliRunner.Run("tokenize", "-m", path);
        Assert.Equal(1, noText.ExitCode);
        Assert.Contains("--text", noText.Stderr);
    }
}
