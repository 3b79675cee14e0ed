using FlashLm.Bench;
using Xunit;
using Xunit.Abstractions;

namespace FlashLm.Tests;

/// <summary>
/// The fidelity targets on a trained model: stories260K (../shared/models, llama2.c's 260K-parameter story model in
/// llama.cpp's own GGUF), quantized by llama.cpp's quantizer, with FlashLm's dense model teacher-forced along llama.cpp's
/// greedy continuation. A trained model's logits are decisive (llama.cpp's top-2 gap has a median of 1.3-2.4 here, against
/// about 0.6 on the random-weight tiny-k), so the targets are asserted as they are written: >= 99 % for 8-bit weights,
/// >= 97 % for 5-bit, over three prompts of 120 positions (the model's context is 128). Its rows (64 and 172 wide) are not
/// multiples of 256, so llama.cpp writes the K presets with legacy fallbacks: Q4_K_M as q5_0, Q5_K_M as q5_1, Q6_K as q8_0
/// (asserted below, so a change in llama.cpp's choice shows). Measured: q5_0 359/360, q5_1 356/360, q8_0 358/360.
/// </summary>
[Collection(LlamaCppQuantCollection.Name)] // llama.cpp runs one test at a time
public sealed class StoriesLlamaCppQuantTests(ITestOutputHelper output)
{
    private static readonly string[] Prompts = ["Once upon a time", "Lily wanted to", "The little dog"];

    [RequiresSharedModelsTheory]
    [InlineData("Q4_K_M", "q5_0 29, f32 11, f16 5, q8_0 3", 97.0)]
    [InlineData("Q5_K_M", "q5_1 29, f32 11, f16 5, q8_0 3", 97.0)]
    [InlineData("Q6_K", "q8_0 32, f32 11, f16 5", 99.0)]
    public void FlashLm_dense_meets_the_targets_on_a_trained_model_llama_cpp_quantized(string preset, string mix, double target)
    {
        using var dir = new TempDir();
        var path = dir.File($"stories260K.{preset}.gguf");
        LlamaCppQuantizer.Quantize(SharedModels.StoriesGguf, path, preset, threads: 2);
        Assert.Equal(mix, QuantizeCommand.TypeMix(path));
        output.WriteLine(Fidelity.Header);
        int agree = 0, positions = 0;
        foreach (var prompt in Prompts)
        {
            var x = Fidelity.Measure(path, prompt, 120, threads: 2);
            output.WriteLine(Fidelity.Row(x));
            Assert.Equal(120, x.Positions);
            Assert.True(x.Tokens.Distinct().Count() >= 8, $"llama.cpp's continuation of '{prompt}' has only {x.Tokens.Distinct().Count()} distinct tokens");
            Assert.True(x.MeanAbsLogitDiff <= 1.5 * x.Floor.MeanAbsLogitDiff,
                $"{preset}, '{prompt}': mean |logit diff| {x.MeanAbsLogitDiff:G3} against llama.cpp's own (F16 KV cache) {x.Floor.MeanAbsLogitDiff:G3}");
            agree += x.Agreements;
            positions += x.Positions;
        }
        double share = 100.0 * agree / positions;
        output.WriteLine($"{preset}: {agree}/{positions} = {share:F1} % (target {target} %)");
        Assert.True(share >= target, $"{preset}: top-1 agreement {agree}/{positions} = {share:F1} % < {target} %");
    }
}
