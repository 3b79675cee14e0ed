using System.CommandLine;
using System.Diagnostics;
using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Runtime.Io;

namespace FlashLm.Cli.Commands;

/// <summary>
/// `flashlm verify LAYOUT`: checks every checksum of a flash layout (DRAM tensors, every FFN bundle, predictors)
/// with a progress bar; lists the first bad items by file, layer, neuron and offset; exits 1 when any is bad.
/// `--cost` instead measures what the read-time check costs: XxHash3 throughput on bundles against O_DIRECT read
/// throughput of random bundles on this machine.
/// </summary>
public static class VerifyCommand
{
    public static Command Build()
    {
        var layout = new Argument<string>("layout") { Description = "flash-layout folder" };
        var show = new Option<int>("--show") { Description = "bad items to list (all are counted)", DefaultValueFactory = _ => 20 };
        var cost = new Option<bool>("--cost") { Description = "measure the read-time check's cost (hashing vs O_DIRECT reads) instead of verifying" };
        var seconds = new Option<double>("--seconds") { Description = "--cost: seconds per measurement", DefaultValueFactory = _ => 3 };
        var readers = new Option<int>("--readers") { Description = "--cost: parallel readers (reads in flight)", DefaultValueFactory = _ => 8 };
        var cmd = new Command("verify", "Check every checksum of a flash layout (DRAM tensors, FFN bundles, predictors).") { layout, show, cost, seconds, readers };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            var folder = r.GetValue(layout)!;
            using var model = new FlashLayoutModel(folder);
            if (r.GetValue(cost)) return Cost(model, TimeSpan.FromSeconds(r.GetValue(seconds)), Math.Max(1, r.GetValue(readers)));
            LayoutVerifyResult result = null!;
            var watch = Stopwatch.StartNew();
            Progress.Run($"verifying {folder}", p => result = LayoutVerifier.Run(model, Math.Max(0, r.GetValue(show)), p));
            foreach (var problem in result.Problems) Console.Error.WriteLine($"bad: {problem}");
            if (result.Bad > result.Problems.Count) Console.Error.WriteLine($"... and {result.Bad - result.Problems.Count} more");
            string scope = result.BundleLevel
                ? "every bundle against ffn.sums"
                : "FFN sections only: this layout was written before per-bundle checksums (the flash runtime refuses it; re-convert)";
            Console.Error.WriteLine($"{folder}: {result.Checked} items checked ({scope}) in {watch.Elapsed.TotalSeconds:F1} s: " +
                                    (result.Ok ? "all good" : $"{result.Bad} bad"));
            return result.Ok ? 0 : 1;
        }));
        return cmd;
    }

    /// <summary>
    /// Hash throughput over the layout's bundles (one thread, data in DRAM) against O_DIRECT reads of random single
    /// bundles with <paramref name="readers"/> in flight: the check runs on the reader's thread after each read, so
    /// its cost is (hash time per bundle) / (read time per bundle).
    /// </summary>
    private static unsafe int Cost(FlashLayoutModel model, TimeSpan duration, int readers)
    {
        var ffn = model.Ffn;
        var sums = model.LoadBundleChecksums();
        int stride = (int)ffn.BundleStride, bundle = (int)ffn.BundleBytes;
        int readBytes = (int)AlignedBuffer.AlignUp(bundle);
        using var file = new DirectFile(ffn.FilePath);

        // Reads: random bundles, each thread its own aligned buffer.
        long reads = 0;
        long deadline = Stopwatch.GetTimestamp() + (long)(duration.TotalSeconds * Stopwatch.Frequency);
        long readTicks = 0;
        var threads = Enumerable.Range(0, readers).Select(t => new Thread(() =>
        {
            using var buf = new AlignedBuffer(readBytes + AlignedBuffer.Alignment);
            var rng = new Random(t);
            long n = 0, busy = 0;
            while (Stopwatch.GetTimestamp() < deadline)
            {
                long offset = ffn.BundleOffset(rng.Next(ffn.Layers), rng.Next(ffn.Neurons));
                long start = AlignedBuffer.AlignDown(offset);
                int length = (int)(AlignedBuffer.AlignUp(offset + bundle) - start);
                long t0 = Stopwatch.GetTimestamp();
                file.Read(start, buf.Pointer, length);
                busy += Stopwatch.GetTimestamp() - t0;
                n++;
            }
            Interlocked.Add(ref reads, n);
            Interlocked.Add(ref readTicks, busy);
        })).ToList();
        var wall = Stopwatch.StartNew();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        double readSeconds = wall.Elapsed.TotalSeconds;
        double readUs = readTicks * 1e6 / Stopwatch.Frequency / Math.Max(1, reads);
        double readMBs = reads * (double)bundle / readSeconds / 1e6;

        // Hashing: the same check the reader runs (Check = locate + XxHash3 + compare), over layer 0's first bundles in DRAM.
        int count = (int)Math.Min(ffn.Neurons, (64L << 20) / stride);
        var data = new byte[(long)count * stride];
        using (var h = File.OpenHandle(ffn.FilePath)) RandomAccess.Read(h, data, ffn.LayerOffset(0));
        long hashed = 0, bad = 0;
        var hw = Stopwatch.StartNew();
        while (hw.Elapsed < duration / 2 || hashed == 0)
            for (int k = 0; k < count; k++, hashed++)
                if (sums.Check(data.AsSpan(k * stride, bundle), ffn.BundleOffset(0, k)) is not null) bad++;
        double hashUs = hw.Elapsed.TotalMicroseconds / hashed;
        double hashGBs = hashed * (double)bundle / hw.Elapsed.TotalSeconds / 1e9;

        Console.WriteLine($"machine: {Environment.ProcessorCount} cores, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}; {ffn.FilePath} ({(file.IsDirect ? "O_DIRECT" : "buffered: O_DIRECT refused")})");
        Console.WriteLine($"bundle: {bundle} bytes (stride {stride}), reads of {readBytes} bytes");
        Console.WriteLine($"read:  {reads} random bundle reads, {readers} in flight, {readSeconds:F1} s: {readMBs:F1} MB/s, {readUs:F1} us per read (as a reader waits)");
        Console.WriteLine($"check: {hashed} bundles, 1 thread: {hashGBs:F2} GB/s, {hashUs:F2} us per bundle{(bad > 0 ? $" ({bad} mismatches: the layout is corrupt)" : "")}");
        Console.WriteLine($"cost:  {100 * hashUs / readUs:F2} % of a read's time; at the measured read rate the checks take {readMBs / 1e3 / hashGBs * 100:F2} % of one core");
        return 0;
    }
}
