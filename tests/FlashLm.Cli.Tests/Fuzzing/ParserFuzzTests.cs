using FlashLm.Formats;
using FlashLm.Formats.Fuzzing;
using Xunit;

namespace FlashLm.Tests.Fuzzing;

/// <summary>A fixed, seeded share of `flashlm fuzz`: every parser survives mutated files with a clear error or none.</summary>
public class ParserFuzzTests
{
    /// <summary>The suite's share: 300 cases per format (a few seconds each); `flashlm fuzz --cases 10000` runs the rest.</summary>
    private const int Cases = 300;
    private const int Seed = 20261129;

    [Theory]
    [InlineData("gguf")]
    [InlineData("safetensors")]
    [InlineData("llama2c")]
    [InlineData("manifest")]
    [InlineData("opt")]
    public void Mutated_files_never_crash_hang_or_over_allocate(string format)
    {
        var r = ParserFuzzer.Run(format, Cases, Seed);
        var findings = string.Join("\n\n", r.Findings.Select(f =>
            $"case {f.Index} {f.Outcome}{(f.Oversize ? $" oversize {f.AllocatedBytes} bytes for {f.InputBytes}" : "")} in {f.Target}: {f.Mutation}\n{f.Detail}"));
        Assert.True(r.Clean, $"{format}: {r.Crashes} crashes, {r.Hangs} hangs, {r.Oversize} oversize, {r.UnclearMessages} unclear messages\n{findings}");
        Assert.Equal(Cases, r.Cases);
        Assert.Equal(Cases, r.Accepted + r.Rejected);
        // The mutations must reach the parsers' checks, and some must leave the file valid.
        Assert.True(r.Rejected > Cases / 2, $"{format}: only {r.Rejected} of {Cases} cases were rejected");
        Assert.True(r.Accepted > 0, $"{format}: no case was accepted");
    }

    [Theory]
    [InlineData("gguf")]
    [InlineData("safetensors")]
    [InlineData("llama2c")]
    [InlineData("manifest")]
    [InlineData("opt")]
    public void Unmutated_seed_opens_with_its_tokenizer_and_tensors(string format)
    {
        using var dir = new TempDir();
        var corpus = FuzzCorpus.Create(format, dir.Sub("work"));
        var config = format == "opt" ? FuzzCorpus.OptSeedConfig : FuzzCorpus.SeedConfig;
        using var m = ModelLoader.Open(corpus.ModelPath, corpus.TokenizerPath);
        Assert.Equal(config.Architecture, m.Config.Architecture);
        Assert.Equal(config.Dim, m.Config.Dim);
        Assert.True(m.Tokenizer.VocabSize <= config.VocabSize);
        var embedding = m.ReadF32(TensorNames.TokenEmbedding);
        Assert.Equal(config.VocabSize * config.Dim, embedding.Length);
        Assert.Contains(embedding, x => x != 0);
        Assert.NotEmpty(corpus.Targets.SelectMany(t => t.Fields));
    }

    [Fact]
    public void A_case_is_the_same_file_whatever_range_it_runs_in()
    {
        using var dir = new TempDir();
        var corpus = FuzzCorpus.Create("gguf", dir.Sub("work"));
        var t = corpus.Targets[0];
        byte[] Case(int index)
        {
            var rng = new Random(ParserFuzzer.CaseSeed(7, index));
            rng.Next(1); // the target pick
            return FuzzMutator.Mutate(t.Seed, t.Fields, t.LengthPrefixedJson, rng).Bytes;
        }
        Assert.Equal(Case(41), Case(41));
        Assert.NotEqual(Case(41), Case(42));
        Assert.NotEqual(ParserFuzzer.CaseSeed(7, 41), ParserFuzzer.CaseSeed(8, 41));
    }

    [Fact]
    public void Fields_of_a_gguf_seed_cover_counts_lengths_and_tensor_dims()
    {
        using var dir = new TempDir();
        var corpus = FuzzCorpus.Create("gguf", dir.Sub("work"));
        var fields = corpus.Targets[0].Fields;
        // tensor_count and metadata_kv_count at 8 and 16, then a key length at 24.
        Assert.Contains(new FuzzField(8, 8, FieldKind.Integer), fields);
        Assert.Contains(new FuzzField(16, 8, FieldKind.Integer), fields);
        Assert.Contains(new FuzzField(24, 8, FieldKind.Integer), fields);
        Assert.Contains(fields, f => f.Kind == FieldKind.TypeTag);
        Assert.True(fields.Count > 100, $"{fields.Count} fields");
    }

    [Fact]
    public void Fuzz_command_prints_the_figures_and_exits_0_when_clean()
    {
        var r = CliRunner.Run("fuzz", "--format", "llama2c", "--cases", "40", "--seed", "3");
        var text = System.Text.Encoding.UTF8.GetString(r.Stdout);
        Assert.True(r.ExitCode == 0, text + r.Stderr);
        Assert.Matches(@"llama2c\s+40\s+\d+\s+\d+\s+0\s+0\s+0\s+0", text);
        Assert.Contains("clean", text);
    }

    [Fact]
    public void Fuzz_command_refuses_an_unknown_format()
    {
        var r = CliRunner.Run("fuzz", "--format", "onnx", "--cases", "1");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("unknown format 'onnx'", r.Stderr);
    }
}
