using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using FlashLm.Cli.Commands;
using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Formats.Synth;
using FlashLm.Models.Sampling;
using FlashLm.Models.Sparsity;
using FlashLm.Runtime;
using FlashLm.Runtime.Config;
using FlashLm.Runtime.Session;

namespace FlashLm.Bench;

/// <summary>
/// `flashlm-bench`: decode speed along the paper's ladder (naive, hybrid, + predictor, + window, + bundling, + lookahead),
/// each rung in its own process (inside a cgroup v1 memory group capped at the DRAM budget when run as root),
/// the page cache dropped before each run, rungs alternating across repetitions. Decode steps follow a fixed text,
/// fed one token per step.
/// </summary>
internal static class BenchCommand
{
    /// <summary>
    /// The ladder: each rung's settings on top of the previous ones. naive reads every weight from flash each token (attention
    /// streamed layer by layer, all FFN neurons); hybrid keeps attention and embeddings in DRAM and reads all FFN neurons (their
    /// bundles are contiguous, so these are large sequential reads, as reading separately stored whole matrices would be);
    /// the sparse rungs before bundling read each neuron's gate row, up row and down column separately.
    /// </summary>
    public static readonly (string Name, string[] Settings)[] Rungs =
    [
        ("naive", ["predictor=all", "window=0", "lookahead=off", "loader.split-parts=off", "stream-attention=on", "pin=off"]),
        ("hybrid", ["predictor=all", "window=0", "lookahead=off", "loader.split-parts=off", "pin=off"]),
        ("predictor", ["predictor=oracle", "window=0", "lookahead=off", "loader.split-parts=on", "pin=off"]),
        ("window", ["predictor=oracle", "window=5", "lookahead=off", "loader.split-parts=on", "pin=off"]),
        ("bundling", ["predictor=oracle", "window=5", "lookahead=off", "loader.split-parts=off", "pin=off"]),
        ("lookahead", ["predictor=oracle", "window=5", "lookahead=on", "loader.split-parts=off", "pin=off"]),
        // Beyond the paper: PowerInfer's hot/cold split on top of lookahead (pin = auto, by the activation frequencies the bench's
        // calibration stores in the layout). Measured slower than the window alone on these shapes, so the runtime's default is off.
        ("pinning", ["predictor=oracle", "window=5", "lookahead=on", "loader.split-parts=off", "pin=auto"]),
        // Not part of the paper's ladder and not run unless named in --rungs: gate-resident selection (deployable and exact, its
        // gates inside the budget) under its own cap (--gate-cap, default 65 % of the model), since at Llama proportions
        // attention plus gates is about 55 % of the model and does not fit half of it.
        (GateRung, ["predictor=gate", "window=5", "lookahead=on", "loader.split-parts=off", "pin=off"]),
        // The gate rung reading whole bundles, resident gate included (loader.skip-resident = off): the A/B for leaving it out.
        (GateWholeRung, ["predictor=gate", "window=5", "lookahead=on", "loader.split-parts=off", "pin=off", "loader.skip-resident=off"]),
        // Mixture-of-experts models (the default ladder for them): every expert read each token; only the experts the router
        // chooses (exact: it is the model's own top k); + the expert cache (a window of recently used experts); + pre-gated
        // prefetch (layer N+1's router on layer N's FFN input starts its experts' reads while layer N computes).
        ("experts-all", ["predictor=all", "window=0", "lookahead=off", "loader.split-parts=off", "pin=off"]),
        ("router", ["predictor=auto", "window=0", "lookahead=off", "loader.split-parts=off", "pin=off"]),
        ("expert-cache", ["predictor=auto", "window=5", "lookahead=off", "loader.split-parts=off", "pin=off"]),
        ("pregated", ["predictor=auto", "window=5", "lookahead=on", "loader.split-parts=off", "pin=off"]),
        // + experts pinned by measured frequency (pin = auto: whole experts, ranked by how often the router chose them on the
        // bench's calibration text), on top of the expert cache without pre-gated prefetch (the faster of the two at half the model).
        ("expert-pinning", ["predictor=auto", "window=5", "lookahead=off", "loader.split-parts=off", "pin=auto"]),
    ];

    /// <summary>The rungs of mixture-of-experts models (and of no other).</summary>
    public static readonly string[] MoeRungs = ["experts-all", "router", "expert-cache", "pregated", "expert-pinning"];

    private static bool IsMoeRung(string rung) => MoeRungs.Contains(rung.Split('+')[0]);

    /// <summary>The rungs run on a mixture-of-experts layout when --rungs is not given.</summary>
    public static (string Name, string[] Settings)[] DefaultMoeRungs => Rungs.Where(r => IsMoeRung(r.Name)).ToArray();

    /// <summary>The gate-resident rung's name.</summary>
    public const string GateRung = "gate";

    /// <summary>The gate rung with whole-bundle reads; run under the gate rung's cap when named.</summary>
    public const string GateWholeRung = "gate-whole";

    private static bool UnderGateCap(string rung) => rung.Split('+')[0] is GateRung or GateWholeRung;

    /// <summary>The rungs run when --rungs is not given: the paper's ladder.</summary>
    public static (string Name, string[] Settings)[] DefaultRungs => Rungs.Where(r => !UnderGateCap(r.Name) && !IsMoeRung(r.Name)).ToArray();

    /// <summary>A fixed, non-repeating English text the decode steps follow.</summary>
    public const string Text =
        "The old lighthouse keeper climbed the stairs every evening, counting each step as his father had taught him. " +
        "From the top he could see the harbour, the fishing boats coming home and the lights of the village along the shore. " +
        "One winter night a storm broke the great lamp, and he worked until dawn with a candle, a mirror and a borrowed bell, " +
        "so that no ship would mistake the rocks for the open sea. In the morning the children brought him bread and tea.";

