using FlashLm.Formats;
using FlashLm.Formats.Synth;
using FlashLm.Models;
using Xunit;
using Xunit.Abstractions;

namespace FlashLm.Tests;

/// <summary>
/// llama.cpp (through LLamaSharp) and FlashLm run the same synthetic GGUF and agree: greedy tokens and the
/// logits of every position. This checks the synthetic writer (metadata, tensor layout, vocabulary) and the
/// Llama forward pass against an independent implementation at a shape other than stories260K's.
/// </summary>
public sealed class SynthLlamaCppTests(ITestOutputHelper output)
{
    [Fact]
    public void LlamaCpp_and_FlashLm_agree_on_a_synthetic_tiny_gguf()
    {
        using var dir = new TempDir();
        var path = dir.File("tiny.gguf");
        var config = SyntheticShapes.Get("tiny");
        SyntheticModel.WriteGguf(path, config, DType.F32, seed: 7);

        using var source = ModelLoader.Open(path);
        Assert.Equal(config, source.Config);
        var net = Transformers.Create(source);
        var prompt = source.Tokenizer.Encode("The robot", addBos: true);
        Assert.Equal(1, prompt[0]);
        Assert.InRange(prompt.Length, 3, 6);
        const int steps = 24;

        // FlashLm: feed the prompt, then greedy tokens one at a time; keep every position's logits.
        var state = net.CreateState(prompt.Length + steps);
        var ours = new List<float[]>();
        var tokens = new List<int>(prompt);
        for (int pos = 0; pos < prompt.Length + steps - 1; pos++)
        {
            ours.Add((float[])net.Forward(state, tokens[pos], pos).Clone());
            if (pos >= prompt.Length - 1) tokens.Add(LlamaCppRunner.ArgMax(ours[^1]));
        }
        var generated = tokens.Skip(prompt.Length).ToArray();

        using var llama = new LlamaCppRunner(path);
        Assert.Equal(config.VocabSize, llama.VocabSize);
        var theirs = llama.Greedy(prompt, steps);
        Assert.Equal(theirs, generated);

        // Logits of every position of the whole sequence (prompt + generated) in one batch.
        var reference = llama.Logits(tokens);
        float worst = 0, smallestMargin = float.MaxValue;
        for (int pos = 0; pos < ours.Count; pos++)
        {
            for (int i = 0; i < config.VocabSize; i++) worst = MathF.Max(worst, MathF.Abs(ours[pos][i] - reference[pos][i]));
            if (pos >= prompt.Length - 1) smallestMargin = MathF.Min(smallestMargin, TopMargin(ours[pos]));
        }
        output.WriteLine($"generated {string.Join(' ', generated)}; max |logit diff| {worst:E2}; smallest top-1 margin {smallestMargin:F3}");
        Assert.True(worst < 1e-3f, $"logits differ from llama.cpp's by up to {worst}");
        // Greedy agreement is meaningful only if every greedy choice won by far more than the numerical noise.
        Assert.True(smallestMargin > 100 * worst, $"a greedy choice won by only {smallestMargin} (noise {worst})");
        Assert.True(generated.Distinct().Count() >= 2, "greedy output is one token repeated");
    }

    private static float TopMargin(float[] logits)
    {
        float a = float.MinValue, b = float.MinValue;
        foreach (var x in logits)
        {
            if (x > a) (a, b) = (x, a);
            else if (x > b) b = x;
        }
        return a - b;
    }
}
