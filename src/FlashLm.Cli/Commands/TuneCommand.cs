using System.CommandLine;
using System.Globalization;
using FlashLm.Formats.FlashLayout;
using FlashLm.Runtime.Config;
using FlashLm.Runtime.Io;
using FlashLm.Runtime.Tuning;

namespace FlashLm.Cli.Commands;

/// <summary>
/// `flashlm tune`: measures the disk with O_DIRECT reads (MB/s and IOPS by read size and parallel readers,
/// plus sequential reads), prints the tables as markdown on stdout and writes a HOCON profile with the
/// loader settings chosen for a model's bundle size.
/// </summary>
public static class TuneCommand
{
    /// <summary>A Llama-7B FFN bundle in F16: gate row, up row and down column of 4096 values, 2 bytes each.</summary>
    public const long DefaultBundleBytes = 3 * 4096 * 2;

    public static Command Build()
    {
        var file = new Option<string?>("--file") { Description = "existing file to read (default: create a test file beside --out, deleted afterwards)" };
        var size = new Option<string?>("--size") { Description = "size of the created test file (default 4GiB, --quick 1GiB)" };
        var output = new Option<string>("--out", "-o") { Description = "HOCON profile to write", DefaultValueFactory = _ => Path.Combine("hocon", "tuned.conf") };
        var model = new Option<string?>("--model") { Description = "flash-layout folder whose bundle size to tune for (default: a 24 KiB Llama-7B F16 bundle)" };
        var seconds = new Option<double?>("--seconds-per-point") { Description = "measuring time per point (default 0.5, --quick 0.1)" };
        var quick = new Option<bool>("--quick") { Description = "fewer points (4K..1M in steps of 4x, 1/4/16/64 readers), 0.1 s each, 1 GiB file" };
        var sizes = new Option<string?>("--sizes") { Description = "read sizes to measure, comma-separated (e.g. 4KiB,64KiB,1MiB); multiples of 4096" };
        var readers = new Option<string?>("--readers") { Description = "parallel reader counts to measure, comma-separated (e.g. 1,8,64)" };
        var keep = new Option<bool>("--keep") { Description = "keep the created test file" };
        var cmd = new Command("tune", "Measure the disk with O_DIRECT reads and write a loader profile (readers, threads, coalesce-gap, max-read).")
            { file, size, output, model, seconds, quick, sizes, readers, keep };
        cmd.SetAction(r => CliErrors.Guard(() => Run(
            r.GetValue(file), r.GetValue(size), r.GetValue(output)!, r.GetValue(model), r.GetValue(seconds), r.GetValue(quick),
            r.GetValue(sizes), r.GetValue(readers), r.GetValue(keep))));
        return cmd;
    }

    private static int Run(string? file, string? sizeText, string output, string? model, double? seconds, bool quick,
        string? sizesText, string? readersText, bool keep)
    {
        // Everything is checked before the long part starts.
        long bundleBytes = DefaultBundleBytes;
        string bundleSource = "default: Llama-7B F16, 3 x 4096 x 2 bytes";
        if (model is not null)
        {
            if (!FlashLayoutModel.IsLayoutFolder(model))
                throw new ArgumentException($"{model}: --model needs a flash-layout folder (see flashlm convert)");
            using var layout = new FlashLayoutModel(model);
            bundleBytes = layout.Ffn.BundleBytes;
            bundleSource = $"from {Path.GetFullPath(model)}, {layout.Ffn.DType}, stride {TuneReport.Size(layout.Ffn.BundleStride)}";
        }
        int bundleRead = (int)Runtime.Io.AlignedBuffer.AlignUp(bundleBytes);
        var options = quick ? TuneOptions.Quick(bundleRead) : TuneOptions.Full(bundleRead);
        if (sizesText is not null) options = options with { Sizes = ParseList(sizesText, "--sizes", s => (int)Math.Min(int.MaxValue, ByteSize.Parse(s, "--sizes"))) };
        if (readersText is not null) options = options with { Parallelisms = ParseList(readersText, "--readers", s => int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) ? v : throw new ArgumentException($"--readers: '{s}' is not an integer")) };
        if (seconds is { } sp) options = options with { SecondsPerPoint = sp };
        options.Validate();
        if (options.Sizes.Max() > 1 << 30) throw new ArgumentException("--sizes: reads above 1 GiB are not supported");

