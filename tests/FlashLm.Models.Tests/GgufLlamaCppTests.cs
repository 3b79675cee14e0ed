using System.Globalization;
using FlashLm.Formats;
using FlashLm.Formats.Gguf;
using FlashLm.Formats.Llama2c;
using Xunit;

namespace FlashLm.Tests;

/// <summary>llama.cpp (through LLamaSharp) loads what GgufWriter writes and computes run.c's outputs from it.</summary>
public sealed class GgufLlamaCppTests
{
    private static string RefPath(string name) => SharedModels.File("stories260K", "reference", name);

    /// <summary>Logits per position from reference/logits_once_upon_a_time_pos0-4.txt.</summary>
    internal static float[][] ReferenceLogits()
    {
        return File.ReadAllLines(RefPath("logits_once_upon_a_time_pos0-4.txt"))
            .Where(l => l.StartsWith("pos=", StringComparison.Ordinal))
            .Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(2).Select(s => float.Parse(s, CultureInfo.InvariantCulture)).ToArray())
            .ToArray();
    }

    [RequiresSharedModelsFact]
    public void LlamaCpp_reproduces_runc_on_a_gguf_written_from_the_llama2c_checkpoint()
    {
        var dir = Directory.CreateTempSubdirectory("flashlm-gguf-llamacpp-");
        try
        {
            var path = System.IO.Path.Combine(dir.FullName, "stories260K-f32.gguf");
            using (var src = new Llama2cModel(SharedModels.StoriesBin, SharedModels.Tok512))
                GgufWriter.Copy(src, path, DType.F32);

            var reference = SharedModels.ReferenceTokens(File.ReadAllLines(RefPath("greedy_once_upon_a_time_n64.tokens.txt")));
            int[] prompt = [1, 403, 407, 261, 378];
            Assert.Equal(prompt, reference[..5]);

            using var llama = new LlamaCppRunner(path);
            Assert.Equal(512, llama.VocabSize);
            var logits = llama.Logits(prompt);
            var expected = ReferenceLogits();
            Assert.Equal(5, expected.Length);
            for (int pos = 0; pos < 5; pos++)
            {
                Assert.Equal(512, logits[pos].Length);
                float worst = 0;
                for (int i = 0; i < 512; i++) worst = MathF.Max(worst, MathF.Abs(logits[pos][i] - expected[pos][i]));
                Assert.True(worst < 1e-3f, $"position {pos}: llama.cpp logits differ from run.c's by up to {worst}");
            }

            var generated = llama.Greedy(prompt, 24);
            Assert.Equal(reference[5..29], generated);
        }
        finally { dir.Delete(true); }
    }
}
