using System.Diagnostics;
using FlashLm.Formats.FlashLayout;

namespace FlashLm.Formats.Fuzzing;

/// <summary>What one case ended as.</summary>
public enum FuzzOutcome
{
    /// <summary>Opened, tokenized and read a tensor without error.</summary>
    Accepted,
    /// <summary>Refused with a <see cref="ModelFormatException"/> whose message is short and printable.</summary>
    Rejected,
    /// <summary>Refused with a <see cref="ModelFormatException"/> whose message is long or carries raw bytes (control characters, U+FFFD).</summary>
    UnclearMessage,
    /// <summary>Any other exception (IndexOutOfRange, Overflow, OutOfMemory, ArgumentOutOfRange, NullReference, ...).</summary>
    Crash,
    /// <summary>Still running when the watchdog fired.</summary>
    Hang,
}

/// <summary>One case worth showing: what failed, the mutation, and how to reproduce it.</summary>
public sealed record FuzzFinding(int Index, FuzzOutcome Outcome, bool Oversize, long AllocatedBytes, long InputBytes, string Target, string Mutation, string Detail, string? SavedAs);

/// <summary>The figures of one run over one format.</summary>
public sealed class FuzzReport
{
    public required string Format { get; init; }
    public required int Seed { get; init; }
    public int Cases { get; internal set; }
    public int Accepted { get; internal set; }
    public int Rejected { get; internal set; }
    public int UnclearMessages { get; internal set; }
    public int Crashes { get; internal set; }
    public int Hangs { get; internal set; }
    /// <summary>Cases whose thread allocated more than <see cref="ParserFuzzer.AllocationLimit"/> of their input.</summary>
    public int Oversize { get; internal set; }
    /// <summary>The largest allocation of any case, as a fraction of its allowance (over 1 is oversize).</summary>
    public double MaxAllocationShare { get; internal set; }
    /// <summary>What opening the unmutated seed allocates (input bytes: <see cref="SeedInputBytes"/>).</summary>
    public long SeedAllocatedBytes { get; internal set; }
    public long SeedInputBytes { get; internal set; }
    /// <summary>The most bytes any one case allocated.</summary>
    public long MaxAllocatedBytes { get; internal set; }
    public TimeSpan Elapsed { get; internal set; }
    /// <summary>The first few cases that crashed, hung, allocated too much or gave an unclear message.</summary>
    public List<FuzzFinding> Findings { get; } = [];

    /// <summary>True when nothing crashed, hung, over-allocated or printed an unclear message.</summary>
    public bool Clean => Crashes == 0 && Hangs == 0 && Oversize == 0 && UnclearMessages == 0;
}

/// <summary>
/// The seeded mutation fuzzer over FlashLm's parsers. Each case mutates one file of a valid seed
/// (<see cref="FuzzCorpus"/>, <see cref="FuzzMutator"/>) and opens it as the runtime does: <see cref="ModelLoader.Open"/>,
/// then the tokenizer (encode a sentence, decode its pieces), then the token embedding and the first FFN down
/// matrix (and any stored predictors of a flash layout). A case runs on its own thread under a watchdog.
/// </summary>
/// <remarks>
/// Allocation check: the case thread's <see cref="GC.GetAllocatedBytesForCurrentThread"/> delta must stay under
/// its allowance: what the unmutated seed allocates (measured at the start of the run: the parsers' fixed costs,
/// about 2-5.5x the 64-74 KiB seeds) + <see cref="AllocationLimit"/> x the bytes of the case's input files +
/// <see cref="AllocationSlack"/>. Parsing costs a few bytes per input byte (a JSON file is held as bytes, as a
/// document and as UTF-16 strings, and a message may quote a value once); an allocation sized by an unchecked
/// count, length or dimension goes far past that (the llama2.c layer count that this check caught cost 130x).
/// </remarks>
public static class ParserFuzzer
{
    public const double AllocationLimit = 8;
    public const long AllocationSlack = 64 << 10;
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(5);
    private const string Sentence = "Once upon a time, the small robot said \"hello\" to Mia. 0123 é 中文 🙂";
    private const int MaxMessageChars = 1200;

