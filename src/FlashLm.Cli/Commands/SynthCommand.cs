using System.CommandLine;
using System.Diagnostics;
using FlashLm.Formats;
using FlashLm.Formats.Synth;

namespace FlashLm.Cli.Commands;

/// <summary>
/// `flashlm synth`: writes a model with seeded random weights at a named or given shape, as GGUF (llama) or a
/// Hugging Face safetensors folder (llama or OPT), streamed to disk so real-size models never sit in DRAM.
/// </summary>
public static class SynthCommand
{
    public static Command Build()
    {
        var shape = new Option<string?>("--shape") { Description = $"named shape: {string.Join(", ", SyntheticShapes.All.Keys)}" };
        var dim = new Option<int?>("--dim") { Description = "model width" };
        var hidden = new Option<int?>("--hidden") { Description = "FFN width (neurons per layer)" };
        var layers = new Option<int?>("--layers") { Description = "number of blocks" };
        var heads = new Option<int?>("--heads") { Description = "attention heads" };
        var kvHeads = new Option<int?>("--kv-heads") { Description = "key/value heads (default: --heads)" };
        var vocab = new Option<int?>("--vocab") { Description = "vocabulary size (default 512)" };
        var context = new Option<int?>("--context") { Description = "context length (default 256)" };
        var arch = new Option<string?>("--arch") { Description = "llama or opt (default llama)" };
        var format = new Option<string>("--format") { Description = "gguf (a file) or hf (a Hugging Face folder)", DefaultValueFactory = _ => "gguf" };
        var dtype = new Option<string>("--dtype") { Description = "f32 or f16 for the matrices (norms and biases stay f32)", DefaultValueFactory = _ => "f32" };
        var seed = new Option<ulong>("--seed", "-s") { Description = "random seed of the weights", DefaultValueFactory = _ => SyntheticModel.DefaultSeed };
        var output = new Option<string>("--out", "-o") { Description = "output file (gguf) or folder (hf)", Required = true };
        var cmd = new Command("synth", "Write a synthetic model (random weights at a real model's shape) for tests and benchmarks.")
        {
            shape, dim, hidden, layers, heads, kvHeads, vocab, context, arch, format, dtype, seed, output,
        };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            var config = Config(r.GetValue(shape), r.GetValue(dim), r.GetValue(hidden), r.GetValue(layers), r.GetValue(heads),
                r.GetValue(kvHeads), r.GetValue(vocab), r.GetValue(context), r.GetValue(arch));
            var type = SyntheticModel.ParseDType(r.GetValue(dtype)!);
            var fmt = r.GetValue(format)!.Trim().ToLowerInvariant();
            if (fmt is not ("gguf" or "hf"))
                throw new ArgumentException($"unknown format '{fmt}' (use gguf or hf)");
            if (fmt == "gguf" && config.Architecture != Architecture.Llama)
                throw new ArgumentException($"GGUF output supports the llama architecture only; write {config.Architecture} models with --format hf");
            var outPath = Path.GetFullPath(r.GetValue(output)!);
            config.Validate(outPath);
            long bytes = SyntheticModel.TensorBytes(config, type);
            CheckFreeSpace(outPath, bytes);
            string experts = config.MoE ? $" experts {config.ExpertsUsed} of {config.Experts}" : "";
            string headDim = config.HeadDim > 0 ? $" head dim {config.HeadDim}" : "";
            Console.Error.WriteLine(
                $"{(config.Architecture == Architecture.Llama ? config.GgufArchitecture : config.Architecture)} dim {config.Dim} hidden {config.HiddenDim}{experts} layers {config.Layers} heads {config.Heads}/{config.KvHeads}{headDim} " +
                $"vocab {config.VocabSize} context {config.ContextLength}, {type}: {FlashLm.Runtime.FlashRuntime.Bytes(bytes)} of tensors");
            ulong s = r.GetValue(seed);
            var clock = Stopwatch.StartNew();
            if (fmt == "gguf")
            {
                if (Path.GetDirectoryName(outPath) is { } parent) Directory.CreateDirectory(parent);
                Progress.Run($"writing {Path.GetFileName(outPath)}", p => SyntheticModel.WriteGguf(outPath, config, type, s, p));
            }
            else
            {
                Progress.Run($"writing {Path.GetFileName(outPath)}", p => SyntheticModel.WriteHf(outPath, config, type, s, p));
            }
            double secs = clock.Elapsed.TotalSeconds;
            long written = File.Exists(outPath) ? new FileInfo(outPath).Length
                : new DirectoryInfo(outPath).EnumerateFiles().Sum(f => f.Length);
            Console.Error.WriteLine($"wrote {outPath}: {FlashLm.Runtime.FlashRuntime.Bytes(written)} in {secs:F1} s ({written / (double)(1 << 20) / Math.Max(secs, 1e-3):F0} MiB/s)");
            return 0;
        }));
        return cmd;
    }

    /// <summary>The shape: a named one (explicit options override its fields), or one built from the options alone.</summary>
    public static ModelConfig Config(string? shape, int? dim, int? hidden, int? layers, int? heads, int? kvHeads, int? vocab, int? context, string? arch)
    {
        Architecture? a = arch?.Trim().ToLowerInvariant() switch
        {
            null => null,
            "llama" => Architecture.Llama,
            "opt" => Architecture.Opt,
            _ => throw new ArgumentException($"unknown architecture '{arch}' (use llama or opt)"),
        };
        ModelConfig c;
        if (shape is not null)
        {
            c = SyntheticShapes.Get(shape);
            if (a is { } given && given != c.Architecture)
                throw new ArgumentException($"shape '{shape}' is {c.Architecture}; --arch {arch} contradicts it");
        }
        else
        {
            var missing = new[] { ("--dim", dim), ("--hidden", hidden), ("--layers", layers), ("--heads", heads) }
                .Where(x => x.Item2 is null).Select(x => x.Item1).ToList();
            if (missing.Count > 0)
                throw new ArgumentException($"give --shape NAME, or all of --dim, --hidden, --layers and --heads (missing: {string.Join(", ", missing)})");
            var architecture = a ?? Architecture.Llama;
            c = new ModelConfig
            {
                Architecture = architecture, Dim = dim!.Value, HiddenDim = hidden!.Value, Layers = layers!.Value, Heads = heads!.Value,
                KvHeads = heads.Value, VocabSize = 512, ContextLength = 256,
                TiedEmbeddings = architecture == Architecture.Opt, PositionOffset = architecture == Architecture.Opt ? 2 : 0,
            };
        }
        c = c with
        {
            Dim = dim ?? c.Dim, HiddenDim = hidden ?? c.HiddenDim, Layers = layers ?? c.Layers, Heads = heads ?? c.Heads,
            KvHeads = kvHeads ?? heads ?? c.KvHeads,
            VocabSize = vocab ?? c.VocabSize, ContextLength = context ?? c.ContextLength,
        };
        if (c.Architecture == Architecture.Opt && c.KvHeads != c.Heads)
            throw new ArgumentException($"OPT has no grouped-query attention: --kv-heads ({c.KvHeads}) must equal --heads ({c.Heads})");
        int minVocab = c.Architecture == Architecture.Llama ? 323 : 260;
        if (c.VocabSize < minVocab)
            throw new ArgumentException($"a synthetic {c.Architecture} vocabulary needs at least {minVocab} tokens, got --vocab {c.VocabSize}");
        return c;
    }

    private static void CheckFreeSpace(string outPath, long bytes)
    {
        var dir = Path.GetDirectoryName(outPath) ?? outPath;
        while (!Directory.Exists(dir) && Path.GetDirectoryName(dir) is { } up) dir = up;
        try
        {
            long free = new DriveInfo(dir).AvailableFreeSpace;
            if (free < bytes + (64L << 20))
                throw new IOException($"not enough disk space for {outPath}: the model needs {FlashLm.Runtime.FlashRuntime.Bytes(bytes)}, {FlashLm.Runtime.FlashRuntime.Bytes(free)} free");
        }
        catch (ArgumentException)
        {
            // no drive information for this path: let the write itself fail if space runs out
        }
    }
}
