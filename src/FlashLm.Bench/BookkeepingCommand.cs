using System.CommandLine;
using System.Diagnostics;
using FlashLm.Cli.Commands;
using FlashLm.Formats.FlashLayout;
using FlashLm.Runtime.Cache;
using static FlashLm.Runtime.Cache.CacheManager;

namespace FlashLm.Bench;

/// <summary>
/// `flashlm-bench bookkeeping`: the cache manager's own work per token, with nothing else running: its core is driven
/// directly (no actors, no threads, no reads: every read is answered at once, nothing lands in the rows) along random
/// active sets of a layout's shape, with the runtime's cache settings (hits first, demand reserve, window). What it
/// prints is the CPU time the cache spends per token (acquires, eviction, read planning, landing answers, the window at
/// token end), which the full bench's "mem ms" measures as wall time beside compute and readers on the same cores.
/// </summary>
internal static class BookkeepingCommand
{
    public static Command Build()
    {
        var model = new Option<string?>("--model", "-m") { Description = "flash-layout folder (default: a synthetic model of --shape, made and cached)" };
        var shape = new Option<string>("--shape") { Description = "synthetic shape when no --model", DefaultValueFactory = _ => "llama-7b" };
        var share = new Option<double>("--active") { Description = "share of each layer's neurons active per token (random, independent per token)", DefaultValueFactory = _ => 0.1 };
        var rows = new Option<int?>("--rows") { Description = "cache rows per layer (default: three tokens' active neurons, at most every neuron)" };
        var window = new Option<int>("--window") { Description = "tokens in the window", DefaultValueFactory = _ => 5 };
        var tokens = new Option<int>("--tokens", "-n") { Description = "tokens measured (after 3 to fill the cache)", DefaultValueFactory = _ => 20 };
        var seed = new Option<int>("--seed") { Description = "seed of the active sets", DefaultValueFactory = _ => 1 };
        var cmd = new Command("bookkeeping", "The cache manager's own CPU time per token (its core driven directly, reads answered at once) along random active sets.")
        {
            model, shape, share, rows, window, tokens, seed,
        };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            double active = r.GetValue(share);
            int n = r.GetValue(tokens), k = r.GetValue(window);
            if (active is <= 0 or > 1) throw new ArgumentException($"--active must be in (0, 1], got {active}");
            if (n < 1) throw new ArgumentException($"--tokens must be at least 1, got {n}");
            if (k < 0) throw new ArgumentException($"--window must be at least 0, got {k}");
            string folder = r.GetValue(model) ?? BenchCommand.SyntheticLayout(r.GetValue(shape)!, out _);
            using var source = new FlashLayoutModel(folder);
            Run(source.Ffn, active, r.GetValue(rows), k, n, r.GetValue(seed));
            return 0;
        }));
        return cmd;
    }

    private static void Run(FfnLayout layout, double active, int? rowsOption, int window, int tokens, int seed)
    {
        int perLayer = Math.Max(1, (int)Math.Round(layout.Neurons * active));
        int rows = Math.Min(layout.Neurons, rowsOption ?? 3 * perLayer);
        if (rows < 1) throw new ArgumentException($"--rows must be at least 1, got {rows}");
        var settings = new CacheSettings(rows, window, CoalesceGap: 32 * 1024, MaxRead: 1 << 20, StagingBuffers: 8, MaxReadsInFlight: 64, DirectIo: true,
            HitsFirst: true, DemandReserve: rows >= layout.Neurons ? 0 : ReserveFor(rows));
        Console.WriteLine($"bookkeeping: {layout.Layers} layers x {layout.Neurons} neurons ({layout.BundleBytes} B bundles), {perLayer} active per layer " +
                          $"({active:P0}, random), {rows} rows per layer, window {window}; CPU: {Environment.ProcessorCount} cores, {Kernels.CpuInfo.Describe()}");
        using var core = new CacheCore(layout, settings);
        var rnd = new Random(seed);
        var session = new object();
        var reads = new Queue<CacheCore.ReadStart>();
        var ready = new List<Lease>();
        var batch = new List<(long, int)>(16);
        void Take(CacheCore.Effects e)
        {
            foreach (var x in e.Reads) reads.Enqueue(x);
            foreach (var x in e.ReadyLeases) ready.Add(x.Lease);
            if (e.Failures.Count > 0) throw new InvalidOperationException($"bookkeeping: an acquire failed: {e.Failures[0].Error}");
        }
        var mem = new List<double>();
        var cpu = new List<double>();
        var pick = new int[layout.Neurons];
        for (int i = 0; i < pick.Length; i++) pick[i] = i;
        const int warmUp = 3;
        for (int t = 0; t < warmUp + tokens; t++)
        {
            long spent = 0;
            for (int l = 0; l < layout.Layers; l++)
            {
                // A random set in ascending order, as predictors name them (made outside the timed part).
                rnd.Shuffle(pick);
                var set = pick[..perLayer];
                Array.Sort(set);
                long start = Stopwatch.GetTimestamp();
                Take(core.Acquire(session, l, set, prefill: false));
                while (reads.Count > 0 || ready.Count > 0)
                {
                    // The loader's answers, up to 16 at once (as the io_uring loader sends what it reaped together).
                    batch.Clear();
                    while (reads.Count > 0 && batch.Count < 16)
                    {
                        var x = reads.Dequeue();
                        batch.Add((x.Id, x.Plan.Length));
                    }
                    if (batch.Count > 0) Take(core.ReadsDone(batch));
                    for (int i = 0; i < ready.Count; i++)
                    {
                        var lease = ready[i];
                        Take(core.Release(session, lease));
                        if (lease.Remaining.Length > 0) Take(core.Acquire(session, l, lease.Remaining, prefill: false, first: false));
                    }
                    ready.RemoveRange(0, ready.Count);
                }
                spent += Stopwatch.GetTimestamp() - start;
            }
            long before = Stopwatch.GetTimestamp();
            var stats = core.TokenDone(session, t, out var effects);
            Take(effects);
            spent += Stopwatch.GetTimestamp() - before;
            if (t < warmUp) continue;
            double ms = spent * 1000.0 / Stopwatch.Frequency;
            mem.Add(stats.MemMs);
            cpu.Add(ms);
            Console.WriteLine($"token {t - warmUp + 1}: {ms:F1} ms in the cache core (its own mem {stats.MemMs:F1} ms), {stats.NeuronsActive} active, " +
                              $"{stats.NeuronsLoaded} read, {stats.NeuronsEvicted} evicted, {stats.Reads} reads");
        }
        mem.Sort();
        cpu.Sort();
        Console.WriteLine($"bookkeeping: median {cpu[cpu.Count / 2]:F1} ms/token in the cache core (min {cpu[0]:F1}, max {cpu[^1]:F1}); its own mem figure {mem[mem.Count / 2]:F1} ms/token");
    }
}