    /// <summary>
    /// Runs cases <paramref name="start"/> .. <paramref name="start"/> + <paramref name="cases"/> - 1 of <paramref name="format"/>
    /// with mutation seed <paramref name="seed"/>; case i is the same for a given seed whatever the range.
    /// </summary>
    /// <param name="saveFolder">Where to write the mutated file of every finding (null: not written).</param>
    /// <param name="maxFindings">How many findings to keep in the report.</param>
    public static FuzzReport Run(string format, int cases, int seed, int start = 0, TimeSpan? timeout = null, string? saveFolder = null,
        int maxFindings = 10, IProgress<int>? progress = null)
    {
        var work = Directory.CreateTempSubdirectory("flashlm-fuzz-").FullName;
        var report = new FuzzReport { Format = format, Seed = seed };
        var clock = Stopwatch.StartNew();
        bool abandoned = false;
        try
        {
            var corpus = FuzzCorpus.Create(format, work);
            long baseline = Baseline(corpus);
            report.SeedAllocatedBytes = baseline;
            report.SeedInputBytes = corpus.InputBytes();
            int totalWeight = corpus.Targets.Sum(t => t.Weight);
            for (int i = start; i < start + cases; i++)
            {
                var rng = new Random(CaseSeed(seed, i));
                int pick = rng.Next(totalWeight);
                var target = corpus.Targets.First(t => (pick -= t.Weight) < 0);
                var (bytes, mutation) = FuzzMutator.Mutate(target.Seed, target.Fields, target.LengthPrefixedJson, rng);
                var path = Path.Combine(corpus.CaseFolder, target.FileName);
                File.WriteAllBytes(path, bytes);
                long input = corpus.InputBytes();
                var (outcome, allocated, detail) = RunCase(corpus, timeout ?? DefaultTimeout);
                double allowance = baseline + AllocationLimit * input + AllocationSlack;
                bool oversize = allocated > allowance;
                report.Cases++;
                report.MaxAllocationShare = Math.Max(report.MaxAllocationShare, allocated / allowance);
                report.MaxAllocatedBytes = Math.Max(report.MaxAllocatedBytes, allocated);
                switch (outcome)
                {
                    case FuzzOutcome.Accepted: report.Accepted++; break;
                    case FuzzOutcome.Rejected: report.Rejected++; break;
                    case FuzzOutcome.UnclearMessage: report.UnclearMessages++; break;
                    case FuzzOutcome.Crash: report.Crashes++; break;
                    case FuzzOutcome.Hang: report.Hangs++; break;
                }
                if (oversize) report.Oversize++;
                if ((outcome is FuzzOutcome.Crash or FuzzOutcome.Hang or FuzzOutcome.UnclearMessage || oversize) && report.Findings.Count < maxFindings)
                {
                    string? saved = null;
                    if (saveFolder is not null)
                    {
                        Directory.CreateDirectory(saveFolder);
                        saved = Path.Combine(saveFolder, $"{format}-seed{seed}-case{i}-{target.FileName}");
                        File.WriteAllBytes(saved, bytes);
                    }
                    report.Findings.Add(new FuzzFinding(i, outcome, oversize, allocated, input, target.FileName, mutation, detail, saved));
                }
                if (outcome == FuzzOutcome.Hang)
                {
                    // The hung thread may still read the case folder: leave it behind and continue in a fresh one.
                    abandoned = true;
                    work = Directory.CreateTempSubdirectory("flashlm-fuzz-").FullName;
                    corpus = FuzzCorpus.Create(format, work);
                }
                else
                {
                    File.WriteAllBytes(path, target.Seed);
                }
                progress?.Report(i - start + 1);
            }
        }
        finally
        {
            report.Elapsed = clock.Elapsed;
            if (!abandoned) TryDelete(work);
        }
        return report;
    }

