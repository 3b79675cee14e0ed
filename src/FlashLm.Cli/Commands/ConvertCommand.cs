using System.CommandLine;
using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using Spectre.Console;

namespace FlashLm.Cli.Commands;

/// <summary>`flashlm convert SOURCE --out DIR`: writes the flash layout (DRAM file, FFN bundle file, manifest).</summary>
public static class ConvertCommand
{
    public static Command Build()
    {
        var source = new Argument<string>("source") { Description = "llama2.c .bin, GGUF file or Hugging Face folder" };
        var tokenizer = new Option<string?>("--tokenizer", "-z") { Description = "tokenizer .bin for llama2.c models" };
        var output = new Option<string>("--out", "-o") { Description = "output folder", Required = true };
        var dtype = new Option<string?>("--dtype")
        {
            Description = "storage type F32 or F16 (default: a quantized source stays quantized; else F16 if the source is all F16, else F32)",
        };
        var downType = new Option<string?>("--down-type")
        {
            Description = "quantized sources: the type down columns are re-quantized to, Q8_0, Q6_K, Q5_K or Q4_K (K types need dim % 256 == 0); default: the smallest at least as precise as the source's down matrices (Q6_K for Q2_K..Q6_K and Q4_0..Q5_1 sources when dim % 256 == 0, else Q8_0)",
        };
        var cmd = new Command("convert", "Convert a model to the flash layout (one contiguous, 4096-aligned bundle per FFN neuron).") { source, tokenizer, output, dtype, downType };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            using var ctrlC = CtrlC.Listen();
            using var model = ModelLoader.Open(r.GetValue(source)!, r.GetValue(tokenizer));
            var type = r.GetValue(dtype) is { } d ? DTypeInfo.Parse(d) : (DType?)null;
            var down = r.GetValue(downType) is { } dt ? DTypeInfo.Parse(dt) : (DType?)null;
            var outDir = r.GetValue(output)!;
            RemoveStaleTemporaries(outDir);
            // The writer deletes its temporary folder when anything throws, so cancelling from a progress report
            // (every tensor and every 4 MiB of ffn.bin) cleans up a Ctrl-C.
            ConvertReport? report = null;
            Progress.Run($"converting {Path.GetFileName(model.Path)} to {outDir}", p => report = FlashLayoutWriter.Convert(model, outDir, type,
                new CancellingProgress(p, ctrlC.Token), down));
            var parts = string.Join(" + ", report!.Parts.Select(x => $"{x.Name} {x.DType} {x.Bytes} B"));
            var c = model.Config;
            string neurons = c.MoE ? $"{c.Experts} experts x {c.HiddenDim} neurons ({c.ExpertsUsed} used per token)" : $"{c.HiddenDim} neurons";
            Console.Error.WriteLine($"wrote {outDir}: {c.Layers} layers x {neurons}; bundle {report.BundleBytes} B ({parts}), stride {report.BundleStride} B");
            if (report.DownError is { } e) Console.Error.WriteLine($"flashlm: {e}");
            return 0;
        }));
        return cmd;
    }

    /// <summary>
    /// Deletes the temporary folders (`OUT.tmp-` + 32 hex digits, the writer's naming) that earlier converts to
    /// the same output left when they were killed before they could clean up; nothing else is touched.
    /// </summary>
    public static IReadOnlyList<string> RemoveStaleTemporaries(string outDir)
    {
        var full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(outDir));
        var parent = Path.GetDirectoryName(full);
        var removed = new List<string>();
        if (parent is null || !Directory.Exists(parent)) return removed;
        var prefix = Path.GetFileName(full) + ".tmp-";
        foreach (var dir in Directory.EnumerateDirectories(parent, prefix + "*"))
        {
            var suffix = Path.GetFileName(dir)[prefix.Length..];
            if (suffix.Length != 32 || !suffix.All(char.IsAsciiHexDigitLower)) continue;
            Directory.Delete(dir, recursive: true);
            Console.Error.WriteLine($"flashlm: removed {dir} (left by an interrupted convert)");
            removed.Add(dir);
        }
        return removed;
    }

    /// <summary>Forwards progress and throws OperationCanceledException at the first report after cancellation.</summary>
    private sealed class CancellingProgress(IProgress<(long Done, long Total)> inner, CancellationToken token) : IProgress<(long, long)>
    {
        public void Report((long, long) value)
        {
            token.ThrowIfCancellationRequested();
            inner.Report(value);
        }
    }
}

/// <summary>A Spectre.Console progress bar on stderr (plain lines when stderr is not a terminal).</summary>
public static class Progress
{
    public static void Run(string title, Action<IProgress<(long Done, long Total)>> work)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        if (!console.Profile.Capabilities.Interactive)
        {
            long lastPercent = -1;
            work(new Reporter(v =>
            {
                long pct = v.Total > 0 ? v.Done * 100 / v.Total : 100;
                if (pct / 10 != lastPercent / 10) Console.Error.WriteLine($"{title}: {pct} %");
                lastPercent = pct;
            }));
            return;
        }
        console.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask(Markup.Escape(title));
                work(new Reporter(v =>
                {
                    task.MaxValue = Math.Max(1, v.Total);
                    task.Value = v.Done;
                }));
            });
    }

    private sealed class Reporter(Action<(long Done, long Total)> report) : IProgress<(long Done, long Total)>
    {
        public void Report((long Done, long Total) value) => report(value);
    }
}
