using System.CommandLine;
using FlashLm.Formats;
using FlashLm.Models;
using FlashLm.Models.Sampling;

namespace FlashLm.Cli.Commands;

/// <summary>
/// `flashlm generate`: prints exactly what llama2.c's run.c prints on stdout (the prompt, the generated
/// text, a newline); timings go to stderr.
/// </summary>
public static class GenerateCommand
{
    public static Command Build()
    {
        var model = new Option<string?>("--model", "-m") { Description = "llama2.c .bin, GGUF file, Hugging Face folder or flash-layout folder (default: a built-in synthetic model)" };
        var tokenizer = new Option<string?>("--tokenizer", "-z") { Description = "tokenizer .bin for llama2.c models" };
        var prompt = new Option<string>("--prompt", "-i") { Description = "prompt text", DefaultValueFactory = _ => "" };
        var steps = new Option<int>("--steps", "-n") { Description = "positions to run, prompt included (0 = the model's context)", DefaultValueFactory = _ => 256 };
        var temperature = new Option<float>("--temperature", "-t") { Description = "0 = greedy", DefaultValueFactory = _ => 1.0f };
        var topP = new Option<float>("--top-p", "-p") { Description = "nucleus sampling threshold; 0 or 1 = off", DefaultValueFactory = _ => 0.9f };
        var topK = new Option<int>("--top-k") { Description = "keep only the k most likely tokens; 0 = off", DefaultValueFactory = _ => 0 };
        var seed = new Option<ulong?>("--seed", "-s") { Description = "random seed (default: the clock)" };
        var cmd = new Command("generate", "Generate text from a prompt.") { model, tokenizer, prompt, steps, temperature, topP, topK, seed };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            using var source = DefaultModel.Open(r.GetValue(model), r.GetValue(tokenizer));
            var net = Transformers.Create(source);
            var options = new SamplingOptions(r.GetValue(temperature), r.GetValue(topP), r.GetValue(topK),
                r.GetValue(seed) ?? (ulong)DateTimeOffset.UtcNow.ToUnixTimeSeconds());
            var sampler = new Sampler(source.Config.VocabSize, options, new XorShiftRandom(options.Seed));
            using var stdout = Console.OpenStandardOutput();
            var stats = Generator.Run(net, source.Tokenizer, r.GetValue(prompt) ?? "", r.GetValue(steps), sampler, piece =>
            {
                stdout.Write(piece);
                stdout.Flush();
            });
            stdout.Write("\n"u8);
            stdout.Flush();
            Console.Error.WriteLine(
                $"{source.Format} {source.Config.Architecture} dim {source.Config.Dim} layers {source.Config.Layers}: " +
                $"prompt {stats.PromptTokens} tokens in {stats.Prefill.TotalMilliseconds:F1} ms, " +
                $"generated {stats.GeneratedTokens} tokens in {stats.Decode.TotalMilliseconds:F1} ms, achieved tok/s: {stats.DecodeTokensPerSecond:F2}");
            return 0;
        }));
        return cmd;
    }
}
