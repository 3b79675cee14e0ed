using System.CommandLine;
using System.Text;
using System.Text.Json;
using FlashLm.Formats;
using FlashLm.Models;
using FlashLm.Models.Llama;
using FlashLm.Models.Sampling;
using FlashLm.Models.Sparsity;
using FlashLm.Runtime;
using FlashLm.Runtime.Config;
using FlashLm.Runtime.Session;

namespace FlashLm.Cli.Commands;

/// <summary>
/// `flashlm generate`: prints exactly what llama2.c's run.c prints on stdout (the prompt, the generated
/// text, a newline); timings and statistics go to stderr. --mode dense runs the whole model from DRAM;
/// --mode flash runs the flash pipeline (FFN neurons from flash) on a flash-layout folder.
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
        var mode = new Option<string>("--mode") { Description = "dense (all weights in DRAM) or flash (FFN neurons streamed from flash)", DefaultValueFactory = _ => "dense" };
        mode.AcceptOnlyFromAmong("dense", "flash");
        var config = new Option<string[]>("--config") { Description = "HOCON profile(s) overriding the runtime's reference.conf (e.g. hocon/low-memory.conf)", AllowMultipleArgumentsPerToken = false };
        var set = new Option<string[]>("--set") { Description = "override one setting: key=value (e.g. loader.readers=16)" };
        var budget = new Option<string?>("--dram-budget") { Description = "flash mode: DRAM budget (e.g. 64MiB, 4GiB; 'auto' = everything fits)" };
        var window = new Option<int?>("--window") { Description = "flash mode: tokens in the neuron window (0 = off)" };
        var predictor = new Option<string?>("--predictor") { Description = "flash mode: auto (default: the layout's trained predictors, else gate-resident when it fits, else all), gate, lowrank, lookahead, all, trace (needs flashlm.trace.file), or oracle (a test instrument: its weights are outside the budget)" };
        var measure = new Option<bool>("--measure-predictor") { Description = "flash mode: run the oracle beside the predictor and report predicted / false_positive / false_negative per token" };
        var sparsity = new Option<double?>("--sparsity") { Description = "Llama models: target fraction of FFN neurons left out (thresholds calibrated on self-generated text); 0 = dense (ReLU / FATReLU models: their own threshold)" };
        var stats = new Option<string?>("--stats") { Description = "flash mode: write one JSON object per token to this file" };
        var cmd = new Command("generate", "Generate text from a prompt.")
            { model, tokenizer, prompt, steps, temperature, topP, topK, seed, mode, config, set, budget, window, predictor, measure, sparsity, stats };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            var options = new SamplingOptions(r.GetValue(temperature), r.GetValue(topP), r.GetValue(topK),
                r.GetValue(seed) ?? (ulong)DateTimeOffset.UtcNow.ToUnixTimeSeconds());
            string text = r.GetValue(prompt) ?? "";
            int n = r.GetValue(steps);
            if (r.GetValue(mode) == "flash")
            {
                var overrides = new List<string>(r.GetValue(set) ?? []);
                if (r.GetValue(budget) is { } b) overrides.Add($"dram-budget={b}");
                if (r.GetValue(window) is { } w) overrides.Add($"window={w}");
                if (r.GetValue(predictor) is { } p) overrides.Add($"predictor={p}");
                if (r.GetValue(measure)) overrides.Add("measure-predictor=on");
                if (r.GetValue(sparsity) is { } sp) overrides.Add($"sparsity={sp.ToString(System.Globalization.CultureInfo.InvariantCulture)}");
                // From the command line --dram-budget bounds the whole process (flashlm.process-reserve = auto), unless a
                // --set or --config file says otherwise.
                var hocon = RuntimeSettings.Compose(r.GetValue(config) ?? [], overrides, defaults: ["process-reserve=auto"]);
                return RunFlash(DefaultModel.LayoutFolder(r.GetValue(model), r.GetValue(tokenizer)), hocon, text, n, options, r.GetValue(stats));
            }
            using var source = DefaultModel.Open(r.GetValue(model), r.GetValue(tokenizer));
            return RunDense(source, text, n, options, r.GetValue(sparsity));
        }));
        return cmd;
    }

    private static int RunDense(ModelSource source, string prompt, int steps, SamplingOptions options, double? sparsity)
    {
        var thresholds = ThresholdResolver.Resolve(source, sparsity);
        // A quantized flash layout's dense FFN runs over its bundles as the flash runtime does (gate/up blocks, re-quantized down
        // columns, neurons in order), so --mode flash at sparsity 0 prints exactly what --mode dense prints on it.
        using var bundles = source is Formats.FlashLayout.FlashLayoutModel { Ffn.Quantized: true } layout
            ? new Runtime.Compute.LayoutDenseFfn(layout, thresholds)
            : null;
        var net = bundles is not null ? Transformers.Create(source, bundles)
            : thresholds is null ? Transformers.Create(source) : new LlamaModel(source, new DenseSwiGlu(source, thresholds));
        var sampler = new Sampler(source.Config.VocabSize, options, new XorShiftRandom(options.Seed));
        using var stdout = Console.OpenStandardOutput();
        var stats = Generator.Run(net, source.Tokenizer, prompt, steps, sampler, piece =>
        {
            stdout.Write(piece);
            stdout.Flush();
        });
        stdout.Write("\n"u8);
        stdout.Flush();
        Console.Error.WriteLine(
            $"dense {source.Format} {source.Config.Name} dim {source.Config.Dim} layers {source.Config.Layers}" +
            (thresholds is null ? "" : $", thresholded ({ThresholdText(thresholds)})") + ": " +
            $"prompt {stats.PromptTokens} tokens in {stats.Prefill.TotalMilliseconds:F1} ms, " +
            $"generated {stats.GeneratedTokens} tokens in {stats.Decode.TotalMilliseconds:F1} ms, achieved tok/s: {stats.DecodeTokensPerSecond:F2}");
        return 0;
    }

    private static string ThresholdText(float[] t) => "thresholds " + string.Join(" ", t.Select(v => v.ToString("G4", System.Globalization.CultureInfo.InvariantCulture)));

    private static int RunFlash(string layout, Akka.Configuration.Config hocon, string prompt, int steps, SamplingOptions options, string? statsFile)
    {
        var probe = ModelLoader.Open(layout);
        int positions = Generator.ClampSteps(steps, probe.Config.ContextLength);
        probe.Dispose();
        using var runtime = FlashRuntime.Open(layout, hocon, positions);
        // --dram-budget bounds the whole process: its managed heap gets what the budget leaves it beside the native cache rows.
        runtime.BoundManagedHeap();
        var plan = runtime.Plan;
        Console.Error.WriteLine(
            $"flash {runtime.Config.Name} dim {runtime.Config.Dim} layers {runtime.Config.Layers}: budget {FlashRuntime.Bytes(plan.Budget + plan.ProcessReserve)} = " +
            (plan.ProcessReserve > 0 ? $"process {FlashRuntime.Bytes(plan.ProcessReserve)} + " : "") +
            $"weights {FlashRuntime.Bytes(plan.Weights)} + KV/scratch {FlashRuntime.Bytes(plan.KvCache)} + cache {plan.RowsPerLayer}/{plan.Neurons} rows per layer {FlashRuntime.Bytes(plan.CacheRows)} + I/O buffers {FlashRuntime.Bytes(plan.Buffers)}; " +
            $"window {runtime.Settings.Window}, predictor {plan.Predictor}{(plan.PredictorBytes > 0 ? $" ({FlashRuntime.Bytes(plan.PredictorBytes)} in the budget)" : "")}, reads {runtime.ReadEngine} x {runtime.Settings.Loader.Readers}" +
            (runtime.Thresholds is null ? "" : $", {ThresholdText(runtime.Thresholds)}"));
        using var stdout = Console.OpenStandardOutput();
        using var ctrlC = CtrlC.Listen();
        // Unbuffered: each stats line goes out whole in one write, so an interrupted run never leaves half a line.
        using var statsOut = statsFile is null ? null : new FileStream(statsFile, FileMode.Create, FileAccess.Write, FileShare.Read, bufferSize: 0);
        var all = new List<TokenStats>();
        var json = new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull };
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var task = Task.Run(async () =>
        {
            await foreach (var ev in runtime.Generate(prompt, steps, options, ctrlC.Token))
            {
                if (Generator.IsPrintable(ev.Piece))
                {
                    stdout.Write(ev.Piece);
                    stdout.Flush();
                }
                all.Add(ev.Stats);
                statsOut?.Write(Encoding.UTF8.GetBytes(JsonSerializer.Serialize(ev.Stats, json) + "\n"));
                ctrlC.Token.ThrowIfCancellationRequested(); // stop between lines
            }
        });
        try
        {
            task.GetAwaiter().GetResult();
        }
        catch (OperationCanceledException)
        {
            // The text so far ends with a newline, as a finished run's does; the summary covers the positions run.
            stdout.Write("\n"u8);
            stdout.Flush();
            WriteSummary(all, watch.Elapsed);
            throw;
        }
        stdout.Write("\n"u8);
        stdout.Flush();
        WriteSummary(all, watch.Elapsed);
        return 0;
    }

    private static void WriteSummary(List<TokenStats> all, TimeSpan elapsed)
    {
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        string[] head = ["phase", "tokens", "ms/tok", "KiB/tok", "reads", "active", "loaded", "evicted", "io_ms", "wait_ms", "overlap", "compute", "mem_ms", "DRAM_MiB"];
        Console.Error.WriteLine(string.Join(" ", head.Select(h => h.PadLeft(8))));
        foreach (var (name, group) in new[] { ("prefill", all.Where(s => s.Prefill).ToList()), ("decode", all.Where(s => !s.Prefill).ToList()) })
        {
            if (group.Count == 0) continue;
            string F(Func<TokenStats, double> f) => group.Average(f).ToString("F2", inv).PadLeft(8);
            Console.Error.WriteLine(string.Join(" ", name.PadLeft(8), group.Count.ToString(inv).PadLeft(8), F(s => s.TotalMs), F(s => s.BytesRead / 1024.0),
                F(s => s.Reads), F(s => s.NeuronsActive), F(s => s.NeuronsLoaded), F(s => s.NeuronsEvicted), F(s => s.IoMs), F(s => s.WaitMs),
                F(s => s.OverlapMs), F(s => s.ComputeMs), F(s => s.MemMs), (group.Max(s => s.DramBytes) / 1048576.0).ToString("F2", inv).PadLeft(8)));
        }
        int decode = all.Count(s => !s.Prefill);
        double decodeMs = all.Where(s => !s.Prefill).Sum(s => s.TotalMs);
        Console.Error.WriteLine($"{all.Count} positions in {elapsed.TotalMilliseconds:F0} ms; achieved tok/s: {(decodeMs > 0 ? decode / decodeMs * 1000 : 0):F2}" +
                                (FlashLm.Runtime.Io.ProcessMemory.PeakResidentBytes() is { } peak ? $"; peak RSS {peak / 1048576.0:F1} MiB" : ""));
    }
}
