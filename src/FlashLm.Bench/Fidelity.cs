using System.CommandLine;
using System.Globalization;
using FlashLm.Cli.Commands;
using FlashLm.Formats;
using FlashLm.Models;
using LLama;
using LLama.Common;
using LLama.Native;

namespace FlashLm.Bench;

/// <summary>
/// One file's fidelity against llama.cpp: llama.cpp's greedy continuation of <see cref="Positions"/> positions, and
/// FlashLm's dense model teacher-forced along it. Logit figures are over every vocabulary entry of every position.
/// </summary>
/// <param name="TypeMix">Tensor count per ggml type in the file (what llama.cpp's preset wrote).</param>
/// <param name="Positions">Positions compared: the last prompt position and the generated ones but the last.</param>
/// <param name="Top1Agreement">Percent of positions where FlashLm's argmax is llama.cpp's token.</param>
/// <param name="MinMargin">llama.cpp's smallest gap between its top two logits along the run: a disagreement where the
/// gap is below the logit error is a near-tie, not a bug.</param>
/// <param name="DisagreementMargins">llama.cpp's top-two gap at each position where the top-1 tokens differ.</param>
/// <param name="Tokens">llama.cpp's continuation (token ids).</param>
/// <param name="Floor">llama.cpp against itself with its default F16 KV cache, along the same tokens: how far a run that
/// rounds a little differently (K and V to F16) moves from the reference. With quantized weights, every product
/// re-quantizes its input, so a difference of one ulp anywhere can flip a rounding and grow; this is the scale of that.</param>
internal sealed record FidelityResult(
    string Model, string TypeMix, int PromptTokens, int Positions, int Agreements, double Top1Agreement,
    double MaxAbsLogitDiff, double MeanAbsLogitDiff, double MinMargin, double MedianMargin,
    double[] DisagreementMargins, int[] Tokens, FidelityFloor Floor);

/// <summary>llama.cpp with an F16 KV cache teacher-forced along the reference run: top-1 agreement and logit differences.</summary>
internal sealed record FidelityFloor(int Agreements, double Top1Agreement, double MaxAbsLogitDiff, double MeanAbsLogitDiff);

/// <summary>The fidelity report of several files (--json).</summary>
internal sealed record FidelityReport(string Machine, string Prompt, int Steps, string LlamaCpp, IReadOnlyList<FidelityResult> Files);

/// <summary>
/// `flashlm-bench fidelity --model X.gguf [-n 256] [--prompt P]`: how closely FlashLm's dense forward pass follows
/// llama.cpp on the same (quantized) file.
/// </summary>
internal static class Fidelity
{
    public const string DefaultPrompt = "The small robot";

    public const string LlamaCppSettings = "LLamaSharp 0.30.0, CPU backend, F32 KV cache, flash attention off, greedy, one token per decode";

