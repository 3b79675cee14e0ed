using System.CommandLine;
using System.Diagnostics;
using FlashLm.Formats.Fuzzing;

namespace FlashLm.Cli.Commands;

/// <summary>
/// `flashlm fuzz`: the seeded mutation fuzzer over the model parsers. Prints per format the cases, how they ended
/// (accepted, rejected with a clear error, crashed, hung, unclear message), the cases that allocated more than
/// their input allows, the time, and the first findings with their reproducer. Exit code 1 when any case crashed,
/// hung, over-allocated or gave an unclear message.
/// </summary>
public static class FuzzCommand
{
    public static Command Build()
    {
        var format = new Option<string>("--format", "-f")
        {
            Description = $"the parser to fuzz: {string.Join(", ", FuzzCorpus.Formats)} or all",
            Required = true,
        };
        var cases = new Option<int>("--cases", "-n") { Description = "number of cases per format", DefaultValueFactory = _ => 1000 };
        var seed = new Option<int>("--seed", "-s") { Description = "mutation seed (case i of a seed is always the same file)", DefaultValueFactory = _ => 1 };
        var start = new Option<int>("--start") { Description = "index of the first case (with --cases 1: re-run one case)", DefaultValueFactory = _ => 0 };
        var timeout = new Option<double>("--timeout") { Description = "seconds after which a case counts as a hang", DefaultValueFactory = _ => 5 };
        var save = new Option<string?>("--save") { Description = "folder to write the mutated file of every finding to" };
        var show = new Option<int>("--show") { Description = "how many findings to print per format", DefaultValueFactory = _ => 5 };
        var cmd = new Command("fuzz", "Fuzz the model parsers with seeded mutations of valid small files; report crashes, hangs and oversize allocations.")
        {
            format, cases, seed, start, timeout, save, show,
        };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            var f = r.GetValue(format)!.Trim().ToLowerInvariant();
            string[] formats = f == "all" ? FuzzCorpus.Formats
                : FuzzCorpus.Formats.Contains(f) ? [f]
                : throw new ArgumentException($"unknown format '{f}' (use {string.Join(", ", FuzzCorpus.Formats)} or all)");
            int n = r.GetValue(cases), s = r.GetValue(seed), first = r.GetValue(start), shown = r.GetValue(show);
            double secs = r.GetValue(timeout);
            if (n <= 0) throw new ArgumentException($"--cases must be positive, got {n}");
            if (first < 0) throw new ArgumentException($"--start must be 0 or more, got {first}");
            if (!(secs > 0)) throw new ArgumentException($"--timeout must be positive, got {secs}");
            Console.WriteLine($"fuzz: seed {s}, cases {first}..{first + n - 1}, hang after {secs:F1} s, oversize above the seed's allocation + {ParserFuzzer.AllocationLimit} x input + {ParserFuzzer.AllocationSlack >> 10} KiB; " +
                $"{Environment.ProcessorCount} cores, .NET {Environment.Version}");
            Console.WriteLine($"{"format",-12} {"cases",7} {"accepted",9} {"rejected",9} {"crashes",8} {"hangs",6} {"oversize",9} {"unclear",8} {"max alloc (of allowance)",26} {"time",8}");
            bool clean = true;
            var all = Stopwatch.StartNew();
            var reports = new List<FuzzReport>();
            foreach (var fmt in formats)
            {
                var rep = ParserFuzzer.Run(fmt, n, s, first, TimeSpan.FromSeconds(secs), r.GetValue(save), Math.Max(shown, 1));
                reports.Add(rep);
                clean &= rep.Clean;
                Console.WriteLine($"{rep.Format,-12} {rep.Cases,7} {rep.Accepted,9} {rep.Rejected,9} {rep.Crashes,8} {rep.Hangs,6} {rep.Oversize,9} {rep.UnclearMessages,8} {rep.MaxAllocatedBytes / 1024.0,10:F0} KiB ({rep.MaxAllocationShare,6:P0}) {rep.Elapsed.TotalSeconds,7:F1}s");
            }
            foreach (var rep in reports)
                Console.WriteLine($"{rep.Format} seed: {rep.SeedInputBytes / 1024.0:F0} KiB of input files open with {rep.SeedAllocatedBytes / 1024.0:F0} KiB allocated");
            foreach (var rep in reports)
                foreach (var x in rep.Findings.Take(shown))
                {
                    Console.WriteLine();
                    Console.WriteLine($"{rep.Format} case {x.Index} ({x.Outcome}{(x.Oversize ? $", allocated {x.AllocatedBytes} bytes for {x.InputBytes} input bytes" : "")}) in {x.Target}: {x.Mutation}");
                    Console.WriteLine($"  reproduce: flashlm fuzz --format {rep.Format} --seed {rep.Seed} --start {x.Index} --cases 1 --save DIR{(x.SavedAs is null ? "" : $"  (saved: {x.SavedAs})")}");
                    foreach (var line in x.Detail.Split('\n').Take(12)) Console.WriteLine($"  {line}");
                }
            Console.WriteLine($"total {all.Elapsed.TotalSeconds:F1} s: {(clean ? "clean" : "FINDINGS")}");
            return clean ? 0 : 1;
        }));
        return cmd;
    }
}