        string outFull = Path.GetFullPath(output);
        if (Directory.Exists(outFull)) throw new ArgumentException($"--out {output} is a folder; give a file name such as {Path.Combine(output, "tuned.conf")}");
        string outDir = Path.GetDirectoryName(outFull)!;

        bool created = false;
        string path;
        if (file is not null)
        {
            if (sizeText is not null) throw new ArgumentException("--size applies only to the test file tune creates; it cannot be combined with --file");
            if (!File.Exists(file)) throw new FileNotFoundException($"--file {file}: no such file");
            path = file;
        }
        else
        {
            long bytes = sizeText is null ? (quick ? 1L << 30 : 4L << 30) : ByteSize.Parse(sizeText, "--size");
            long needed = 2L * options.Sizes.Append(options.SequentialReadBytes).Max();
            if (bytes < Math.Max(needed, 1 << 20)) throw new ArgumentException($"--size {sizeText}: the test file must hold at least {TuneReport.Size(Math.Max(needed, 1 << 20))}");
            // The test file goes on the file system being tuned: the profile's folder (created if needed).
            Directory.CreateDirectory(outDir);
            path = Path.Combine(outDir, $"flashlm-tune-{Environment.ProcessId}.bin");
            using var cts = new CtrlC();
            Progress.Run($"writing test file {path} ({TuneReport.Size(bytes)})", p => DiskTuner.CreateTestFile(path, bytes, p, cts.Token));
            created = true;
        }

        try
        {
            Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"measuring {options.Points} points x {options.SecondsPerPoint:0.###} s = about {FormatDuration(options.EstimatedSeconds)} on {path}"));
            TuneResult result = null!;
            using (var cts = new CtrlC())
                Progress.Run("measuring", p => result = DiskTuner.Measure(path, options, p, cts.Token));
            if (!result.Direct) Console.Error.WriteLine($"flashlm: warning: {path}: the file system refused O_DIRECT; the figures include the page cache");
            var choice = DiskTuner.Recommend(result, bundleBytes);
            Console.Write(TuneReport.Markdown(result));
            DiskTuner.WriteProfile(outFull, result, choice, bundleSource);
            Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"wrote {output}: readers = {choice.Readers}, threads = {choice.Threads}, coalesce-gap = {TuneReport.Hocon(choice.CoalesceGap)}, max-read = {TuneReport.Hocon(choice.MaxRead)} (bundle {TuneReport.Size(bundleBytes)})"));
            return 0;
        }
        finally
        {
            if (created && !keep) File.Delete(path);
            else if (created) Console.Error.WriteLine($"kept test file {path}");
        }
    }

    private static int[] ParseList(string text, string option, Func<string, int> parse)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0) throw new ArgumentException($"{option}: empty list");
        return parts.Select(parse).Distinct().Order().ToArray();
    }

    private static string FormatDuration(double s) =>
        s < 90 ? string.Create(CultureInfo.InvariantCulture, $"{s:0} s") : string.Create(CultureInfo.InvariantCulture, $"{s / 60:0.#} min");

    /// <summary>Ctrl+C cancels the work (so the test file is still deleted) instead of killing the process.</summary>
    private sealed class CtrlC : IDisposable
    {
        private readonly CancellationTokenSource _cts = new();
        private readonly ConsoleCancelEventHandler _handler;

        public CtrlC()
        {
            _handler = (_, e) =>
            {
                e.Cancel = true;
                _cts.Cancel();
            };
            Console.CancelKeyPress += _handler;
        }

        public CancellationToken Token => _cts.Token;

        public void Dispose()
        {
            Console.CancelKeyPress -= _handler;
            _cts.Dispose();
        }
    }
}