    public static Command Build()
    {
        var models = new Option<string[]>("--model", "-m") { Description = "GGUF file(s) to check (repeat the option for several)", Required = true, AllowMultipleArgumentsPerToken = true };
        var steps = new Option<int>("--tokens", "-n") { Description = "positions llama.cpp generates and FlashLm is teacher-forced along", DefaultValueFactory = _ => 256 };
        var prompt = new Option<string>("--prompt", "-p") { Description = "the prompt (encoded by the file's tokenizer, BOS first)", DefaultValueFactory = _ => DefaultPrompt };
        var threads = new Option<int>("--threads") { Description = "llama.cpp threads (0 = all cores)", DefaultValueFactory = _ => 0 };
        var json = new Option<string?>("--json") { Description = "write every figure (and llama.cpp's tokens) as JSON to this file" };
        var cmd = new Command("fidelity",
            "llama.cpp's greedy continuation of a prompt, and FlashLm's dense model teacher-forced along it: top-1 agreement and logit differences per file.")
        {
            models, steps, prompt, threads, json,
        };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            int n = r.GetValue(steps);
            if (n < 1) throw new ArgumentException("--tokens must be at least 1");
            var files = r.GetValue(models) ?? [];
            foreach (var f in files)
                if (!File.Exists(f)) throw new ArgumentException($"--model {f}: no such file");
            string? jsonPath = r.GetValue(json);
            string text = r.GetValue(prompt)!;
            var results = new List<FidelityResult>();
            Console.WriteLine(Header);
            Console.WriteLine("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
            foreach (var f in files)
            {
                var x = Measure(f, text, n, r.GetValue(threads));
                results.Add(x);
                Console.WriteLine(Row(x));
            }
            if (jsonPath is not null)
            {
                var report = new FidelityReport(
                    $"{Environment.ProcessorCount} cores, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}, {System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture}",
                    text, n, LlamaCppSettings, results);
                File.WriteAllText(jsonPath, System.Text.Json.JsonSerializer.Serialize(report, BenchJson.Indented));
            }
            return 0;
        }));
        return cmd;
    }

    public const string Header =
        "| model | tensor types | positions | top-1 agreement | max abs logit diff | mean abs logit diff | llama.cpp F16-KV vs itself: top-1 | max / mean diff | llama.cpp top-2 gap min / median | gap where top-1 differs |";

    /// <summary>A markdown table row of <paramref name="x"/>.</summary>
    public static string Row(FidelityResult x) => string.Create(CultureInfo.InvariantCulture,
        $"| {Path.GetFileName(x.Model)} | {x.TypeMix} | {x.Positions} | {x.Top1Agreement:F1} % ({x.Agreements}/{x.Positions}) | {x.MaxAbsLogitDiff:G3} | {x.MeanAbsLogitDiff:G3} | " +
        $"{x.Floor.Top1Agreement:F1} % | {x.Floor.MaxAbsLogitDiff:G3} / {x.Floor.MeanAbsLogitDiff:G3} | " +
        $"{x.MinMargin:G3} / {x.MedianMargin:G3} | {(x.DisagreementMargins.Length == 0 ? "-" : string.Join(" ", x.DisagreementMargins.Select(m => m.ToString("G3", CultureInfo.InvariantCulture))))} |");

    /// <summary>
    /// Runs llama.cpp's greedy continuation of <paramref name="prompt"/> for <paramref name="steps"/> positions on
    /// <paramref name="gguf"/>, then FlashLm's dense model (<see cref="Transformers.Create"/>, as `flashlm generate --mode
    /// dense` loads it) teacher-forced along llama.cpp's tokens, and compares the logits of every position.
    /// </summary>
    /// <param name="threads">llama.cpp threads; 0 = all cores.</param>
    public static FidelityResult Measure(string gguf, string prompt, int steps, int threads = 0)
    {
        int[] promptIds;
        int vocab, context;
        using (var probe = ModelLoader.Open(gguf))
        {
            promptIds = probe.Tokenizer.Encode(prompt, addBos: true);
            (vocab, context) = (probe.Config.VocabSize, probe.Config.ContextLength);
        }
        if (promptIds.Length + steps > context)
            throw new ArgumentException($"{gguf}: {promptIds.Length} prompt tokens + {steps} positions exceed the model's context of {context}");
        threads = threads <= 0 ? Environment.ProcessorCount : threads;
        var (tokens, reference) = LlamaCppGreedy(gguf, promptIds, steps, threads);
        var floor = LlamaCppF16Kv(gguf, promptIds, tokens, reference, threads);
        if (reference[0].Length != vocab)
            throw new InvalidOperationException($"{gguf}: llama.cpp has a vocabulary of {reference[0].Length}, FlashLm {vocab}");

        // FlashLm, teacher-forced: position p sees llama.cpp's sequence up to p; positions from the last prompt one on
        // predict llama.cpp's generated tokens.
        using var source = ModelLoader.Open(gguf);
        var net = Transformers.Create(source);
        var sequence = promptIds.Concat(tokens).ToArray();
        var state = net.CreateState(sequence.Length);
        int first = promptIds.Length - 1, agree = 0;
        double maxDiff = 0, sumDiff = 0;
        var margins = new double[steps];
        var disagreements = new List<double>();
        for (int pos = 0; pos < first + steps; pos++)
        {
            var ours = net.Forward(state, sequence[pos], pos);
            if (pos < first) continue;
            int i = pos - first;
            var theirs = reference[i];
            for (int v = 0; v < vocab; v++)
            {
                double d = Math.Abs(ours[v] - theirs[v]);
                if (!(d <= maxDiff)) maxDiff = d; // NaN wins, so a broken forward pass cannot hide
                sumDiff += d;
            }
            margins[i] = TopGap(theirs);
            if (ArgMax(ours) == tokens[i]) agree++;
            else disagreements.Add(margins[i]);
        }
        var sorted = margins.Order().ToArray();
        return new FidelityResult(
            Model: gguf, TypeMix: QuantizeCommand.TypeMix(gguf), PromptTokens: promptIds.Length, Positions: steps, Agreements: agree,
            Top1Agreement: 100.0 * agree / steps, MaxAbsLogitDiff: maxDiff, MeanAbsLogitDiff: sumDiff / ((double)steps * vocab),
            MinMargin: sorted[0], MedianMargin: sorted[sorted.Length / 2], DisagreementMargins: [.. disagreements], Tokens: tokens, Floor: floor);
    }

    /// <summary>
    /// llama.cpp (CPU, F32 KV cache as the tests' LlamaCppRunner) feeds <paramref name="prompt"/>, then its argmax one token
    /// at a time: returns the <paramref name="steps"/> tokens and the logits each was chosen from.
    /// </summary>
    private static (int[] Tokens, float[][] Logits) LlamaCppGreedy(string gguf, int[] prompt, int steps, int threads)
    {
        NativeLogConfig.llama_log_set((level, message) => { });
        var p = new ModelParams(gguf)
        {
            ContextSize = (uint)(prompt.Length + steps),
            GpuLayerCount = 0,
            BatchSize = (uint)prompt.Length,
            UBatchSize = (uint)prompt.Length,
            Threads = threads,
            BatchThreads = threads,
            FlashAttention = false,
            // F32 KV cache: llama.cpp's default F16 cache rounds K and V and moves logits by ~1e-3.
            TypeK = GGMLType.GGML_TYPE_F32,
            TypeV = GGMLType.GGML_TYPE_F32,
        };
        using var weights = LLamaWeights.LoadFromFile(p);
        using var context = weights.CreateContext(p);
        var batch = new LLamaBatch();
        for (int i = 0; i < prompt.Length; i++) batch.Add((LLamaToken)prompt[i], (LLamaPos)i, LLamaSeqId.Zero, logits: i == prompt.Length - 1);
        if (context.Decode(batch) != DecodeResult.Ok) throw new InvalidOperationException($"{gguf}: llama_decode failed on the prompt");
        var tokens = new int[steps];
        var logits = new float[steps][];
        for (int s = 0; s < steps; s++)
        {
            logits[s] = context.NativeHandle.GetLogitsIth(s == 0 ? prompt.Length - 1 : 0).ToArray();
            tokens[s] = ArgMax(logits[s]);
            if (s == steps - 1) break;
            batch.Clear();
            batch.Add((LLamaToken)tokens[s], (LLamaPos)(prompt.Length + s), LLamaSeqId.Zero, logits: true);
            if (context.Decode(batch) != DecodeResult.Ok) throw new InvalidOperationException($"{gguf}: llama_decode failed at position {prompt.Length + s}");
        }
        return (tokens, logits);
    }

    /// <summary>
    /// llama.cpp again with its default F16 KV cache, the whole sequence in one batch: agreement with the reference run's
    /// tokens and the logit differences from its logits.
    /// </summary>
    private static FidelityFloor LlamaCppF16Kv(string gguf, int[] prompt, int[] tokens, float[][] reference, int threads)
    {
        var sequence = prompt.Concat(tokens[..^1]).ToArray();
        uint n = (uint)sequence.Length;
        var p = new ModelParams(gguf)
        {
            ContextSize = n, GpuLayerCount = 0, BatchSize = n, UBatchSize = n, Threads = threads, BatchThreads = threads, FlashAttention = false,
            TypeK = GGMLType.GGML_TYPE_F16, TypeV = GGMLType.GGML_TYPE_F16,
        };
        using var weights = LLamaWeights.LoadFromFile(p);
        using var context = weights.CreateContext(p);
        var batch = new LLamaBatch();
        int first = prompt.Length - 1;
        for (int i = 0; i < sequence.Length; i++) batch.Add((LLamaToken)sequence[i], (LLamaPos)i, LLamaSeqId.Zero, logits: i >= first);
        if (context.Decode(batch) != DecodeResult.Ok) throw new InvalidOperationException($"{gguf}: llama_decode failed (F16 KV cache run)");
        int agree = 0;
        double max = 0, sum = 0;
        for (int i = 0; i < tokens.Length; i++)
        {
            var logits = context.NativeHandle.GetLogitsIth(first + i);
            if (ArgMax(logits) == tokens[i]) agree++;
            for (int v = 0; v < logits.Length; v++)
            {
                double d = Math.Abs(logits[v] - reference[i][v]);
                if (!(d <= max)) max = d;
                sum += d;
            }
        }
        return new FidelityFloor(agree, 100.0 * agree / tokens.Length, max, sum / ((double)tokens.Length * reference[0].Length));
    }

    /// <summary>First index of the largest value (llama.cpp's greedy sampler and run.c agree on this tie rule).</summary>
    public static int ArgMax(ReadOnlySpan<float> x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }

    /// <summary>The largest logit minus the second largest.</summary>
    public static double TopGap(ReadOnlySpan<float> x)
    {
        float a = float.NegativeInfinity, b = float.NegativeInfinity;
        foreach (var v in x)
        {
            if (v > a) (a, b) = (v, a);
            else if (v > b) b = v;
        }
        return a - b;
    }
}
