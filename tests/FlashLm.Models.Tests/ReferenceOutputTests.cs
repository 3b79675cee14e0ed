using System.Globalization;
using System.Text;
using FlashLm.Formats;
using FlashLm.Models;
using FlashLm.Models.Sampling;
using Xunit;

namespace FlashLm.Tests;

/// <summary>The dense path against llama2.c's run.c reference outputs for stories260K.</summary>
public class ReferenceOutputTests
{
    private static ModelSource OpenBin() => ModelLoader.Open(SharedModels.StoriesBin, SharedModels.Tok512);

    /// <summary>Runs generation the way `flashlm generate` does and returns stdout's bytes.</summary>
    public static byte[] Generate(ModelSource source, string prompt, int steps, SamplingOptions options)
    {
        var net = Transformers.Create(source);
        var sampler = new Sampler(source.Config.VocabSize, options, new XorShiftRandom(options.Seed));
        var output = new MemoryStream();
        Generator.Run(net, source.Tokenizer, prompt, steps, sampler, piece => output.Write(piece));
        output.Write("\n"u8);
        return output.ToArray();
    }

    [RequiresSharedModelsFact]
    public void Greedy_once_upon_a_time_matches_run_c_byte_for_byte()
    {
        using var source = OpenBin();
        var actual = Generate(source, "Once upon a time", 64, SamplingOptions.Greedy);
        Assert.Equal(File.ReadAllBytes(SharedModels.Reference("greedy_once_upon_a_time_n64.stdout.txt")), actual);
    }

    [RequiresSharedModelsFact]
    public void Seeded_top_p_sampling_matches_run_c_byte_for_byte()
    {
        using var source = OpenBin();
        var actual = Generate(source, "", 256, new SamplingOptions(1.0f, 0.9f, 0, 133742));
        Assert.Equal(File.ReadAllBytes(SharedModels.Reference("sample_t1.0_p0.9_s133742.stdout.txt")), actual);
    }

    [RequiresSharedModelsFact]
    public void Greedy_tokens_match_run_c_at_every_position()
    {
        using var source = OpenBin();
        var lines = File.ReadAllLines(SharedModels.Reference("greedy_once_upon_a_time_n64.tokens.txt"));
        int[] Ints(string prefix) => lines.Single(l => l.StartsWith(prefix)).Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1).Select(int.Parse).ToArray();
        var input = Ints("input_tokens:");
        var argmax = Ints("argmax:");
        Assert.Equal(input.Take(5), source.Tokenizer.Encode("Once upon a time", addBos: true));
        var net = Transformers.Create(source);
        var state = net.CreateState(64);
        for (int pos = 0; pos < 64; pos++)
            Assert.Equal(argmax[pos], Sampler.ArgMax(net.Forward(state, input[pos], pos)));
    }

    [RequiresSharedModelsFact]
    public void Logits_at_positions_0_to_4_agree_with_run_c_within_1e_4()
    {
        using var source = OpenBin();
        var net = Transformers.Create(source);
        var state = net.CreateState(8);
        var lines = File.ReadAllLines(SharedModels.Reference("logits_once_upon_a_time_pos0-4.txt")).Where(l => l.StartsWith("pos=")).ToArray();
        Assert.Equal(5, lines.Length);
        foreach (var line in lines)
        {
            var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            int pos = int.Parse(parts[0]["pos=".Length..]);
            int token = int.Parse(parts[1]["token=".Length..]);
            var expected = parts.Skip(2).Select(s => float.Parse(s, CultureInfo.InvariantCulture)).ToArray();
            var logits = net.Forward(state, token, pos);
            Assert.Equal(expected.Length, logits.Length);
            float worst = 0;
            for (int i = 0; i < logits.Length; i++) worst = MathF.Max(worst, MathF.Abs(logits[i] - expected[i]));
            Assert.True(worst <= 1e-4f, $"position {pos}: largest logit difference {worst}");
        }
    }

    [RequiresSharedModelsTheory]
    [InlineData("Once upon a time", new[] { 1, 403, 407, 261, 378 })]
    [InlineData("", new[] { 1 })]
    public void Tokenizer_encodes_like_run_c(string text, int[] expected)
    {
        using var source = OpenBin();
        Assert.Equal(expected, source.Tokenizer.Encode(text, addBos: true));
    }

    [RequiresSharedModelsFact]
    public void Tokenizer_round_trips_text_through_pieces_including_byte_fallback()
    {
        using var source = OpenBin();
        var tok = source.Tokenizer;
        foreach (var text in new[] { "Lily saw a big dog.", "café: 3 × 4 = 12 🙂", "line one\nline two\ttab" })
        {
            var ids = tok.Encode(text, addBos: true);
            var bytes = new List<byte>();
            for (int i = 1; i < ids.Length; i++) bytes.AddRange(tok.Piece(ids[i - 1], ids[i]));
            Assert.Equal(text, Encoding.UTF8.GetString(bytes.ToArray()));
        }
    }
}