    /// <summary>
    /// Opens the unmutated seed as a case does (twice: the first run pays one-time costs) and returns what the
    /// second run allocated: the fixed part of every case's allowance.
    /// </summary>
    private static long Baseline(FuzzCorpus corpus)
    {
        var first = RunCase(corpus, DefaultTimeout);
        var second = RunCase(corpus, DefaultTimeout);
        if (first.Outcome != FuzzOutcome.Accepted || second.Outcome != FuzzOutcome.Accepted)
            throw new InvalidOperationException($"the {corpus.Format} seed does not open: {second.Outcome} {second.Detail}");
        return second.Allocated;
    }

    /// <summary>Mixes the run's seed and the case index into the case's own seed (stable across .NET versions and runs).</summary>
    public static int CaseSeed(int seed, int index)
    {
        ulong x = (ulong)(uint)seed << 32 | (uint)index;
        x ^= x >> 33;
        x *= 0xff51afd7ed558ccdUL;
        x ^= x >> 33;
        x *= 0xc4ceb9fe1a85ec53UL;
        x ^= x >> 33;
        return (int)(x & int.MaxValue);
    }

    private static (FuzzOutcome Outcome, long Allocated, string Detail) RunCase(FuzzCorpus corpus, TimeSpan timeout)
    {
        FuzzOutcome outcome = FuzzOutcome.Hang;
        string detail = $"still running after {timeout.TotalSeconds:F0} s";
        long allocated = 0;
        var thread = new Thread(() =>
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            try
            {
                Exercise(corpus);
                outcome = FuzzOutcome.Accepted;
                detail = "";
            }
            catch (ModelFormatException e)
            {
                outcome = IsClear(e.Message, corpus.CaseFolder) ? FuzzOutcome.Rejected : FuzzOutcome.UnclearMessage;
                detail = $"{e.Message.Length} chars: {Printable(e.Message, 300)}";
            }
            catch (Exception e)
            {
                outcome = FuzzOutcome.Crash;
                detail = $"{e.GetType().FullName}: {Printable(e.Message, 300)}\n{Printable(e.StackTrace ?? "", 1500)}";
            }
            allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        }, 16 << 20) { IsBackground = true, Name = "fuzz case" };
        thread.Start();
        return thread.Join(timeout) ? (outcome, allocated, detail) : (FuzzOutcome.Hang, 0, $"still running after {timeout.TotalSeconds:F0} s");
    }

    /// <summary>What the runtime does with a model before the first token: open, tokenize, read weights.</summary>
    private static void Exercise(FuzzCorpus corpus)
    {
        using var m = ModelLoader.Open(corpus.ModelPath, corpus.TokenizerPath);
        var t = m.Tokenizer;
        var ids = t.Encode(Sentence, addBos: true);
        int previous = t.BosId;
        foreach (var id in ids)
        {
            t.Piece(previous, id);
            previous = id;
        }
        m.Read(TensorNames.TokenEmbedding);
        m.Read(TensorNames.Block(0, TensorNames.FfnDown));
        if (m is FlashLayoutModel flash)
            foreach (var kind in flash.PredictorKinds)
                flash.LoadPredictors(kind);
    }

    /// <summary>A clear message is short once the paths are taken out, and holds no raw bytes from the file.</summary>
    private static bool IsClear(string message, string folder)
    {
        var text = message.Replace(folder, "", StringComparison.Ordinal);
        return text.Length <= MaxMessageChars && !text.Any(ch => char.IsControl(ch) || ch == '\uFFFD');
    }

    private static string Printable(string s, int max)
    {
        var chars = s.Select(ch => ch == '\n' || !char.IsControl(ch) ? ch : '?').ToArray();
        var t = new string(chars);
        return t.Length <= max ? t : t[..max] + $"... ({t.Length} chars)";
    }

    private static void TryDelete(string folder)
    {
        try
        {
            Directory.Delete(folder, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
