using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using FlashLm.Cli.Commands;
using FlashLm.Formats.FlashLayout;
using FlashLm.Models.Sampling;
using FlashLm.Runtime;
using FlashLm.Runtime.Config;

namespace FlashLm.Bench;

/// <summary>
/// `flashlm-bench soak`: runs N positions through one runtime over sessions that start, cancel, abandon and finish at
/// random (seeded), inside a cgroup v1 memory group capped at --cap (when run as root), and samples the process's RSS
/// (VmRSS) and the runtime's native bytes over time. Reports the least-squares slope of each against positions run
/// (bytes per 1000 positions, after a warm-up) and the maximum against the cap: a runtime that leaks shows a slope.
/// </summary>
internal static class SoakCommand
{
    public static Command Build()
    {
        var model = new Option<string?>("--model", "-m") { Description = "flash-layout folder (default: a synthetic model of --shape, made and cached)" };
        var shape = new Option<string>("--shape") { Description = "synthetic shape when no --model", DefaultValueFactory = _ => "tiny" };
        var tokens = new Option<int>("--tokens", "-n") { Description = "positions to run in all (prompt and generated)", DefaultValueFactory = _ => 10_000 };
        var cap = new Option<string>("--cap") { Description = "cgroup memory cap of the whole process (root only; else only reported against)", DefaultValueFactory = _ => "512MiB" };
        var budget = new Option<string?>("--dram-budget") { Description = "the runtime's DRAM budget (default: the runtime's own, auto)" };
        var sessions = new Option<int>("--sessions") { Description = "sessions running at once", DefaultValueFactory = _ => 3 };
        var positions = new Option<int>("--positions") { Description = "context positions per session", DefaultValueFactory = _ => 128 };
        var seed = new Option<int>("--seed") { Description = "seed of the sessions' choices (prompts, lengths, cancel points, sampling)", DefaultValueFactory = _ => 1 };
        var every = new Option<double>("--sample-ms") { Description = "sampling interval, ms", DefaultValueFactory = _ => 250 };
        var stall = new Option<double>("--stall-s") { Description = "fail when no position completes for this long, s", DefaultValueFactory = _ => 60 };
        var endings = new Option<string>("--endings") { Description = "how turns may end, chosen at random among these: finish, cancel, abandon", DefaultValueFactory = _ => "finish,cancel,abandon" };
        var json = new Option<string?>("--json") { Description = "write the samples and the summary as JSON to this file" };
        var set = new Option<string[]>("--set") { Description = "extra runtime setting (key=value)" };
        var inside = new Option<bool>("--inside-cgroup") { Description = "internal: this process already runs inside the memory group", Hidden = true };
        var cmd = new Command("soak", "Run many positions over randomly started, cancelled and finished sessions under a memory cap; print RSS and native bytes over time with their slope.")
        {
            model, shape, tokens, cap, budget, sessions, positions, seed, every, stall, endings, json, set, inside,
        };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            var o = new SoakOptions(
                Tokens: r.GetValue(tokens), Cap: ByteSize.Parse(r.GetValue(cap)!, "--cap"), Budget: r.GetValue(budget), Sessions: r.GetValue(sessions),
                Positions: r.GetValue(positions), Seed: r.GetValue(seed), SampleMs: r.GetValue(every), StallS: r.GetValue(stall), Json: r.GetValue(json),
                Settings: r.GetValue(set) ?? [], Endings: ParseEndings(r.GetValue(endings)!));
            o.Validate();
            if (!r.GetValue(inside) && Cgroup.Available)
            {
                // The synthetic model is written here, outside the cap; the measured process starts inside it.
                string layout = r.GetValue(model) ?? BenchCommand.SyntheticLayout(r.GetValue(shape)!, out _);
                var args = new List<string>
                {
                    "soak", "--inside-cgroup", "--model", layout, "--tokens", Invariant(o.Tokens), "--cap", Invariant(o.Cap), "--sessions", Invariant(o.Sessions),
                    "--positions", Invariant(o.Positions), "--seed", Invariant(o.Seed), "--sample-ms", Invariant(o.SampleMs), "--stall-s", Invariant(o.StallS),
                    "--endings", string.Join(',', o.Endings).ToLowerInvariant(),
                };
                if (o.Budget is not null) args.AddRange(["--dram-budget", o.Budget]);
                if (o.Json is not null) args.AddRange(["--json", Path.GetFullPath(o.Json)]);
                foreach (var e in o.Settings) args.AddRange(["--set", e]);
                return InCgroup(args, o.Cap);
            }
            string folder = r.GetValue(model) ?? BenchCommand.SyntheticLayout(r.GetValue(shape)!, out _);
            if (!FlashLayoutModel.IsLayoutFolder(folder)) throw new ArgumentException($"{folder}: soak needs a flash-layout folder (flashlm convert MODEL --out DIR)");
            if (!r.GetValue(inside))
                Console.Error.WriteLine("soak: no cgroup (not root or no /sys/fs/cgroup/memory): the cap is only reported against, not enforced");
            return Run(folder, o, cgroup: r.GetValue(inside));
        }));
        return cmd;
    }

    private static string Invariant<T>(T value) where T : IFormattable => value.ToString(null, CultureInfo.InvariantCulture);

    internal sealed record SoakOptions(int Tokens, long Cap, string? Budget, int Sessions, int Positions, int Seed, double SampleMs, double StallS, string? Json, string[] Settings, Ending[] Endings)
    {
        public void Validate()
        {
            if (Tokens < 1) throw new ArgumentException("--tokens must be at least 1");
            if (Sessions < 1) throw new ArgumentException("--sessions must be at least 1");
            if (Positions < 8) throw new ArgumentException("--positions must be at least 8");
            if (SampleMs <= 0) throw new ArgumentException("--sample-ms must be positive");
            if (StallS <= 0) throw new ArgumentException("--stall-s must be positive");
            if (Budget is not null) ByteSize.Parse(Budget, "--dram-budget");
        }
    }

    /// <summary>One sample: seconds since the start, positions run so far, VmRSS, the runtime's native bytes, the managed heap after a full collection, open sessions.</summary>
    internal sealed record SoakSample(double Seconds, long Positions, long RssBytes, long NativeBytes, long ManagedBytes, int OpenSessions);

    /// <summary>A least-squares line through (positions, bytes): the slope in bytes per 1000 positions, over the samples used.</summary>
    internal sealed record Trend(double BytesPer1000Positions, int Samples, long First, long Last, long Max);

    internal sealed record SoakCounts(int Started, int Finished, int Cancelled, int Abandoned, int Failed);

    internal sealed record SoakReport(
        string Machine, string Model, long CapBytes, bool Cgroup, long Positions, double Seconds, SoakCounts Sessions,
        Trend Rss, Trend Native, Trend Managed, long IdleNativeBefore, long IdleNativeAfter, string? FirstError, IReadOnlyList<SoakSample> Samples);

    /// <summary>Least squares of y on x; 0 with fewer than two distinct x.</summary>
    internal static double Slope(IReadOnlyList<(double X, double Y)> points)
    {
        if (points.Count < 2) return 0;
        double mx = points.Average(p => p.X), my = points.Average(p => p.Y);
        double sxx = points.Sum(p => (p.X - mx) * (p.X - mx)), sxy = points.Sum(p => (p.X - mx) * (p.Y - my));
        return sxx > 0 ? sxy / sxx : 0;
    }

    /// <summary>
    /// The trend of one figure over the samples taken after the first tenth of the positions (the warm-up: JIT, the neuron
    /// cache filling, the thread pools growing).
    /// </summary>
    internal static Trend TrendOf(IReadOnlyList<SoakSample> samples, Func<SoakSample, long> figure, long totalPositions)
    {
        var used = samples.Where(s => s.Positions >= totalPositions / 10).ToList();
        if (used.Count < 2) used = samples.ToList();
        double slope = Slope(used.Select(s => ((double)s.Positions, (double)figure(s))).ToList());
        return new Trend(slope * 1000, used.Count, used.Count > 0 ? figure(used[0]) : 0, used.Count > 0 ? figure(used[^1]) : 0,
            samples.Count > 0 ? samples.Max(figure) : 0);
    }

    /// <summary>VmRSS of this process from /proc/self/status, in bytes (0 where there is no /proc).</summary>
    internal static long RssBytes()
    {
        if (!File.Exists("/proc/self/status")) return 0;
        foreach (var line in File.ReadLines("/proc/self/status"))
        {
            if (!line.StartsWith("VmRSS:", StringComparison.Ordinal)) continue;
            var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length >= 3 && parts[2] == "kB") return long.Parse(parts[1], CultureInfo.InvariantCulture) * 1024;
            throw new InvalidDataException($"/proc/self/status: unexpected VmRSS line '{line}'");
        }
        throw new InvalidDataException("/proc/self/status: no VmRSS line");
    }

    /// <summary>Runs this program again as `soak --inside-cgroup ...` inside a new memory group capped at <paramref name="cap"/>.</summary>
    private static int InCgroup(List<string> args, long cap)
    {
        var self = Environment.ProcessPath ?? "dotnet";
        var dll = typeof(SoakCommand).Assembly.Location;
        string command = self.EndsWith("dotnet", StringComparison.Ordinal) ? $"'{self}' '{dll}'" : $"'{self}'";
        string shell = command + " " + string.Join(' ', args.Select(a => "'" + a.Replace("'", "'\\''") + "'"));
        string group = Cgroup.Create(cap);
        try
        {
            var psi = new ProcessStartInfo("/bin/sh") { UseShellExecute = false };
            // As in the bench: let the managed heap use the whole cap (by default .NET takes 75 % of a group's limit).
            psi.Environment["DOTNET_GCHeapHardLimit"] = cap.ToString("x", CultureInfo.InvariantCulture);
            psi.ArgumentList.Add("-c");
            psi.ArgumentList.Add($"echo $$ > {group}/cgroup.procs && exec {shell}");
            using var p = Process.Start(psi)!;
            p.WaitForExit();
            var (peak, failures) = Cgroup.Peak(group);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"cgroup: peak usage {FlashRuntime.Bytes(peak)} of the {FlashRuntime.Bytes(cap)} cap ({100.0 * peak / cap:F1} %, page cache included); limit hit {failures} times"));
            if (p.ExitCode == 137)
            {
                Console.Error.WriteLine($"soak: error: the process was killed: over the memory cap of {FlashRuntime.Bytes(cap)}");
                return 1;
            }
            return p.ExitCode;
        }
        finally
        {
            Cgroup.Remove(group);
        }
    }

    /// <summary>What each concurrent session loop does next; chosen from the loop's own seeded generator.</summary>
    internal enum Ending { Finish, Cancel, Abandon }

    private static Ending[] ParseEndings(string list)
    {
        var names = list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (names.Length == 0) throw new ArgumentException("--endings needs at least one of: finish, cancel, abandon");
        return names.Select(n => Enum.TryParse<Ending>(n, ignoreCase: true, out var e) && Enum.IsDefined(e) && !int.TryParse(n, out _)
            ? e : throw new ArgumentException($"--endings: unknown ending '{n}' (known: finish, cancel, abandon)")).Distinct().ToArray();
    }

    private sealed class Counters
    {
        public long Positions;
        public int Started, Finished, Cancelled, Abandoned, Failed;
        public string? FirstError;
        public long LastProgressTicks = Stopwatch.GetTimestamp();
    }

    private static int Run(string layout, SoakOptions o, bool cgroup)
    {
        var overrides = new List<string> { $"max-sessions={o.Sessions}", "sparsity=0.5" };
        if (o.Budget is not null) overrides.Add($"dram-budget={o.Budget}");
        overrides.AddRange(o.Settings);
        using var runtime = FlashRuntime.Open(layout, RuntimeSettings.Compose([], overrides), o.Positions);
        int vocab = runtime.Config.VocabSize;
        long idleBefore = runtime.Stats.NativeBytes;
        Console.Error.WriteLine($"soak: {layout}: {o.Tokens} positions, {o.Sessions} sessions at once, {o.Positions} positions each, " +
                                $"budget {FlashRuntime.Bytes(runtime.Plan.Budget)}, cap {FlashRuntime.Bytes(o.Cap)}{(cgroup ? " (cgroup)" : " (not enforced)")}, seed {o.Seed}");

        var counters = new Counters();
        var samples = new List<SoakSample>();
        var clock = Stopwatch.StartNew();
        using var stop = new CancellationTokenSource();
        // The managed figure is measured after a full collection: what is still reachable, not garbage awaiting the next GC
        // (which would make a flat heap look like a leak). It runs before RSS is read, so RSS is also after-GC.
        SoakSample Sample()
        {
            long positions = Interlocked.Read(ref counters.Positions);
            long managed = GC.GetTotalMemory(forceFullCollection: true);
            return new(clock.Elapsed.TotalSeconds, positions, RssBytes(), runtime.Stats.NativeBytes, managed, runtime.Stats.OpenSessions);
        }
        var sampler = Task.Run(async () =>
        {
            using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(o.SampleMs));
            try
            {
                while (await timer.WaitForNextTickAsync(stop.Token))
                {
                    var s = Sample();
                    lock (samples) samples.Add(s);
                    double idle = Stopwatch.GetElapsedTime(Interlocked.Read(ref counters.LastProgressTicks)).TotalSeconds;
                    if (idle > o.StallS)
                    {
                        // A hang is the one failure the sessions cannot report themselves.
                        Console.Error.WriteLine($"soak: error: no position completed for {idle:F0} s (at {s.Positions} of {o.Tokens}; {s.OpenSessions} sessions open): the runtime hangs");
                        Environment.Exit(2);
                    }
                }
            }
            catch (OperationCanceledException)
            {
            }
        });
        lock (samples) samples.Add(Sample());

        var loops = Enumerable.Range(0, o.Sessions).Select(i => Task.Run(() => Loop(runtime, o, vocab, new Random(o.Seed * 7919 + i), counters))).ToArray();
        Task.WaitAll(loops);
        stop.Cancel();
        sampler.Wait();
        lock (samples) samples.Add(Sample());
        double seconds = clock.Elapsed.TotalSeconds;
        long idleAfter = runtime.Stats.NativeBytes;

        var rss = TrendOf(samples, s => s.RssBytes, counters.Positions);
        var native = TrendOf(samples, s => s.NativeBytes, counters.Positions);
        var managed = TrendOf(samples, s => s.ManagedBytes, counters.Positions);
        var report = new SoakReport(
            $"{Environment.ProcessorCount} cores, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}", layout, o.Cap, cgroup,
            counters.Positions, seconds, new SoakCounts(counters.Started, counters.Finished, counters.Cancelled, counters.Abandoned, counters.Failed),
            rss, native, managed, idleBefore, idleAfter, counters.FirstError, samples);
        Print(report);
        if (o.Json is not null) File.WriteAllText(o.Json, JsonSerializer.Serialize(report, BenchJson.Indented));
        if (counters.Failed > 0)
        {
            Console.Error.WriteLine($"soak: error: {counters.Failed} sessions failed; the first: {counters.FirstError}");
            return 1;
        }
        return 0;
    }

    /// <summary>
    /// One concurrent session loop: opens a session, runs one to three turns of random prompts and lengths, each ending at
    /// random (run to its end, cancelled through its token, or abandoned by leaving the enumeration), closes the session,
    /// and starts again until the soak has run its positions.
    /// </summary>
    private static async Task Loop(FlashRuntime runtime, SoakOptions o, int vocab, Random rng, Counters c)
    {
        while (Interlocked.Read(ref c.Positions) < o.Tokens)
        {
            Interlocked.Increment(ref c.Started);
            try
            {
                await using var session = await runtime.CreateSessionAsync();
                int turns = rng.Next(1, 4);
                for (int t = 0; t < turns && session.Position < o.Positions - 8 && Interlocked.Read(ref c.Positions) < o.Tokens; t++)
                {
                    int room = o.Positions - session.Position;
                    // Token ids past the specials (0-2): any id is a valid prompt for a synthetic or a real vocabulary.
                    var prompt = Enumerable.Range(0, rng.Next(1, Math.Min(8, room / 2))).Select(_ => rng.Next(3, vocab)).ToArray();
                    int length = rng.Next(prompt.Length + 1, room + 1);
                    var ending = o.Endings[rng.Next(o.Endings.Length)];
                    int stopAfter = rng.Next(1, length + 1);
                    var sampling = new SamplingOptions(Temperature: 1.0f, TopP: 0.9f, Seed: (ulong)rng.NextInt64());
                    using var cancel = new CancellationTokenSource();
                    int seen = 0;
                    try
                    {
                        await foreach (var _ in session.GenerateTokensAsync(prompt, length, sampling, cancel.Token))
                        {
                            seen++;
                            Interlocked.Increment(ref c.Positions);
                            Interlocked.Exchange(ref c.LastProgressTicks, Stopwatch.GetTimestamp());
                            if (seen == stopAfter && ending == Ending.Cancel) cancel.Cancel();
                            if (seen == stopAfter && ending == Ending.Abandon) break;
                        }
                    }
                    catch (OperationCanceledException) when (cancel.IsCancellationRequested)
                    {
                    }
                    if (ending == Ending.Finish || seen < stopAfter) Interlocked.Increment(ref c.Finished);
                    else if (ending == Ending.Cancel) Interlocked.Increment(ref c.Cancelled);
                    else Interlocked.Increment(ref c.Abandoned);
                    // A turn that was cut short leaves the session in no state to continue: start a new one.
                    if (ending != Ending.Finish && seen >= stopAfter) break;
                }
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                Interlocked.Increment(ref c.Failed);
                Interlocked.CompareExchange(ref c.FirstError, $"{e.GetType().Name}: {e.Message}", null);
                if (c.Failed > 10) return; // the summary says why; no point spinning on a broken runtime
            }
        }
    }

    private static string Mib(long bytes) => (bytes / 1048576.0).ToString("F1", CultureInfo.InvariantCulture);

    private static void Print(SoakReport r)
    {
        Console.WriteLine("| s | positions | RSS MiB | native MiB | managed MiB (after full GC) | sessions open |");
        Console.WriteLine("| ---: | ---: | ---: | ---: | ---: | ---: |");
        // At most about 30 rows: every k-th sample, and the last.
        int step = Math.Max(1, r.Samples.Count / 30);
        for (int i = 0; i < r.Samples.Count; i++)
        {
            if (i % step != 0 && i != r.Samples.Count - 1) continue;
            var s = r.Samples[i];
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {s.Seconds:F1} | {s.Positions} | {Mib(s.RssBytes)} | {Mib(s.NativeBytes)} | {Mib(s.ManagedBytes)} | {s.OpenSessions} |"));
        }
        var n = r.Sessions;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"\n{r.Positions} positions in {r.Seconds:F1} s ({r.Positions / Math.Max(r.Seconds, 1e-9):F0}/s); sessions: {n.Started} started, {n.Finished} turns finished, {n.Cancelled} cancelled, {n.Abandoned} abandoned, {n.Failed} failed"));
        foreach (var (name, t) in new[] { ("RSS", r.Rss), ("native", r.Native), ("managed (after full GC)", r.Managed) })
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{name}: slope {t.BytesPer1000Positions / 1024:F1} KiB per 1000 positions (least squares over {t.Samples} samples after the first 10 % of positions; {Mib(t.First)} -> {Mib(t.Last)} MiB); max {Mib(t.Max)} MiB"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"max RSS {Mib(r.Rss.Max)} MiB of the {Mib(r.CapBytes)} MiB cap ({100.0 * r.Rss.Max / r.CapBytes:F1} %{(r.Cgroup ? ", enforced by the cgroup" : ", not enforced")})"));
        Console.WriteLine($"native bytes with no session open: {r.IdleNativeBefore} before the first session, {r.IdleNativeAfter} after the last (the neuron cache and staging buffers stay allocated between sessions)");
        Console.WriteLine($"machine: {r.Machine}");
    }
}