    /// <summary>The ladder as the root command of flashlm-bench; <paramref name="extra"/> are its subcommands (soak).</summary>
    public static RootCommand Build(params Command[] extra)
    {
        var model = new Option<string?>("--model", "-m") { Description = "flash-layout folder (default: a synthetic model of --shape, made and cached)" };
        var shape = new Option<string>("--shape") { Description = "synthetic shape when no --model (llama-7b, llama-1b, ...)", DefaultValueFactory = _ => "llama-7b" };
        var budget = new Option<string?>("--dram-budget") { Description = "DRAM cap (default: half the model)" };
        var sparsity = new Option<double?>("--sparsity")
        {
            Description = "target FFN sparsity: SwiGLU thresholds calibrated once per sparsity, kept in the layout folder and written to its manifest for the run " +
                          "(default: the layout's own thresholds when it has them, else 0.9)",
        };
        var tokens = new Option<int>("--tokens", "-n") { Description = "decode steps per run", DefaultValueFactory = _ => 16 };
        var reps = new Option<int>("--reps") { Description = "repetitions per rung (rungs alternate)", DefaultValueFactory = _ => 3 };
        var rungs = new Option<string?>("--rungs") { Description = "comma-separated subset of: " + string.Join(",", Rungs.Select(r => r.Name)) };
        var json = new Option<string?>("--json") { Description = "write every figure as JSON to this file" };
        var plot = new Option<string?>("--plot") { Description = "draw the per-token latency breakdown per rung (PNG, ScottPlot)" };
        var set = new Option<string[]>("--set") { Description = "extra runtime setting for every rung (key=value)" };
        var gguf = new Option<string?>("--gguf") { Description = "the same model as GGUF: adds llama.cpp (LLamaSharp, default settings, mmap on) under the same cap" };
        var quant = new Option<string?>("--quant")
        {
            Description = "synthetic model only: quantize its F16 GGUF with llama.cpp's quantizer (llama-quantize preset: " + string.Join(", ", LlamaCppQuantizer.Types.Keys) +
                          "), cached beside it; the ladder, llama.cpp and FlashLm's dense path all run on that file",
        };
        var gateCap = new Option<string?>("--gate-cap") { Description = "cap for the gate rung: a size (6GiB) or a share of the model (0.65, the default)" };
        var selection = new Option<string>("--selection")
        {
            Description = "what the predictor rungs select with on a layout without trained predictors: trace (the default: exact active sets recorded once " +
                          "along the bench's sequence, replayed at --recall and --over-selection while a rank---rank predictor's weights and products are paid " +
                          "inside the cap) or oracle (the exact sets from weights held outside the cap: a test instrument)",
            DefaultValueFactory = _ => "trace",
        };
        var recall = new Option<double>("--recall") { Description = "trace-driven selection: share of each exact set kept", DefaultValueFactory = _ => DefaultRecall };
        var overSelection = new Option<double>("--over-selection")
            { Description = "trace-driven selection: predicted neurons over exact ones (>= --recall)", DefaultValueFactory = _ => DefaultOverSelection };
        var rank = new Option<int>("--rank") { Description = "trace-driven selection: rank of the low-rank predictor whose cost is paid", DefaultValueFactory = _ => DefaultRank };
        var worker = new Option<string?>("--worker") { Description = "internal: run one rung in this process and print its JSON", Hidden = true };
        var traceOut = new Option<string?>("--trace-out") { Description = "internal: the record worker's trace file", Hidden = true };
        var cmd = new RootCommand("flashlm-bench: decode speed along the paper's ladder, each rung capped at the DRAM budget, against llama.cpp.")
        {
            model, shape, budget, sparsity, tokens, reps, rungs, json, plot, set, gguf, quant, gateCap, selection, recall, overSelection, rank, worker, traceOut,
        };
        foreach (var sub in extra) cmd.Subcommands.Add(sub);
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            int n = r.GetValue(tokens);
            if (n < 1) throw new ArgumentException("--tokens must be at least 1");
            if (r.GetValue(reps) < 1) throw new ArgumentException("--reps must be at least 1");
            if (r.GetValue(budget) is { } b) ByteSize.Parse(b, "--dram-budget");
            if (r.GetValue(worker) == LlamaCpp)
                return LlamaCppWorker(r.GetValue(gguf) ?? throw new ArgumentException("--worker llamacpp needs --gguf"),
                    r.GetValue(model) ?? throw new ArgumentException("--worker needs --model"), n);
            if (r.GetValue(worker) == Dense)
                return DenseWorker(r.GetValue(gguf) ?? throw new ArgumentException("--worker dense needs --gguf"),
                    r.GetValue(model) ?? throw new ArgumentException("--worker needs --model"), n);
            if (r.GetValue(worker) == Record)
                return RecordWorker(r.GetValue(model) ?? throw new ArgumentException("--worker needs --model"), r.GetValue(budget), n,
                    r.GetValue(traceOut) ?? throw new ArgumentException("--worker record needs --trace-out"), r.GetValue(set) ?? []);
            if (r.GetValue(worker) is { } rung)
                return Worker(rung, r.GetValue(model) ?? throw new ArgumentException("--worker needs --model"), r.GetValue(budget), n, r.GetValue(set) ?? []);
            var rungList = r.GetValue(rungs);
            var chosen = rungList is null ? null : ParseRungs(rungList);
            var select = new Selection(r.GetValue(selection)!.ToLowerInvariant(), r.GetValue(recall), r.GetValue(overSelection), r.GetValue(rank));
            select.Check();
            string? plotPath = r.GetValue(plot);
            if (plotPath is not null) BenchPlot.CheckPath(plotPath); // before the long run, not after it
            string? ggufPath = r.GetValue(gguf);
            if (ggufPath is not null && !File.Exists(ggufPath)) throw new ArgumentException($"--gguf {ggufPath}: no such file");
            string? quantType = r.GetValue(quant) is { } q ? LlamaCppQuantizer.Canonical(q) : null;
            if (quantType is not null && (r.GetValue(model) is not null || ggufPath is not null))
                throw new ArgumentException("--quant quantizes the synthetic model (no --model, no --gguf); for a quantized file of your own pass its flash layout with --model and the file with --gguf");
            string layout = r.GetValue(model) ?? (quantType is null ? SyntheticLayout(r.GetValue(shape)!, out ggufPath) : QuantizedLayout(r.GetValue(shape)!, quantType, out ggufPath));
            if (!FlashLayoutModel.IsLayoutFolder(layout)) throw new ArgumentException($"{layout}: bench needs a flash-layout folder (flashlm convert MODEL --out DIR)");
            bool moe;
            using (var m = new FlashLayoutModel(layout)) moe = m.Config.MoE;
            chosen ??= moe ? DefaultMoeRungs : DefaultRungs;
            if (chosen.FirstOrDefault(x => IsMoeRung(x.Name) != moe) is { Name: { } wrong })
                throw new ArgumentException(moe
                    ? $"rung '{wrong}' is for dense models; a mixture-of-experts layout runs {string.Join(", ", MoeRungs)}"
                    : $"rung '{wrong}' is for mixture-of-experts models; {layout} has a dense FFN");
            return Orchestrate(layout, r.GetValue(budget), r.GetValue(sparsity), n, r.GetValue(reps), chosen, r.GetValue(set) ?? [], r.GetValue(json), ggufPath, plotPath,
                r.GetValue(gateCap), select);
        }));
        return cmd;
    }

    public static (string Name, string[] Settings)[] ParseRungs(string? list)
    {
        if (list is null) return DefaultRungs;
        var names = list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var chosen = new List<(string Name, string[] Settings)>();
        foreach (var name in names)
        {
            // A variant for side-by-side A/B runs: rung+key=value[+key=value...] runs the rung with those settings on top.
            var parts = name.Split('+', StringSplitOptions.TrimEntries);
            if (!Rungs.Any(r => r.Name == parts[0])) throw new ArgumentException($"unknown rung '{parts[0]}' (known: {string.Join(", ", Rungs.Select(r => r.Name))}; a variant is rung+key=value)");
            foreach (var extra in parts.Skip(1))
                if (extra.IndexOf('=') is <= 0) throw new ArgumentException($"rung variant '{name}': '{extra}' is not key=value");
            if (chosen.Any(c => c.Name == name)) continue;
            var keys = parts.Skip(1).Select(x => x[..x.IndexOf('=')]).ToHashSet();
            var settings = Rungs.First(r => r.Name == parts[0]).Settings.Where(x => !keys.Contains(x[..x.IndexOf('=')])).Concat(parts.Skip(1)).ToArray();
            chosen.Add((name, settings));
        }
        // The ladder's order, variants right after their rung.
        return chosen.OrderBy(c => Array.FindIndex(Rungs, r => r.Name == c.Name.Split('+')[0])).ToArray();
    }

    /// <summary>
    /// Draws a report's latency breakdown per rung and llama.cpp's total. Bars get short names (a variant by its setting's
    /// value, or its key's last segment with a number; trace-driven rungs starred, the star explained in the title; a rung's own cap on a second line): the
    /// table's full labels would overlap under the bars.
    /// </summary>
    internal static void Plot(BenchReport report, string plotFile, int reps)
    {
        long cap = report.DramBudgetBytes;
        string PlotLabel(RungRow r)
        {
            var parts = r.Name.Split('+');
            // A word value speaks for itself (+io_uring); a number keeps its key (+window=2).
            static string Short(string v)
            {
                string value = v[(v.IndexOf('=') + 1)..];
                return value.Length > 0 && char.IsLetter(value[0]) ? value : v[(v.LastIndexOf('.', Math.Max(0, v.IndexOf('='))) + 1)..];
            }
            var name = parts[0] + string.Concat(parts.Skip(1).Select(v => "+" + Short(v)));
            bool trace = r.Predictor?.StartsWith("trace-driven", StringComparison.Ordinal) == true;
            return name + (trace ? " *" : "") + (r.CapBytes == cap ? "" : $"\n(cap {FlashRuntime.Bytes(r.CapBytes)})");
        }
        var traced = report.Rungs.FirstOrDefault(x => x.Predictor?.StartsWith("trace-driven", StringComparison.Ordinal) == true)?.Predictor;
        const string asLookahead = " (and as lookahead)";
        if (traced is not null && traced.EndsWith(asLookahead, StringComparison.Ordinal)) traced = traced[..^asLookahead.Length];
        var bars = report.Rungs.Select(x => new BenchPlotBar(PlotLabel(x), x.MsPerToken, x.ComputeMs, x.MemMs, x.PredictMs)).ToList();
        if (report.Llamacpp is { MsPerToken: { } llamaMs }) bars.Add(new BenchPlotBar("llama.cpp", llamaMs, 0, 0));
        BenchPlot.Write(plotFile, bars, $"{Path.GetFileNameWithoutExtension(report.Model.Path.TrimEnd('/'))}, cap {FlashRuntime.Bytes(cap)}: ms per token, median of {reps} runs"
                                        + (traced is null ? "" : $"\n* {traced}"));
    }

    /// <summary>`flashlm-bench replot --json REPORT --plot FILE.png`: redraws a report's figure without running anything.</summary>
    internal static Command BuildReplot()
    {
        var json = new Option<string>("--json") { Description = "a report written by flashlm-bench --json", Required = true };
        var plot = new Option<string>("--plot") { Description = "the PNG to write", Required = true };
        var cmd = new Command("replot", "Redraw the latency figure of a bench report (--json) without running anything.") { json, plot };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            var path = r.GetValue(json)!;
            if (!File.Exists(path)) throw new ArgumentException($"--json {path}: no such file");
            var report = BenchJson.Parse<BenchReport>(File.ReadAllText(path), path);
            BenchPlot.CheckPath(r.GetValue(plot)!);
            Plot(report, r.GetValue(plot)!, report.Rungs.Select(x => x.Repetitions).DefaultIfEmpty(1).Max());
            Console.Error.WriteLine($"bench: wrote {r.GetValue(plot)}");
            return 0;
        }));
        return cmd;
    }

    /// <summary>The synthetic model of <paramref name="shape"/> in flash layout (F16, default seed), made once in the cache folder.</summary>
    internal static string SyntheticLayout(string shape, out string? ggufOut)
    {
        var config = SyntheticShapes.Get(shape);
        var folder = Path.Combine(DefaultModel.CacheFolder(), $"bench-{shape}-f16-seed{SyntheticModel.DefaultSeed}.flash");
        var gguf = Path.ChangeExtension(folder, ".gguf");
        ggufOut = File.Exists(gguf) ? gguf : null;
        if (FlashLayoutModel.IsLayoutFolder(folder)) return folder;
        Directory.CreateDirectory(DefaultModel.CacheFolder());
        var hf = Path.ChangeExtension(folder, ".hf");
        Console.Error.WriteLine($"bench: writing a synthetic {shape} model (F16) to {folder}");
        if (config.Architecture == Architecture.Llama)
        {
            Progress.Run($"synthesising {shape}", p => SyntheticModel.WriteGguf(gguf, config, DType.F16, SyntheticModel.DefaultSeed, p));
            using (var source = ModelLoader.Open(gguf)) Progress.Run("converting", p => FlashLayoutWriter.Convert(source, folder, null, p));
            ggufOut = gguf; // kept: llama.cpp runs on the same file
        }
        else
        {
            Progress.Run($"synthesising {shape}", p => SyntheticModel.WriteHf(hf, config, DType.F16, SyntheticModel.DefaultSeed, p));
            using (var source = ModelLoader.Open(hf)) Progress.Run("converting", p => FlashLayoutWriter.Convert(source, folder, null, p));
            Directory.Delete(hf, recursive: true);
        }
        return folder;
    }

    /// <summary>
    /// The synthetic model of <paramref name="shape"/> (F16, default seed) quantized by llama.cpp to <paramref name="type"/>,
    /// and that file converted to the flash layout: X.gguf, X.TYPE.gguf and X.TYPE.flash in the cache folder, each made once.
    /// </summary>
    internal static string QuantizedLayout(string shape, string type, out string ggufOut)
    {
        var config = SyntheticShapes.Get(shape);
        if (config.Architecture != Architecture.Llama)
            throw new ArgumentException($"--quant needs the model as GGUF, which the synthetic {shape} ({config.Architecture}) is not written as: use a Llama shape");
        Directory.CreateDirectory(DefaultModel.CacheFolder());
        var f16 = Path.Combine(DefaultModel.CacheFolder(), $"bench-{shape}-f16-seed{SyntheticModel.DefaultSeed}.gguf");
        if (!File.Exists(f16))
        {
            // Written under a temporary name: a file at f16 is always whole.
            Console.Error.WriteLine($"bench: writing a synthetic {shape} model (F16) to {f16}");
            Progress.Run($"synthesising {shape}", p => SyntheticModel.WriteGguf(f16 + ".part", config, DType.F16, SyntheticModel.DefaultSeed, p));
            File.Move(f16 + ".part", f16, overwrite: true);
        }
        var quantized = Path.Combine(Path.GetDirectoryName(f16)!, Path.GetFileNameWithoutExtension(f16) + "." + type + ".gguf");
        if (!File.Exists(quantized))
        {
            Console.Error.WriteLine($"bench: quantizing {Path.GetFileName(f16)} to {type} with llama.cpp's quantizer");
            LlamaCppQuantizer.Quantize(f16, quantized, type);
        }
        Console.Error.WriteLine($"bench: {Path.GetFileName(quantized)}: {QuantizeCommand.TypeMix(quantized)}");
        ggufOut = quantized;
        var folder = Path.ChangeExtension(quantized, ".flash");
        if (FlashLayoutModel.IsLayoutFolder(folder)) return folder;
        using (var source = ModelLoader.Open(quantized)) Progress.Run("converting", p => FlashLayoutWriter.Convert(source, folder, null, p));
        return folder;
    }

    private static int[] Sequence(ITextTokenizer tok, int prefill, int decode)
    {
        var ids = tok.Encode(Text, addBos: true);
        while (ids.Length < prefill + decode) ids = [.. ids, .. tok.Encode(" " + Text, addBos: false)];
        return ids[..(prefill + decode)];
    }

    private const int PrefillTokens = 4;

    /// <summary>The median (the upper one of an even count): what every figure of the report quotes.</summary>
    private static double Median(IEnumerable<double> values)
    {
        var v = values.Order().ToArray();
        return v.Length > 0 ? v[v.Length / 2] : throw new InvalidOperationException("no values to take the median of");
    }

    /// <summary>A contender's line: the median of its decode-step times.</summary>
    private static void PrintTiming(string name, IEnumerable<double> stepMs)
    {
        double median = Median(stepMs);
        Console.WriteLine(BenchJson.Line(new TimingResult(name, median, 1000 / median)));
    }

    /// <summary>Transient memory while the oracle's matrices are rebuilt from the layout (not part of any budget).</summary>
    private const long OracleLoadingAllowance = 256L << 20;

    private const string LlamaCpp = "llamacpp";

    /// <summary>llama.cpp on the GGUF, default settings (mmap on): the same prefill and forced decode steps, timed per step.</summary>
    private static int LlamaCppWorker(string gguf, string layout, int decode)
    {
        int[] sequence;
        using (var source = new FlashLayoutModel(layout)) sequence = Sequence(source.Tokenizer, PrefillTokens, decode);
        LLama.Native.NativeLogConfig.llama_log_set((level, message) => { });
        // LLamaSharp's own default load mode is None (the weights are read into anonymous memory); llama.cpp's default, and
        // what its users run, is mmap: ask for it explicitly.
        var p = new LLama.Common.ModelParams(gguf)
        {
            ContextSize = (uint)sequence.Length, GpuLayerCount = 0, Threads = Environment.ProcessorCount, LoadMode = LLama.Native.LLamaLoadMode.MemoryMap,
        };
        using var weights = LLama.LLamaWeights.LoadFromFile(p);
        using var context = weights.CreateContext(p);
        var batch = new LLama.Native.LLamaBatch();
        for (int i = 0; i < PrefillTokens; i++) batch.Add((LLama.Native.LLamaToken)sequence[i], (LLama.Native.LLamaPos)i, LLama.Native.LLamaSeqId.Zero, logits: i == PrefillTokens - 1);
        if (context.Decode(batch) != LLama.Native.DecodeResult.Ok) throw new InvalidOperationException("llama_decode failed on the prefill");
        var ms = new List<double>();
        for (int pos = PrefillTokens; pos < sequence.Length; pos++)
        {
            var watch = Stopwatch.StartNew();
            batch.Clear();
            batch.Add((LLama.Native.LLamaToken)sequence[pos], (LLama.Native.LLamaPos)pos, LLama.Native.LLamaSeqId.Zero, logits: true);
            if (context.Decode(batch) != LLama.Native.DecodeResult.Ok) throw new InvalidOperationException($"llama_decode failed at position {pos}");
            _ = context.NativeHandle.GetLogitsIth(0)[0];
            ms.Add(watch.Elapsed.TotalMilliseconds);
        }
        PrintTiming(LlamaCpp, ms);
        return 0;
    }

    private const string Dense = "dense";

    /// <summary>FlashLm's dense path on the GGUF, all weights in DRAM: the same prefill and forced decode steps, timed per step.</summary>
    private static int DenseWorker(string gguf, string layout, int decode)
    {
        int[] sequence;
        using (var flash = new FlashLayoutModel(layout)) sequence = Sequence(flash.Tokenizer, PrefillTokens, decode);
        using var source = ModelLoader.Open(gguf);
        var model = FlashLm.Models.Transformers.Create(source);
        // Steady state, as llama.cpp's native code is from its first step: one unmeasured pass over the whole sequence lets
        // tiered compilation replace the first-call code of every step (on a small model, e.g. a MoE whose experts are small
        // products, the first pass ran 3-6x slower than the next), then a moment for the background recompilation to land.
        var warm = model.CreateState(sequence.Length);
        for (int pos = 0; pos < sequence.Length; pos++) model.Forward(warm, sequence[pos], pos);
        warm = null;
        Thread.Sleep(500);
        var state = model.CreateState(sequence.Length);
        for (int i = 0; i < PrefillTokens; i++) model.Forward(state, sequence[i], i);
        var ms = new List<double>();
        for (int pos = PrefillTokens; pos < sequence.Length; pos++)
        {
            var watch = Stopwatch.StartNew();
            model.Forward(state, sequence[pos], pos);
            ms.Add(watch.Elapsed.TotalMilliseconds);
        }
        PrintTiming(Dense, ms);
        return 0;
    }

    /// <summary>One rung in this process: prints one JSON object with its figures.</summary>
    private static int Worker(string rung, string layout, string? budget, int decode, string[] extra)
    {
        if (!Rungs.Any(r => r.Name == rung.Split('+')[0])) throw new ArgumentException($"unknown rung '{rung}'");
        var overrides = new List<string>();
        if (budget is not null) overrides.Add($"dram-budget={budget}");
        overrides.AddRange(extra);
        // The cap is the whole process's: the runtime takes its measured resident set at open plus the allowance off the
        // budget (flashlm.process-reserve = auto) unless a --set says otherwise.
        var config = RuntimeSettings.Compose([], overrides, defaults: ["process-reserve=auto"]);
        int positions = PrefillTokens + decode;
        using var runtime = FlashRuntime.Open(layout, config, positions);
        // The worker process is the cap's: its managed heap gets what the budget leaves it, so garbage cannot push it over.
        runtime.BoundManagedHeap();
        var sequence = Sequence(runtime.Tokenizer, PrefillTokens, decode);
        var stats = new List<TokenStats>();
        // Process CPU time when each step's token arrived: the decode steps' share is the last minus the last prefill step's.
        var cpu = new List<TimeSpan>();
        using var self = Process.GetCurrentProcess();
        Task.Run(async () =>
        {
            await using var session = await runtime.CreateSessionAsync();
            await foreach (var ev in session.GenerateTokensAsync(sequence, positions, SamplingOptions.Greedy, PrefillTokens))
            {
                stats.Add(ev.Stats);
                self.Refresh();
                cpu.Add(self.TotalProcessorTime);
            }
        }).GetAwaiter().GetResult();
        int lastPrefill = stats.FindLastIndex(s => s.Prefill);
        var d = stats.Where(s => !s.Prefill).ToList();
        if (d.Count == 0) throw new InvalidOperationException("no decode steps ran");
        double median = Median(d.Select(s => s.TotalMs));
        var result = new RungResult(
            Name: rung,
            MsPerToken: median,
            TokensPerS: 1000.0 / median,
            BytesPerToken: d.Average(s => (double)s.BytesRead),
            ReadsPerToken: d.Average(s => (double)s.Reads),
            MeanReadBytes: d.Sum(s => (double)s.BytesRead) / Math.Max(1, d.Sum(s => s.Reads)),
            IoMs: d.Average(s => s.IoMs),
            WaitMs: d.Average(s => s.WaitMs),
            OverlapMs: d.Average(s => s.OverlapMs),
            MemMs: d.Average(s => s.MemMs),
            PredictMs: d.Average(s => s.PredictMs),
            ComputeMs: d.Average(s => s.ComputeMs),
            NeuronsActive: d.Average(s => (double)s.NeuronsActive),
            NeuronsLoaded: d.Average(s => (double)s.NeuronsLoaded),
            MessagesPerToken: d.Average(s => (double)s.Messages),
            DramBytes: d.Max(s => s.DramBytes),
            DramBudgetBytes: runtime.Plan.Budget)
        {
            // The lookahead guess against the sets the layers then used, over the decode steps (null: no guess was made).
            LookaheadPrecision = d.Sum(s => s.LookaheadGuessed ?? 0) is > 0 and var guessed ? d.Sum(s => s.LookaheadGuessHits ?? 0) / (double)guessed : null,
            LookaheadRecall = d.Sum(s => s.LookaheadGuessTruth ?? 0) is > 0 and var truth ? d.Sum(s => s.LookaheadGuessHits ?? 0) / (double)truth : null,
            Predictor = runtime.Plan.Predictor,
            NeuronsPinnedHit = d.Average(s => (double)s.NeuronsPinnedHit),
            NeuronsWindowHit = d.Average(s => (double)s.NeuronsWindowHit),
            PinnedRows = runtime.Plan.PinnedRows,
            PeakRssBytes = Runtime.Io.ProcessMemory.PeakResidentBytes() ?? 0,
            ProcessReserveBytes = runtime.Plan.ProcessReserve,
            CpuMsPerToken = lastPrefill >= 0 && lastPrefill < cpu.Count - 1 ? (cpu[^1] - cpu[lastPrefill]).TotalMilliseconds / (cpu.Count - 1 - lastPrefill) : 0,
        };
        Console.WriteLine(BenchJson.Line(result));
        return 0;
    }

    /// <summary>How the predictor rungs select on a layout without trained predictors (--selection and its figures).</summary>
    internal sealed record Selection(string Mode, double Recall, double OverSelection, int Rank)
    {
        public void Check()
        {
            if (Mode is not ("trace" or "oracle")) throw new ArgumentException($"--selection {Mode}: expected trace or oracle");
            if (!(Recall > 0 && Recall <= 1)) throw new ArgumentException($"--recall {Recall}: must be in (0, 1]");
            if (!(OverSelection >= Recall)) throw new ArgumentException($"--over-selection {OverSelection}: must be at least --recall ({Recall})");
            if (Rank < 1) throw new ArgumentException($"--rank {Rank}: must be at least 1");
        }

        public string[] Settings(string traceFile) =>
        [
            "predictor=trace", $"trace.file={traceFile}", string.Create(CultureInfo.InvariantCulture, $"trace.recall={Recall}"),
            string.Create(CultureInfo.InvariantCulture, $"trace.over-selection={OverSelection}"), $"trace.rank={Rank}",
        ];
    }

    /// <summary>
    /// Trace-driven selection's defaults: the recall `flashlm calibrate` aims its trained predictors at (0.975; held out, they
    /// reached 0.98-0.99 on the trained stories260K), and twice as many neurons predicted as are active: the paper's OPT-6.7B
    /// predictor marks about 10 % of the neurons per token (DESIGN.md) where 3-10 % are active (90-97 % ReLU sparsity).
    /// Rank 128: the paper's smallest predictor rank and what docs/benchmarks.md estimated with before.
    /// </summary>
    internal const double DefaultRecall = 0.975, DefaultOverSelection = 2.0;

    internal const int DefaultRank = 128;

    private const string Record = "record";

    /// <summary>
    /// The record worker: the exact active sets of every (position, layer) along the bench's sequence, named by the oracle (the
    /// exact selection of the dense thresholded model) as the pipeline runs, written to <paramref name="traceOut"/>.
    /// </summary>
    private static int RecordWorker(string layout, string? budget, int decode, string traceOut, string[] extra)
    {
        var overrides = new List<string> { "predictor=oracle", "window=5", "lookahead=off" };
        if (budget is not null) overrides.Add($"dram-budget={budget}");
        overrides.AddRange(extra);
        var config = RuntimeSettings.Compose([], overrides, defaults: ["process-reserve=0"]);
        int positions = PrefillTokens + decode;
        var recorder = new Runtime.Predict.TraceRecorder();
        using var runtime = FlashRuntime.Open(layout, config, positions, new RuntimeHooks { Record = recorder });
        var sequence = Sequence(runtime.Tokenizer, PrefillTokens, decode);
        Task.Run(async () =>
        {
            await using var session = await runtime.CreateSessionAsync();
            await foreach (var _ in session.GenerateTokensAsync(sequence, positions, SamplingOptions.Greedy, PrefillTokens)) { }
        }).GetAwaiter().GetResult();
        var c = runtime.Config;
        var trace = recorder.ToTrace(c.Layers, c.HiddenDim, sequence, runtime.Thresholds);
        int expected = positions * c.Layers;
        if (recorder.Count != expected)
            throw new InvalidOperationException($"recorded {recorder.Count} (position, layer) sets along {positions} positions x {c.Layers} layers = {expected}");
        trace.Save(traceOut);
        Console.WriteLine(BenchJson.Line(new TimingResult(Record, 0, 0)));
        return 0;
    }

    /// <summary>The activation trace of <paramref name="layout"/> along the bench's sequence at the layout's current thresholds, recorded once and cached.</summary>
    private static string TraceFor(string layout, int decode, float[]? thresholds, long cap)
    {
        var key = new List<byte>();
        key.AddRange(System.Text.Encoding.UTF8.GetBytes(Path.GetFullPath(layout).TrimEnd('/')));
        key.AddRange(BitConverter.GetBytes(PrefillTokens + decode));
        foreach (var t in thresholds ?? []) key.AddRange(BitConverter.GetBytes(t));
        key.AddRange(System.Text.Encoding.UTF8.GetBytes(Text + Runtime.Predict.ActivationTrace.Version));
        ulong hash = System.IO.Hashing.XxHash3.HashToUInt64(key.ToArray());
        // Kept in the layout folder, as the calibrated thresholds the bench writes there are: it belongs to that model.
        var file = Path.Combine(layout, $"bench-trace-{hash:x16}.flmtrace");
        if (File.Exists(file)) return file;
        Console.Error.WriteLine($"bench: recording the activation trace (the oracle's exact sets along {PrefillTokens + decode} positions) to {file}");
        // Offline and once: the oracle's weights are outside any cap here, and nothing of this run is timed.
        RunWorker(["--worker", Record, "--model", layout, "--dram-budget", cap.ToString(CultureInfo.InvariantCulture), "-n", decode.ToString(CultureInfo.InvariantCulture),
            "--trace-out", file], null);
        return file;
    }

    private static int Orchestrate(string layout, string? budgetText, double? sparsity, int decode, int reps, (string Name, string[] Settings)[] rungs,
        string[] extra, string? jsonFile, string? ggufPath, string? plotFile, string? gateCapText = null, Selection? selection = null)
    {
        selection ??= new Selection("trace", DefaultRecall, DefaultOverSelection, DefaultRank);
        long modelBytes, oracleBytes;
        ModelConfig config;
        float[]? thresholds = null;
        ActivityFrequencies? activity = null;
        bool trained, trainedLookahead;
        string ffnPath;
        bool pins = rungs.Any(r => r.Settings.Concat(extra).Any(x => x.StartsWith("pin=", StringComparison.Ordinal) && x != "pin=off"));
        using (var source = new FlashLayoutModel(layout))
        {
            config = source.Config;
            ffnPath = source.Ffn.FilePath;
            modelBytes = new FileInfo(source.DramPath).Length + new FileInfo(ffnPath).Length;
            // Predictor rungs use the layout's trained predictors when it has them (they count in the budget); otherwise the
            // oracle, whose own copy of the gate/up weights is outside the budget by definition: the process cap is then
            // raised by exactly those bytes, and the report says so.
            trained = source.PredictorKinds.Contains("same-layer");
            trainedLookahead = source.PredictorKinds.Contains("lookahead");
            // The oracle holds each neuron's gate part (OPT: up part) in its stored type, quantized in a quantized layout.
            oracleBytes = FlashRuntime.GateResidentBytes(source.Ffn, config.Architecture);
            if (config.Architecture == Architecture.Llama && !config.MoE && (sparsity is not null || source.Thresholds is null))
                (thresholds, activity) = BenchThresholds(source, layout, sparsity ?? 0.9,
                    // Frequencies only serve pinning: recording them runs the dense model once more (at 7B F16 in this process,
                    // beside the layout's own buffers), so a run without a pinning rung does not pay for it.
                    needActivity: pins);
        }
        if (config.MoE && pins) BenchExpertFrequencies(layout);
        if (config.Architecture == Architecture.Llama && !config.MoE && (sparsity is not null || thresholds is not null))
        {
            FlashLayoutWriter.WriteThresholds(layout, thresholds?.Select(t => (double)t).ToArray());
            if (activity is not null) FlashLayoutWriter.WriteActivity(layout, activity);
        }
        // Calibration ran the dense model in this process: give its memory back before the workers start (at 7B F16 it is
        // 13 GB, and the trace recorder and llama.cpp need the machine's memory next).
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        long cap = budgetText is null ? modelBytes / 2 : ByteSize.Parse(budgetText, "--dram-budget");
        long gateCap = GateCap(gateCapText, modelBytes);
        string? traceFile = null;
        if (trained)
        {
            rungs = rungs.Select(r => (r.Name, r.Settings.Select(x => x == "predictor=oracle"
                ? (r.Name.Split('+')[0] == "lookahead" && trainedLookahead ? "predictor=lookahead" : "predictor=lowrank") : x).ToArray())).ToArray();
        }
        else if (selection.Mode == "trace" && rungs.Any(r => r.Settings.Contains("predictor=oracle")))
        {
            // No predictor can be trained on random weights: the predictor rungs replay the exact sets at a trained predictor's
            // recall and over-selection, paying a rank-r predictor's memory and compute inside the cap.
            float[]? layoutThresholds;
            using (var source = new FlashLayoutModel(layout)) layoutThresholds = ThresholdResolver.Resolve(source, null);
            traceFile = TraceFor(layout, decode, layoutThresholds, cap);
            rungs = rungs.Select(r => (r.Name, r.Settings.SelectMany(x => x == "predictor=oracle" ? selection.Settings(traceFile) : [x]).ToArray())).ToArray();
        }
        // The cgroup caps the whole process at the budget, and the worker is given the same figure: the runtime measures what
        // the process itself holds when it opens and plans within the rest (flashlm.process-reserve = auto).
        long CapOf(string rung) => UnderGateCap(rung) ? gateCap : cap;
        // The cgroup limit a rung's worker runs under: its cap, raised by the oracle's weights (outside the budget by definition).
        long ProcessCapOf(string rung) => CapOf(rung) + (rungs.First(r => r.Name == rung).Settings.Contains("predictor=oracle") ? oracleBytes + OracleLoadingAllowance : 0);
        bool cgroup = Cgroup.Available;
        Console.Error.WriteLine(config.MoE
            ? "bench: mixture of experts: the router (the model's own, exact, in DRAM and in the budget) names the experts on every rung but experts-all"
            : trained
            ? "bench: predictor rungs use the layout's trained predictors (counted in the budget)"
            : traceFile is not null
                ? $"bench: no trained predictors in the layout: predictor rungs use trace-driven selection at recall {selection.Recall}, over-selection {selection.OverSelection}, " +
                  $"paying a rank-{selection.Rank} predictor's weights (inside the cap) and products; trace {traceFile}"
                : $"bench: no trained predictors in the layout: predictor rungs use the oracle, whose {FlashRuntime.Bytes(oracleBytes)} of weights are outside the budget (the process cap is raised by that much)");
        Console.Error.WriteLine($"bench: {config.Name} dim {config.Dim} layers {config.Layers}, model {FlashRuntime.Bytes(modelBytes)}, cap {FlashRuntime.Bytes(cap)} " +
                                $"({(cgroup ? "cgroup v1 memory limit" : "no cgroup: not root or no /sys/fs/cgroup/memory")}), the runtime plans within it less the process's own measured reserve, " +
                                $"{decode} decode steps x {reps} reps x {rungs.Length} rungs");
        var results = rungs.ToDictionary(r => r.Name, _ => new List<RungResult>());
        var llama = new List<TimingResult>();
        var inDram = new Dictionary<string, List<double>> { [Dense] = [], [LlamaCpp] = [] }; // no cap, page cache warm
        int llamaKilled = 0;
        string steps = decode.ToString(CultureInfo.InvariantCulture);
        for (int rep = 0; rep < reps; rep++)
        {
            if (ggufPath is not null)
            {
                Cgroup.DropPageCache();
                try
                {
                    var line = RunWorker(["--worker", LlamaCpp, "--gguf", ggufPath, "--model", layout, "-n", steps], cgroup ? cap : null);
                    llama.Add(BenchJson.Parse<TimingResult>(line, LlamaCpp));
                    Console.Error.WriteLine($"bench: rep {rep + 1}/{reps} llama.cpp: {llama[^1].MsPerToken:F1} ms/token");
                }
                catch (WorkerKilledException)
                {
                    // A contender that cannot run under the cap is a result, not an error.
                    llamaKilled++;
                    Console.Error.WriteLine($"bench: rep {rep + 1}/{reps} llama.cpp: killed by the memory cap ({FlashRuntime.Bytes(cap)})");
                }
            }
            if (ggufPath is not null)
            {
                // The whole model in DRAM, no cap: FlashLm's dense path against llama.cpp, alternating.
                foreach (var who in new[] { Dense, LlamaCpp })
                {
                    var line = RunWorker(["--worker", who, "--gguf", ggufPath, "--model", layout, "-n", steps], null);
                    inDram[who].Add(BenchJson.Parse<TimingResult>(line, who).MsPerToken);
                    Console.Error.WriteLine($"bench: rep {rep + 1}/{reps} in DRAM, no cap: {(who == Dense ? "FlashLm dense" : "llama.cpp")} {inDram[who][^1]:F1} ms/token");
                }
            }
            foreach (var (name, settings) in rungs)
            {
                Cgroup.DropPageCache();
                long rungCap = CapOf(name);
                var args = new List<string> { "--worker", name, "--model", layout, "--dram-budget", rungCap.ToString(CultureInfo.InvariantCulture), "-n", steps };
                foreach (var e in settings.Concat(extra)) args.AddRange(["--set", e]);
                bool oracle = settings.Contains("predictor=oracle");
                // The oracle's weights are rebuilt from the bundles one layer at a time: allow that transient too.
                var line = RunWorker(args, cgroup ? ProcessCapOf(name) : null);
                results[name].Add(BenchJson.Parse<RungResult>(line, name));
                var run = results[name][^1];
                Console.Error.WriteLine($"bench: rep {rep + 1}/{reps} {name}: {run.MsPerToken:F1} ms/token, {run.MessagesPerToken:F0} messages/token, predictor {run.Predictor}" +
                                        (run.LookaheadPrecision is { } lp ? $", lookahead guess precision {lp:P1} recall {run.LookaheadRecall:P1}" : "") +
                                        string.Create(CultureInfo.InvariantCulture, $", hits pinned {run.NeuronsPinnedHit:F0} window {run.NeuronsWindowHit:F0} of {run.NeuronsActive:F0} active ({run.PinnedRows} rows pinned), {run.BytesPerToken / 1048576:F2} MiB/token, mem {run.MemMs:F1} ms"));
            }
        }
        // The floor: the disk's own best throughput at each rung's mean read size (measured now, O_DIRECT, on the model's
        // ffn.bin), against compute: max(bytes per token / throughput, compute ms per token).
        int readers = RuntimeSettings.From(RuntimeSettings.Compose([], extra)).Loader.Readers;
        var table = new List<RungRow>();
        foreach (var (name, _) in rungs)
        {
            var runs = results[name];
            double Of(Func<RungResult, double> figure) => Median(runs.Select(figure));
            int size = (int)Math.Clamp(Runtime.Io.AlignedBuffer.AlignUp((long)Math.Max(Of(x => x.MeanReadBytes), 4096)), 4096, 1 << 24);
            Cgroup.DropPageCache();
            // The best the disk reaches at that read size: random positioned reads with the runtime's readers and with 64,
            // and sequential streams (what whole-layer reads look like), 2 s each.
            var tune = Runtime.Io.DiskTuner.Measure(ffnPath, new Runtime.Tuning.TuneOptions([size], new[] { readers, 64 }.Distinct().ToArray(), 2.0, size, [readers]));
            double mbps = tune.Random.Concat(tune.Sequential).Select(p => p.MBps).DefaultIfEmpty(0).Max();
            // The disk is shared and noisy: when the rung itself moved its bytes faster than the measurement above (bytes over
            // the time reads were in flight), that is the best the disk reached, and the floor uses it.
            double achieved = runs.Select(x => x.IoMs > 0 ? x.BytesPerToken / (x.IoMs * 1e3) : 0).Max();
            mbps = Math.Max(mbps, achieved);
            // The predictor runs in series with compute (a layer's reads wait for its prediction), so its time is part of the floor.
            double floorMs = Math.Max(mbps > 0 ? Of(x => x.BytesPerToken) / (mbps * 1e6) * 1000 : 0, Of(x => x.ComputeMs) + Of(x => x.PredictMs));
            table.Add(new RungRow(name, runs.Count, Of(x => x.MsPerToken), runs.Min(x => x.MsPerToken), runs.Max(x => x.MsPerToken), Of(x => x.TokensPerS),
                Of(x => x.BytesPerToken), Of(x => x.ReadsPerToken), Of(x => x.MeanReadBytes), Of(x => x.IoMs), Of(x => x.WaitMs), Of(x => x.OverlapMs),
                Of(x => x.MemMs), Of(x => x.PredictMs), Of(x => x.ComputeMs), Of(x => x.NeuronsActive), Of(x => x.NeuronsLoaded), Of(x => x.MessagesPerToken),
                mbps, floorMs, CapOf(name))
            {
                LookaheadPrecision = runs.All(x => x.LookaheadPrecision is not null) ? Median(runs.Select(x => x.LookaheadPrecision!.Value)) : null,
                LookaheadRecall = runs.All(x => x.LookaheadRecall is not null) ? Median(runs.Select(x => x.LookaheadRecall!.Value)) : null,
                Predictor = runs[0].Predictor,
                PeakRssBytes = runs.Max(x => x.PeakRssBytes),
                ProcessOverheadBytes = runs.Max(x => x.PeakRssBytes - x.DramBytes),
                ProcessReserveBytes = runs.Min(x => x.ProcessReserveBytes),
                ProcessCapBytes = ProcessCapOf(name),
                CpuMsPerToken = Of(x => x.CpuMsPerToken),
                NeuronsPinnedHit = Of(x => x.NeuronsPinnedHit),
                NeuronsWindowHit = Of(x => x.NeuronsWindowHit),
                PinnedRows = runs[0].PinnedRows,
                ExpertsUsed = config.MoE ? Of(x => x.NeuronsActive) / config.HiddenDim : null,
                ExpertsHit = config.MoE ? (Of(x => x.NeuronsWindowHit) + Of(x => x.NeuronsPinnedHit)) / config.HiddenDim : null,
                ExpertsRead = config.MoE ? Of(x => x.NeuronsLoaded) / config.HiddenDim : null,
            });
        }

        // A rung under a cap of its own (the gate rung) says so wherever it is named, and so does a rung that replays a trace.
        string Label(RungRow r) => r.Name + (r.Predictor?.StartsWith("trace-driven", StringComparison.Ordinal) == true ? $" ({r.Predictor})" : "")
                                   + (r.CapBytes == cap ? "" : $" (cap {FlashRuntime.Bytes(r.CapBytes)})");
        // The ladder's last rung at the common cap: what the floor and the comparison with llama.cpp refer to.
        var ladderLast = table.LastOrDefault(x => x.CapBytes == cap);
        Console.WriteLine($"CPU: {Environment.ProcessorCount} cores, {Kernels.CpuInfo.Describe()}\n");
        Console.WriteLine("| rung | ms/token (median) | min-max | tokens/s | MiB read/token | reads/token | mean read KiB | io ms | wait ms | overlap ms | mem ms | predict ms | compute ms | messages/token | best disk MB/s at that read size | floor ms/token | x floor | lookahead guess precision / recall | neurons/token: active, pinned hits, window hits, read (rows pinned) | peak RSS MiB (process cap) | CPU ms/token |");
        Console.WriteLine("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        foreach (var r in table)
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {Label(r)} | {r.MsPerToken:F1} | {r.MsPerTokenMin:F1}-{r.MsPerTokenMax:F1} | {r.TokensPerS:F2} | {r.BytesPerToken / 1048576:F2} | {r.ReadsPerToken:F0} | {r.MeanReadBytes / 1024:F1} | {r.IoMs:F1} | {r.WaitMs:F1} | {r.OverlapMs:F1} | {r.MemMs:F1} | {r.PredictMs:F1} | {r.ComputeMs:F1} | {r.MessagesPerToken:F0} | {r.DiskMbpsAtReadSize:F0} | {r.FloorMsPerToken:F1} | {r.MsPerToken / Math.Max(r.FloorMsPerToken, 1e-9):F2} | {(r.LookaheadPrecision is { } p ? $"{p:P1} / {r.LookaheadRecall:P1}" : "-")} | {r.NeuronsActive:F0}, {r.NeuronsPinnedHit:F0}, {r.NeuronsWindowHit:F0}, {r.NeuronsLoaded:F0} ({r.PinnedRows}) | {r.PeakRssBytes / 1048576.0:F0} ({r.ProcessCapBytes / 1048576.0:F0}) | {r.CpuMsPerToken:F0} |"));
        if (config.MoE)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"\nExperts per token over {config.Layers} layers ({config.ExpertsUsed} of {config.Experts} per layer; an expert is {config.HiddenDim} neurons): used, found cached (window or pinned), read; the pre-gated guess's precision / recall"));
            foreach (var r in table)
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"  {Label(r)}: {r.ExpertsUsed:F1}, {r.ExpertsHit:F1}, {r.ExpertsRead:F1}; {(r.LookaheadPrecision is { } gp ? $"{gp:P1} / {r.LookaheadRecall:P1}" : "no guess")}"));
        }
        if (table.Count > 0)
        {
            long overhead = table.Max(x => x.ProcessOverheadBytes);
            long reserved = table.Min(x => x.ProcessReserveBytes);
            string warning = table.Any(x => x.PeakRssBytes > x.ProcessCapBytes) ? " (a worker's peak RSS went OVER its cap)" : "";
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"\nProcess overhead measured (peak RSS beyond the runtime's own DRAM accounting, largest over rungs; with the oracle's weights where a rung uses it): {overhead / 1048576.0:F0} MiB; the runtimes reserved at least {reserved / 1048576.0:F0} MiB of each cap for the process (resident set at open + flashlm.process-allowance){warning}"));
        }

        LlamaCppSummary? llamaSummary = llama.Count > 0
            ? new LlamaCppSummary(Median(llama.Select(x => x.MsPerToken)), Median(llama.Select(x => x.TokensPerS)), llama.Count, llamaKilled, LlamaCppSettings)
            : llamaKilled > 0 ? new LlamaCppSummary(null, 0, 0, llamaKilled, LlamaCppSettings) : null;
        InDramSummary? inDramSummary = null;
        if (inDram[Dense].Count > 0)
        {
            double d = Median(inDram[Dense]), l = Median(inDram[LlamaCpp]);
            inDramSummary = new InDramSummary(d, l, l / d, inDram[Dense].Count, [.. inDram[Dense]], [.. inDram[LlamaCpp]]);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"\nWhole model in DRAM, no cap (median of {inDram[Dense].Count}): FlashLm dense {d:F1} ms/token, llama.cpp {l:F1} ms/token; FlashLm is {l / d:F2}x llama.cpp's speed"));
        }
        var report = new BenchReport(
            Machine: $"{Environment.ProcessorCount} cores, {Kernels.CpuInfo.Describe()}, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}, {System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture}",
            Model: new BenchModel(layout, config.Architecture == Architecture.Llama ? config.GgufArchitecture : config.Architecture.ToString(), config.Dim, config.HiddenDim, config.Layers, modelBytes),
            DramBudgetBytes: cap, RuntimeBudgetBytes: results.Values.SelectMany(x => x).Where(x => x.DramBudgetBytes > 0).Select(x => x.DramBudgetBytes).DefaultIfEmpty(cap).Min(), Cgroup: cgroup,
            Predictor: (trained ? "lowrank" : traceFile is not null ? Runtime.Predict.TraceDegradation.Of(selection.Recall, selection.OverSelection, selection.Rank) + " (inside the cap)"
                           : "oracle (outside the cap)") + (table.Any(x => UnderGateCap(x.Name)) ? $"; gate rung: gate-resident (inside its cap of {FlashRuntime.Bytes(gateCap)})" : ""),
            DecodeTokens: decode,
            FloorMsPerToken: ladderLast?.FloorMsPerToken,
            Rungs: table, Llamacpp: llamaSummary, InDram: inDramSummary);
        if (llama.Count == 0 && llamaKilled > 0)
            Console.WriteLine($"\nllama.cpp (mmap, same cap of {FlashRuntime.Bytes(cap)}): killed by the memory cap in {llamaKilled} of {llamaKilled} runs (0 tokens/s)");
        if (llamaSummary is { MsPerToken: { } lms } && table.Count > 0)
        {
            // Every rung against llama.cpp: the fastest is not always the last (pinning measured slower than lookahead), and the
            // gate rung runs under its own, larger cap.
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"\nllama.cpp (mmap, cap {FlashRuntime.Bytes(cap)}): {lms:F1} ms/token ({1000 / lms:F2} tokens/s); FlashLm:"));
            foreach (var x in table)
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"  {x.Name}: {x.MsPerToken:F1} ms/token, {lms / x.MsPerToken:F2}x llama.cpp's speed{(x.CapBytes == cap ? "" : $" (under its own cap of {FlashRuntime.Bytes(x.CapBytes)})")}"));
        }
        if (jsonFile is not null) File.WriteAllText(jsonFile, System.Text.Json.JsonSerializer.Serialize(report, BenchJson.Indented));
        if (plotFile is not null)
        {
            Plot(report, plotFile, reps);
            Console.Error.WriteLine($"bench: wrote {plotFile}");
        }
        return 0;
    }

    /// <summary>
    /// SwiGLU thresholds for <paramref name="sparsity"/> (null for 0: dense) and each neuron's activation frequency under them
    /// (what pin = auto ranks neurons by): calibrated once on self-generated text (64 tokens) and kept in the layout folder as
    /// bench-thresholds-S.txt and bench-activity-S.bin, so runs at 50 % and 90 % can alternate on one layout.
    /// </summary>
    private static (float[]? Thresholds, ActivityFrequencies? Activity) BenchThresholds(FlashLayoutModel source, string layout, double sparsity, bool needActivity = true)
    {
        if (!(sparsity >= 0 && sparsity < 1)) throw new ArgumentException($"--sparsity {sparsity}: must be in [0, 1)");
        if (sparsity == 0) return (null, null);
        string stem = string.Create(CultureInfo.InvariantCulture, $"{sparsity:0.####}");
        var file = Path.Combine(layout, $"bench-thresholds-{stem}.txt");
        var activityFile = Path.Combine(layout, $"bench-activity-{stem}.bin");
        var c = source.Config;
        float[]? thresholds = null;
        if (File.Exists(file))
        {
            var kept = File.ReadAllLines(file).Where(l => l.Length > 0).Select(l => float.Parse(l, CultureInfo.InvariantCulture)).ToArray();
            if (kept.Length == c.Layers) thresholds = kept;
        }
        if (thresholds is not null && ReadActivity(activityFile, c.Layers, c.HiddenDim) is { } stored) return (thresholds, stored);
        if (thresholds is not null && !needActivity) return (thresholds, null);
        var sequences = Calibrator.Sequences(source, null, 64);
        ActivityFrequencies activity;
        if (thresholds is null)
        {
            Console.Error.WriteLine($"bench: calibrating {sparsity:P0} sparsity thresholds (self-generated text, 64 tokens)");
            var calibration = Calibrator.Calibrate(source, sequences, sparsity);
            thresholds = calibration.Thresholds;
            activity = new ActivityFrequencies(calibration.Positions, calibration.Frequencies);
            File.WriteAllLines(file + ".part", thresholds.Select(t => t.ToString("R", CultureInfo.InvariantCulture)));
            File.Move(file + ".part", file, overwrite: true);
        }
        else
        {
            Console.Error.WriteLine($"bench: recording activation frequencies under the {sparsity:P0} thresholds (self-generated text, 64 tokens)");
            activity = new ActivityFrequencies(sequences.Sum(q => q.Length), Calibrator.Frequencies(source, sequences, thresholds));
        }
        WriteActivity(activityFile, activity);
        return (thresholds, activity);
    }

    /// <summary>
    /// Mixture of experts: how often the router chooses each expert (what pin = auto ranks experts by), measured once with the
    /// dense MoE model on self-generated text (256 tokens, seeded) and stored in the layout; kept when the layout has them.
    /// </summary>
    private static void BenchExpertFrequencies(string layout)
    {
        using var source = new FlashLayoutModel(layout);
        if (source.LoadActivity() is not null) return;
        const int tokens = 256;
        Console.Error.WriteLine($"bench: recording how often the router chooses each expert (dense MoE, self-generated text, {tokens} tokens)");
        var sequences = Calibrator.Sequences(source, null, tokens);
        var frequencies = Calibrator.ExpertFrequencies(source, sequences);
        FlashLayoutWriter.WriteActivity(layout, new ActivityFrequencies(sequences.Sum(q => q.Length), frequencies));
    }

    /// <summary>bench-activity-S.bin: positions (int32), then layers x neurons float32 frequencies; null when absent or not that shape.</summary>
    private static ActivityFrequencies? ReadActivity(string path, int layers, int neurons)
    {
        if (!File.Exists(path)) return null;
        var bytes = File.ReadAllBytes(path);
        if (bytes.Length != 4 + 4L * layers * neurons) return null;
        int positions = BitConverter.ToInt32(bytes, 0);
        var all = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes.AsSpan(4));
        var f = new float[layers][];
        for (int l = 0; l < layers; l++) f[l] = all.Slice(l * neurons, neurons).ToArray();
        return positions > 0 && f.All(x => x.All(v => v >= 0 && v <= 1)) ? new ActivityFrequencies(positions, f) : null;
    }

    private static void WriteActivity(string path, ActivityFrequencies a)
    {
        using (var s = new FileStream(path + ".part", FileMode.Create, FileAccess.Write))
        {
            s.Write(BitConverter.GetBytes(a.Positions));
            foreach (var layer in a.Frequencies) s.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(layer.AsSpan()));
        }
        File.Move(path + ".part", path, overwrite: true);
    }

    /// <summary>The gate rung's cap: a size, or a share of the model in (0, 1] (default 0.65).</summary>
    internal static long GateCap(string? text, long modelBytes)
    {
        if (text is null) return (long)(modelBytes * 0.65);
        if (double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var share))
        {
            if (!(share > 0 && share <= 1)) throw new ArgumentException($"--gate-cap {text}: a share of the model must be in (0, 1]");
            return (long)(modelBytes * share);
        }
        return ByteSize.Parse(text, "--gate-cap");
    }

    private const string LlamaCppSettings =
        "LLamaSharp 0.30.0, CPU backend, llama.cpp defaults with the model memory-mapped (LoadMode = MemoryMap; LLamaSharp's own default is not mmap), all cores, same cap";

    private static string RunWorker(List<string> args, long? cap)
    {
        var self = Environment.ProcessPath ?? "dotnet";
        var dll = typeof(BenchCommand).Assembly.Location;
        string command = self.EndsWith("dotnet", StringComparison.Ordinal) ? $"'{self}' '{dll}'" : $"'{self}'";
        string shell = command + " " + string.Join(' ', args.Select(a => "'" + a.Replace("'", "'\\''") + "'"));
        string? group = cap is { } c ? Cgroup.Create(c) : null;
        try
        {
            var psi = new ProcessStartInfo("/bin/sh") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            // Inside a memory group .NET caps its managed heap at 75 % of the group's limit by default; the cap is the
            // budget here, so let the heap use all of it (the value is hexadecimal bytes).
            if (cap is { } limit) psi.Environment["DOTNET_GCHeapHardLimit"] = limit.ToString("x", CultureInfo.InvariantCulture);
            psi.ArgumentList.Add("-c");
            // Join the memory group first, then become the worker: the cap covers the whole process from its start.
            psi.ArgumentList.Add(group is null ? "exec " + shell : $"echo $$ > {group}/cgroup.procs && exec {shell}");
            using var p = Process.Start(psi)!;
            var stdout = p.StandardOutput.ReadToEndAsync();
            var stderr = p.StandardError.ReadToEndAsync();
            p.WaitForExit();
            if (p.ExitCode == 137 && group is not null)
                throw new WorkerKilledException($"bench worker {args[1]} was killed: over the memory cap of {FlashRuntime.Bytes(cap!.Value)}");
            if (p.ExitCode != 0)
                throw new InvalidOperationException($"bench worker {args[1]} failed (exit {p.ExitCode}): {stderr.Result.Trim()}");
            return stdout.Result.Trim().Split('\n')[^1];
        }
        finally
        {
            if (group is not null) Cgroup.Remove(group);
        }
    }
}

/// <summary>A benchmark worker was killed by its cgroup's memory limit.</summary>
internal sealed class WorkerKilledException(string message) : InvalidOperationException(message);
