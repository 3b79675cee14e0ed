using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Akka;
using Akka.Actor;
using Akka.Configuration;
using Akka.Streams.Dsl;
using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Models;
using FlashLm.Models.Sampling;
using FlashLm.Models.Sparsity;
using FlashLm.Runtime.Cache;
using FlashLm.Runtime.Compute;
using FlashLm.Runtime.Config;
using FlashLm.Runtime.Loader;
using FlashLm.Runtime.Predict;
using FlashLm.Runtime.Session;

namespace FlashLm.Runtime;

/// <summary>The DRAM budget cannot hold what the runtime needs to start; the message names the minimum.</summary>
public sealed class DramBudgetException(string message, long minimum) : Exception(message)
{
    /// <summary>The smallest budget that starts this model with these settings.</summary>
    public long MinimumBytes { get; } = minimum;
}

/// <summary>Where the DRAM budget goes.</summary>
public sealed record DramPlan(long Budget, long Weights, long KvCache, long CacheRows, long Buffers, int RowsPerLayer, int Neurons)
{
    /// <summary>The predictor in use ("all", "lowrank", "lowrank + lookahead", "gate-resident", "oracle", ...): what auto chose.</summary>
    public string Predictor { get; init; } = "";

    /// <summary>Bytes of the predictor's own weights inside <see cref="Weights"/> (0 for all and for the oracle, which is outside the budget).</summary>
    public long PredictorBytes { get; init; }

    /// <summary>What the process itself was given of the requested budget (flashlm.process-reserve); <see cref="Budget"/> is the rest.</summary>
    public long ProcessReserve { get; init; }

    /// <summary>Cache rows pinned for good (hot-neuron pinning, flashlm.pin), over all layers; part of <see cref="CacheRows"/>.</summary>
    public int PinnedRows { get; init; }

    /// <summary>Bytes the plan uses: weights, KV caches, cache rows and buffers.</summary>
    public long Total => Weights + KvCache + CacheRows + Buffers;
}

/// <summary>
/// FlashLm's flash runtime for one model in flash layout: attention weights in DRAM, FFN neurons read
/// from flash as the predictor names them, a window of recent neurons cached, all inside a DRAM budget.
/// The pipeline is a set of actors (predictor, flash loader pool, DRAM cache manager, layer compute,
/// one session per generation); this class hides them behind <see cref="Generate"/>.
/// </summary>
public sealed class FlashRuntime : IDisposable, IAsyncDisposable
{
    private readonly ActorSystem _system;
    private readonly bool _ownsSystem;
    private readonly FlashLayoutModel _source;
    private readonly StreamedAttention? _streamed;
    private readonly ITransformer _model;
    private readonly IActorRef _supervisor, _loader, _cache, _compute, _predictor;
    private readonly RuntimeHooks? _hooks;
    private readonly StopReason _stop;
    private readonly MessageCount _messages;
    private readonly SemaphoreSlim _sessionSlots;
    private readonly CancellationTokenSource _disposing = new();
    private readonly HashSet<FlashSession> _live = new();
    private int _sessionIds, _turns;
    private long _tokens, _bytesRead;

    /// <summary>The model's hyper-parameters.</summary>
    public ModelConfig Config => _source.Config;
    /// <summary>The model's tokenizer.</summary>
    public ITextTokenizer Tokenizer => _source.Tokenizer;
    /// <summary>The model's chat template (Jinja text as its file gives it), or null.</summary>
    public string? ChatTemplate => _source.ChatTemplate;
    /// <summary>The settings in force (reference.conf, profiles and overrides).</summary>
    public RuntimeSettings Settings { get; }
    /// <summary>Where the DRAM budget goes.</summary>
    public DramPlan Plan { get; }

    /// <summary>How reads reach the disk in this runtime: "io_uring" or "threads" (loader.engine as resolved at open).</summary>
    public string ReadEngine { get; private init; } = "threads";

    /// <summary>What the cache manager was started with (rows, reads, pinned neurons, the resident head reads skip).</summary>
    internal CacheManager.CacheSettings CacheSettings { get; private init; } = null!;
    /// <summary>Positions each generation may use (the KV cache is sized for this).</summary>
    public int Positions { get; }
    /// <summary>SwiGLU thresholds in use (null: dense, or a ReLU model).</summary>
    public float[]? Thresholds { get; }
    /// <summary>What the process held outside its managed heap when the runtime opened (code, stacks, runtime), measured.</summary>
    internal long OutsideHeapAtOpen { get; init; }

    /// <summary>The plan's DRAM outside the managed heap: cache rows, staging and discard buffers.</summary>
    public long NativeBytes { get; init; }

    /// <summary>
    /// For a process that owns its budget (the CLI, a bench worker): bounds the managed heap at what the DRAM budget leaves it,
    /// the whole budget less the planned native buffers, what the process held outside its heap at open and half the process
    /// allowance (what grows outside the heap later), so
    /// garbage is collected before the process's resident set can pass the budget (the GC's own default, 75 % of a container's
    /// limit, ignores the native cache rows). Returns the bound, or null without a budget or when it would not leave the heap
    /// what it holds now.
    /// </summary>
    public long? BoundManagedHeap()
    {
        if (Settings.DramBudget is null) return null;
        long whole = Settings.DramBudget.Value + Plan.ProcessReserve;
        // Half of flashlm.process-allowance stays for what grows outside the heap after open (threads, code compiled later:
        // about 20 MiB measured), the other half is the heap's headroom for garbage.
        long limit = whole - NativeBytes - OutsideHeapAtOpen - Math.Max(16L << 20, Settings.ProcessAllowance / 2);
        if (limit < Io.ProcessMemory.ManagedCommittedBytes() + (32L << 20)) return null;
        Io.ProcessMemory.LimitManagedHeap(limit);
        return limit;
    }

    /// <summary>Bytes of the oracle predictor's own weights, held outside the budget.</summary>
    public long OracleBytes { get; }

    private FlashRuntime(ActorSystem system, bool owns, FlashLayoutModel source, ITransformer model, RuntimeSettings settings, DramPlan plan,
        int positions, float[]? thresholds, long oracleBytes, IActorRef supervisor, IActorRef loader, IActorRef cache, IActorRef compute, IActorRef predictor,
        StreamedAttention? streamed, RuntimeHooks? hooks, StopReason stop, MessageCount messages)
    {
        _messages = messages;
        _supervisor = supervisor;
        _hooks = hooks;
        _stop = stop;
        _streamed = streamed;
        _system = system;
        _ownsSystem = owns;
        _source = source;
        _model = model;
        Settings = settings;
        Plan = plan;
        Positions = positions;
        Thresholds = thresholds;
        OracleBytes = oracleBytes;
        _loader = loader;
        _cache = cache;
        _compute = compute;
        _predictor = predictor;
        _sessionSlots = new SemaphoreSlim(settings.MaxSessions, settings.MaxSessions);
    }

    /// <summary>
    /// Opens a flash-layout folder with the given configuration (reference.conf overridden by profiles and
    /// --set). Refuses with <see cref="DramBudgetException"/> when the budget cannot hold the DRAM-resident
    /// weights, the KV cache for <paramref name="positions"/> (0: the model's context) and a minimal neuron cache.
    /// </summary>
    public static FlashRuntime Open(string layoutFolder, Akka.Configuration.Config config, int positions, ActorSystem? system = null,
        IReadOnlyList<float>? thresholds = null) =>
        Open(layoutFolder, config, positions, hooks: null, system, thresholds);

    /// <summary>As above, with fault-injection hooks (tests).</summary>
    internal static FlashRuntime Open(string layoutFolder, Akka.Configuration.Config config, int positions, RuntimeHooks? hooks, ActorSystem? system = null,
        IReadOnlyList<float>? thresholds = null)
    {
        var settings = RuntimeSettings.From(config);
        // The part of the budget the process itself takes (flashlm.process-reserve): the runtime plans within the rest.
        long processReserve = 0;
        // What the process holds outside the managed heap before the runtime allocates anything (code, stacks, the runtime's
        // own native memory), for BoundManagedHeap.
        long residentAtOpen = Io.ProcessMemory.ResidentBytes();
        long outsideHeapAtOpen = Math.Max(0, residentAtOpen - Io.ProcessMemory.ManagedCommittedBytes());
        if (settings.DramBudget is { } whole)
        {
            processReserve = settings.ProcessReserve ?? residentAtOpen + settings.ProcessAllowance;
            if (processReserve >= whole)
                throw new DramBudgetException(
                    $"DRAM budget {Bytes(whole)} is below the minimum: it cannot hold even the process itself, {Bytes(processReserve)} " +
                    (settings.ProcessReserve is null
                        ? $"(its resident set now, {Bytes(processReserve - settings.ProcessAllowance)}, plus flashlm.process-allowance {Bytes(settings.ProcessAllowance)})"
                        : "(flashlm.process-reserve)"), processReserve + 1);
            settings = settings with { DramBudget = whole - processReserve };
        }
        if (!FlashLayoutModel.IsLayoutFolder(layoutFolder))
            throw new ModelFormatException(layoutFolder, "the flash runtime needs a flash-layout folder (make one with: flashlm convert MODEL --out DIR)");
        FlashLayoutModel source;
        try
        {
            source = new FlashLayoutModel(layoutFolder, settings.Layers);
        }
        catch (ArgumentException e) when (settings.Layers is not null)
        {
            throw new SettingsException("flashlm.layers", e.Message);
        }
        StreamedAttention? streamed = null;
        try
        {
            var c = source.Config;
            // Reads are checked against per-bundle checksums as they land; a layout without them is refused (re-convert).
            var checksums = source.LoadBundleChecksums();
            if (positions == 0) positions = c.ContextLength;
            if (positions <= 0 || positions > c.ContextLength)
                throw new ArgumentException($"{positions} positions requested; the model's context is {c.ContextLength}");
            var layout = source.Ffn;
            // Every session that may run at once has its own KV cache and buffers.
            long kvAndScratch = settings.MaxSessions * (InferenceState.BytesFor(c, positions) + 4L * c.Dim) + SparseFfnSpec.ScratchBytes(source.Ffn);
            // Refuse a too-small budget before loading anything: the DRAM-resident tensors as stored (an estimate
            // of the loaded weights; the exact figure is checked again once they are loaded).
            long storedWeights = source.Tensors.Values.Where(t => !source.IsOnFlash(t.Name)).Sum(t => t.ByteLength)
                                 + (c.Architecture == Architecture.Llama ? Kernels.Rope.BytesFor(c.HeadSize, c.ContextLength) : 0);
            if (settings.StreamAttention) storedWeights -= StreamedAttention.NonResidentBytes(source);
            PlanBudget(settings, layout, storedWeights + checksums.Bytes, kvAndScratch, out _);
            float[]? thr = thresholds?.ToArray();
            if (thr is null && source.Window is { } w && settings.Sparsity is > 0)
            {
                // Thresholds calibrated on the fly come from the whole model (a range alone is not a model to run), then are cut.
                using var allLayers = new FlashLayoutModel(layoutFolder);
                thr = ThresholdResolver.Resolve(allLayers, settings.Sparsity)?[w.From..w.To];
            }
            else thr ??= ThresholdResolver.Resolve(source, settings.Sparsity);

            // DRAM-resident part: everything but the FFN neurons (the FFN slot is filled by the runtime).
            streamed = settings.StreamAttention
                ? new StreamedAttention(source, settings.Loader.MaxRead, Math.Min(settings.Loader.Readers, 8), settings.Loader.DirectIo)
                : null;
            var model = Transformers.Create(source, new FlashFfnSlot(), streamed is null ? null : streamed.Matrices);
            // Streamed attention: every layer's matrices are the same slots, held once, plus the staging buffers.
            long weightBytes = model.WeightBytes + (streamed is null ? 0 : streamed.Bytes - (long)c.Layers * streamed.SlotBytes);
            float[][]? upBias = null, downBias = null;
            if (c.Architecture == Architecture.Opt)
            {
                upBias = Enumerable.Range(0, c.Layers).Select(l => source.ReadF32(TensorNames.Block(l, TensorNames.FfnUpBias))).ToArray();
                downBias = Enumerable.Range(0, c.Layers).Select(l => source.ReadF32(TensorNames.Block(l, TensorNames.FfnDownBias))).ToArray();
            }
            // Mixture of experts: the routers stay in DRAM (in the FFN's bytes), shared by compute and the router predictor.
            var routers = c.MoE ? Enumerable.Range(0, c.Layers).Select(l => Matrix.Load(source, TensorNames.Block(l, TensorNames.FfnRouter))).ToArray() : null;
            var ffn = new SparseFfnSpec(layout, c, thr, upBias, downBias, routers);

            // The oracle (exact active sets, its own weights outside the budget) is built only when something needs it.
            long oracleBytes = 0;
            OraclePredictor? oracleInstance = null;
            // The exact selection from each layer's gate (ReLU: up) rows. The oracle reads them unverified (no whole-section
            // hashing, see ReadFfnPartUnverified) and holds them outside the budget; gate-resident selection reads them checked
            // and counts them in the budget.
            string selectPart = SelectPart(c.Architecture);
            OraclePredictor Exact(bool verified) => new(
                Enumerable.Range(0, c.Layers).Select(l => new Matrix(verified ? source.ReadFfnPart(l, selectPart) : source.ReadFfnPartUnverified(l, selectPart))).ToArray(),
                upBias, c.Architecture == Architecture.Llama ? thr : null, c.Activation, c.DefaultThreshold);
            OraclePredictor Oracle()
            {
                if (oracleInstance is not null) return oracleInstance;
                oracleInstance = Exact(verified: false);
                oracleBytes = oracleInstance.Bytes;
                return oracleInstance;
            }
            OraclePredictor GateResident() => Exact(verified: true);
            long gateBytes = GateResidentBytes(layout, c.Architecture);
            long baseWeights = weightBytes + ffn.Bytes + checksums.Bytes;
            IActivePredictor? ahead = null;
            TracePredictor.Lazy? traceAhead = null;
            IActivePredictor current = settings.Predictor switch
            {
                _ when c.MoE => settings.Predictor switch
                {
                    PredictorKind.All => new AllNeurons(c.Layers, c.FfnNeurons),
                    PredictorKind.Auto or PredictorKind.Gate => new RouterPredictor(routers!, c.HiddenDim, c.ExpertsUsed),
                    _ => throw new SettingsException("flashlm.predictor",
                        $"a mixture-of-experts model picks its experts with its own router: predictor = auto (the router) or all, not {settings.Predictor}"),
                },
                PredictorKind.All => new AllNeurons(c.Layers, c.HiddenDim),
                PredictorKind.Oracle => Oracle(),
                PredictorKind.Gate => GateResident(),
                PredictorKind.Trace => Replay(settings.Trace!, source, thr, out traceAhead),
                PredictorKind.LowRank => TrainedPredictors.Load(source, lookahead: false)
                                         ?? throw new ModelFormatException(layoutFolder, "--predictor lowrank needs trained predictors in the layout (flashlm calibrate LAYOUT --rank R)"),
                PredictorKind.Lookahead => TrainedPredictors.Load(source, lookahead: false) ?? (IActivePredictor)Oracle(),
                // Deployable by construction: nothing outside the budget and no FFN weights read at start.
                PredictorKind.Auto => (IActivePredictor?)TrainedPredictors.Load(source, lookahead: false)
                                      ?? (GateResidentPays(settings, layout, baseWeights, gateBytes, kvAndScratch, sparse: c.Architecture != Architecture.Llama || thr is not null)
                                          ? GateResident() : new AllNeurons(c.Layers, c.HiddenDim)),
                _ => throw new ArgumentOutOfRangeException(nameof(config)),
            };
            if (settings.Predictor == PredictorKind.Auto && current is LowRankActive && settings.LookaheadGuess == LookaheadGuess.Auto)
                ahead = TrainedPredictors.Load(source, lookahead: true); // null: lookahead prefetches the previous token's sets
            // The gate guess: the exact predictor's own gates of layer N+1 applied to layer N's FFN input (no extra weights).
            if (settings.LookaheadGuess == LookaheadGuess.Gate && current is not (OraclePredictor or RouterPredictor))
                throw new SettingsException("flashlm.lookahead-guess", $"'gate' needs gate-resident selection (predictor = gate) or the oracle; the predictor is {settings.Predictor}");
            // Pre-gated prefetch: layer N+1's router applied to layer N's FFN input names the experts to start reading.
            if (settings.Lookahead && current is RouterPredictor router && settings.LookaheadGuess is LookaheadGuess.Auto or LookaheadGuess.Gate)
                ahead = settings.MoePrefetchExperts is > 0 and var named && named < c.ExpertsUsed
                    ? new RouterPredictor(routers!, c.HiddenDim, c.ExpertsUsed, named)
                    : router;
            if (settings.Lookahead && current is OraclePredictor exact && ahead is null
                && (settings.LookaheadGuess == LookaheadGuess.Gate || (settings.LookaheadGuess == LookaheadGuess.Auto && !ReferenceEquals(exact, oracleInstance))))
                ahead = exact;
            // Trace-driven selection stands in for trained predictors, so its lookahead stands in for a trained lookahead predictor:
            // layer N+1's trace degraded the same way with its own seed, paying a second stand-in predictor's weights and products.
            if (settings.Lookahead && current is TracePredictor && settings.LookaheadGuess == LookaheadGuess.Auto)
                ahead = traceAhead!.Built();
            if (settings.Predictor == PredictorKind.Lookahead)
                ahead = TrainedPredictors.Load(source, lookahead: true)
                        ?? throw new ModelFormatException(layoutFolder, "--predictor lookahead needs trained lookahead predictors in the layout (flashlm calibrate LAYOUT --rank R --lookahead)");
            // The bench records its activation trace through the predictor it runs (the oracle).
            if (hooks?.Record is { } recorder) current = new RecordingPredictor(current, recorder);
            IActivePredictor? reference = settings.MeasurePredictor && settings.Predictor != PredictorKind.Oracle && !c.MoE ? Oracle() : null;
            // Trained and gate-resident predictors live in DRAM and count against the budget; the oracle does not (it is a test
            // instrument: the same class, built by Oracle() and never counted).
            long predictorBytes = ((current as LowRankActive)?.Bytes ?? 0) + ((ahead as LowRankActive)?.Bytes ?? 0)
                                  + (current is OraclePredictor g && !ReferenceEquals(g, oracleInstance) ? g.Bytes : 0)
                                  + ((current as TracePredictor)?.Bytes ?? 0) + ((ahead as TracePredictor)?.Bytes ?? 0);
            string predictorName = current switch
            {
                AllNeurons => "all",
                RouterPredictor r => $"router (top {r.ExpertsUsed} of {r.Experts} experts{(ahead is null ? "" : ahead is RouterPredictor guess && guess.ExpertsNamed < r.ExpertsUsed ? $", pre-gated guess of the best {guess.ExpertsNamed} ahead" : ", pre-gated guess ahead")})",
                LowRankActive => ahead is null ? "lowrank" : "lowrank + lookahead",
                OraclePredictor o when ReferenceEquals(o, oracleInstance) => ahead is null ? "oracle" : ReferenceEquals(ahead, o) ? "oracle (gate guess ahead)" : "lookahead + oracle",
                OraclePredictor => ReferenceEquals(ahead, current) ? "gate-resident (gate guess ahead)" : "gate-resident",
                TracePredictor t => t.Degradation.Describe() + (ahead is TracePredictor ? " (and as lookahead)" : ""),
                RecordingPredictor => "oracle (recording a trace)",
                _ => current.GetType().Name,
            };
            // Hot-neuron pinning ranks neurons by the frequencies calibration stored; without them auto pins nothing.
            float[][]? frequencies = null;
            if (settings.Pin is not 0)
            {
                frequencies = source.LoadActivity()?.Frequencies;
                if (frequencies is null && settings.Pin is not null)
                    throw new SettingsException("flashlm.pin", $"pinning a share of the cache needs the neurons' activation frequencies, which {layoutFolder} does not hold " +
                                                               "(record them with: flashlm calibrate LAYOUT --activity-only), or set pin = auto or off");
            }
            // The per-bundle checksum table (8 bytes per neuron) is held in DRAM too.
            var plan = PlanBudget(settings, layout, baseWeights + predictorBytes, kvAndScratch, out var cacheSettings, frequencies,
                // Mixture of experts: whole experts are pinned (their neurons share the expert's frequency).
                pinUnit: c.MoE ? c.HiddenDim : 1) with
            {
                Predictor = predictorName,
                PredictorBytes = predictorBytes,
                ProcessReserve = processReserve,
            };
            frequencies = null;
            // Mixture of experts: a layer's neurons come to compute in one ascending lease (when its rows fit), not cached ones first,
            // so each expert's neurons are summed in one order whatever the cache held: the output is exactly the dense MoE's over
            // the layout. Reads still overlap compute through the pre-gated prefetch of the next layer's experts.
            if (c.MoE) cacheSettings = cacheSettings with { HitsFirst = false };

            // Loading and calibration leave garbage behind; give it back so the process's resident memory
            // reflects what the runtime holds.
            GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);

            bool owns = system is null;
            // The blocking-read dispatcher gets flashlm.loader.threads threads (a host's own system must define
            // flashlm.io-dispatcher itself, e.g. by including reference.conf).
            system ??= ActorSystem.Create("flashlm", ConfigurationFactory
                .ParseString($"flashlm.io-dispatcher.dedicated-thread-pool.thread-count = {settings.Loader.Threads}")
                .WithFallback(RuntimeSettings.WithReference(config)));
            const string dispatcher = "flashlm.io-dispatcher";
            int id = Interlocked.Increment(ref _instances);
            var stop = new StopReason();
            var messages = new MessageCount();
            var supervisor = system.ActorOf(PipelineSupervisor.Props(stop.Set), $"flashlm-{id}");
            IActorRef Spawn(Props props, string name, string stage) =>
                supervisor.Ask<IActorRef>(new PipelineSupervisor.Spawn(props, name, stage), TimeSpan.FromSeconds(30)).GetAwaiter().GetResult();
            // Gate-resident selection holds each bundle's leading part in DRAM already: reads leave its whole pages out.
            var resident = settings.Loader.SkipResident && !settings.Loader.SplitParts && current is OraclePredictor held && !ReferenceEquals(held, oracleInstance)
                ? ResidentPart.For(layout, selectPart, held.Weights) : null;
            if (resident is not null) cacheSettings = cacheSettings with { ResidentSkip = resident.Skip };
            var sums = settings.Loader.VerifyReads ? checksums : null;
            bool uring = UseUring(settings.Loader, hooks);
            var loader = Spawn(uring ? UringLoader.Props(settings.Loader, sums, resident, hooks?.UringSubmit)
                : FlashLoader.Pool(settings.Loader, dispatcher, hooks?.Read, sums, hooks?.Faults, resident), "loader", "loader");
            var cache = Spawn(CacheManager.Props(layout, cacheSettings, loader, stop.Set, hooks?.Cache, messages), "cache", "cache manager");
            var compute = Spawn(LayerCompute.Props(hooks?.Logits is { } tap ? new LogitsTap(model, tap) : model, ffn, hooks?.Compute, streamed, messages), "compute", "compute");
            var pred = Spawn(Predictor.Props(current, cache, settings.Lookahead || ahead is not null, ahead, reference, hooks?.Predict, messages), "predictor", "predictor");
            return new FlashRuntime(system, owns, source, model, settings, plan, positions, thr, oracleBytes, supervisor, loader, cache, compute, pred, streamed,
                hooks, stop, messages)
            {
                CacheSettings = cacheSettings, ReadEngine = uring ? "io_uring" : "threads", OutsideHeapAtOpen = outsideHeapAtOpen,
                NativeBytes = CacheManager.NativeBytesFor(layout, cacheSettings),
            };
        }
        catch
        {
            source.Dispose();
            streamed?.Dispose();
            throw;
        }
    }

    private static int _instances;

    /// <summary>
    /// Whether the loader runs on io_uring: asked for (engine = io_uring, refused naming the key and the kernel's reason where
    /// a ring cannot be made) or auto where one can. Tests that inject read faults or delays (loader.debug-delay-ms) use the
    /// reader pool, where the hooks live.
    /// </summary>
    internal static bool UseUring(LoaderSettings s, RuntimeHooks? hooks)
    {
        if (s.Engine == LoaderEngine.Threads || hooks?.Read is not null || hooks?.Faults is not null || s.DebugDelayMs > 0) return false;
        using var probe = Io.IoUring.TryCreate(Math.Min(s.Readers, 8), out var reason);
        if (probe is not null) return true;
        if (s.Engine == LoaderEngine.IoUring)
            throw new SettingsException("flashlm.loader.engine", $"io_uring is not available here: {reason}; use engine = threads or auto");
        return false;
    }

    /// <summary>Trace-driven selection over <paramref name="source"/>: the trace must match the layout's shape and thresholds.</summary>
    private static TracePredictor Replay(TraceSettings t, FlashLayoutModel source, float[]? thresholds, out TracePredictor.Lazy ahead)
    {
        var trace = ActivationTrace.Load(t.File);
        var c = source.Config;
        if (trace.Layers != c.Layers || trace.Neurons != c.HiddenDim)
            throw new ModelFormatException(t.File, $"the activation trace is of a {trace.Layers}-layer model with {trace.Neurons} neurons a layer; the layout " +
                                                   $"{source.Path} has {c.Layers} layers of {c.HiddenDim}");
        var recorded = trace.Thresholds;
        var now = thresholds ?? [];
        if (recorded.Length != now.Length || recorded.Where((x, i) => MathF.Abs(x - now[i]) > 1e-6f * MathF.Max(1, MathF.Abs(x))).Any())
            throw new ModelFormatException(t.File, "the activation trace was recorded at other sparsity thresholds than the runtime uses " +
                                                   $"({recorded.Length} recorded, {now.Length} now): record it again");
        var d = new TraceDegradation(t.Recall, t.OverSelection, t.Rank, t.Seed);
        // The lookahead stand-in: the same figures, other draws (built only when lookahead uses it).
        ahead = new TracePredictor.Lazy(() => new TracePredictor(trace, t.File, d with { Seed = t.Seed ^ 0x5DEECE66DUL }, c.Dim));
        return new TracePredictor(trace, t.File, d, c.Dim);
    }

    /// <summary>The bundle part the exact selection computes from: the gate for SwiGLU (Llama), the up projection for ReLU (OPT).</summary>
    internal static string SelectPart(Architecture a) => a == Architecture.Llama ? FlashLayoutRules.Gate : FlashLayoutRules.Up;

    /// <summary>Bytes the exact selection (gate-resident, or the oracle) holds: every layer's <see cref="SelectPart"/> rows in the
    /// layout's type, plus the up biases of a ReLU model.</summary>
    internal static long GateResidentBytes(FfnLayout layout, Architecture a)
    {
        string part = SelectPart(a);
        var p = layout.Part(part) ?? throw new ArgumentException($"{layout.FilePath}: the bundles have no {part} part (parts: {string.Join(", ", layout.Parts.Select(x => x.Name))})");
        return (long)layout.Layers * layout.Neurons * (p.Bytes + (a == Architecture.Llama ? 0 : 4));
    }

    /// <summary>The share of each layer's neurons that must stay cacheable beside the gates for <see cref="PredictorKind.Auto"/> to pick gate-resident selection.</summary>
    internal const int GateResidentMinCacheShare = 4; // a quarter

    /// <summary>
    /// Whether <see cref="PredictorKind.Auto"/> takes gate-resident selection: the model is sparse (a dense model would select
    /// every neuron, for the gates' cost), and with the gates in DRAM the budget still caches a quarter of every layer's neurons
    /// (at 90 % sparsity a token uses about a tenth of a layer; the window of recent tokens needs a few times that).
    /// </summary>
    internal static bool GateResidentPays(RuntimeSettings s, FfnLayout layout, long weights, long gateBytes, long kvAndScratch, bool sparse)
    {
        if (!sparse) return false;
        try
        {
            var plan = PlanBudget(s, layout, weights + gateBytes, kvAndScratch, out _);
            return plan.RowsPerLayer >= Math.Max(16, layout.Neurons / GateResidentMinCacheShare) || plan.RowsPerLayer >= layout.Neurons;
        }
        catch (DramBudgetException)
        {
            return false;
        }
    }

    /// <summary>Sizes the neuron cache from the budget; throws when even the minimum does not fit.</summary>
    /// <param name="frequencies">Per layer and neuron, how often calibration found each neuron active: with them the cache pins each
    /// layer's most frequent neurons as flashlm.pin says (their bookkeeping is reserved at its largest before the rows are sized).</param>
    internal static DramPlan PlanBudget(RuntimeSettings s, FfnLayout layout, long weights, long kvAndScratch, out CacheManager.CacheSettings cache,
        float[][]? frequencies = null, int pinUnit = 1)
    {
        // The smallest cache: 16 rows per layer. Lookahead prefetches never pin the demand reserve (a quarter of the rows,
        // CacheManager.ReserveFor), and a demand acquire that finds every row pinned waits for one instead of failing, so
        // any row count from here up serves any active set (in lease-sized parts when the set is larger than the rows).
        const int minRows = 16;
        // Staged reads (coalesced ranges with gaps, bundles smaller than a page) need a buffer each; direct reads need none.
        int staging = Math.Min(s.Loader.Readers, 8);
        CacheManager.CacheSettings With(int rows) =>
            new(rows, s.Window, s.Loader.CoalesceGap, s.Loader.MaxRead, staging, Math.Max(2 * s.Loader.Readers, 4), s.Loader.DirectIo, s.Loader.SplitParts, HitsFirst: s.HitsFirst, s.PrefillSequential,
                // With a row for every neuron a prefetch cannot take a row a demand needs (each neuron holds one row at most):
                // no reserve, so lookahead may prefetch a whole layer.
                DemandReserve: rows >= layout.Neurons ? 0 : CacheManager.ReserveFor(rows));
        // Pinning's flags and lists at their largest (every neuron pinned): the rows are sized with room for whatever is chosen.
        long pinReserve = frequencies is null || s.Pin == 0 ? 0 : CacheManager.HotBytes(layout, [.. Enumerable.Range(0, layout.Layers).Select(_ => new int[layout.Neurons])]);
        long Need(int rows) => weights + kvAndScratch + CacheManager.BytesFor(layout, With(rows)) + pinReserve;
        int neurons = layout.Neurons;
        int lowest = Math.Min(minRows, neurons);
        int rows;
        if (s.DramBudget is not { } budget)
        {
            rows = neurons;
            budget = Need(rows);
        }
        else
        {
            long minimum = Need(lowest);
            if (budget < minimum)
                throw new DramBudgetException(
                    $"DRAM budget {Bytes(budget)} is below the minimum {Bytes(minimum)} ({minimum} bytes) this model needs: " +
                    $"DRAM-resident weights {Bytes(weights)}, KV cache and buffers {Bytes(kvAndScratch)}, " +
                    $"neuron cache of {lowest} rows per layer with I/O staging {Bytes(CacheManager.BytesFor(layout, With(lowest)))}", minimum);
            int lo = lowest, hi = neurons; // largest rows with Need(rows) <= budget
            while (lo < hi)
            {
                int mid = lo + (hi - lo + 1) / 2;
                if (Need(mid) <= budget) lo = mid;
                else hi = mid - 1;
            }
            rows = lo;
        }
        cache = With(rows);
        if (pinReserve > 0)
        {
            var hot = HotNeurons.Choose(frequencies!, Math.Min(rows, neurons), neurons, s.Window * Math.Max(1, s.MaxSessions), s.Pin, pinUnit);
            int mostHot = hot.Max(h => h.Length);
            // The demand reserve is a share of the rows the window cache keeps (the fewest of any layer).
            if (mostHot > 0)
                cache = cache with { Hot = hot, DemandReserve = rows >= neurons ? 0 : CacheManager.ReserveFor(rows - mostHot) };
        }
        long cacheBytes = CacheManager.BytesFor(layout, cache);
        long buffers = (long)cache.StagingBuffers * CacheManager.StagingSize(layout, cache.MaxRead);
        if (s.DramBudget is null) budget = weights + kvAndScratch + cacheBytes;
        return new DramPlan(budget, weights, kvAndScratch, cacheBytes - buffers, buffers, rows, neurons) { PinnedRows = cache.HotRows };
    }

    /// <summary>Formats a byte count with binary units.</summary>
    public static string Bytes(long b) => b switch
    {
        >= 1L << 30 => $"{b / (double)(1L << 30):F2} GiB",
        >= 1L << 20 => $"{b / (double)(1L << 20):F2} MiB",
        >= 1L << 10 => $"{b / 1024.0:F1} KiB",
        _ => $"{b} B",
    };

    /// <summary>
    /// Starts a session: its own KV cache and sampler, sharing the weights and the neuron cache. When
    /// flashlm.max-sessions are already open it waits for one to close (session-overflow = wait) or throws
    /// <see cref="InvalidOperationException"/> (refuse).
    /// </summary>
    public async Task<FlashSession> CreateSessionAsync(CancellationToken cancellation = default)
    {
        ObjectDisposedException.ThrowIf(_disposing.IsCancellationRequested, this);
        _stop.ThrowIfStopped();
        if (Settings.RefuseOverflow)
        {
            if (!_sessionSlots.Wait(0))
                throw new InvalidOperationException($"all {Settings.MaxSessions} sessions the DRAM budget holds are in use (flashlm.max-sessions; session-overflow = refuse)");
        }
        else await _sessionSlots.WaitAsync(CancellationTokenSource.CreateLinkedTokenSource(cancellation, _disposing.Token).Token).ConfigureAwait(false);
        var session = new FlashSession(this, Interlocked.Increment(ref _sessionIds), _model.CreateState(Positions));
        lock (_live) _live.Add(session);
        return session;
    }

    internal void Closed(FlashSession session)
    {
        lock (session)
        {
            session.StageActor?.Tell(PoisonPill.Instance);
            session.StageActor = null;
        }
        bool removed;
        lock (_live) removed = _live.Remove(session);
        if (removed) _sessionSlots.Release();
    }

    /// <summary>
    /// One-shot generation as run.c does it: a fresh session, the prompt with BOS, up to <paramref name="steps"/>
    /// positions (prompt included); one <see cref="TokenEvent"/> per position.
    /// </summary>
    public async IAsyncEnumerable<TokenEvent> Generate(string prompt, int steps, SamplingOptions sampling,
        [EnumeratorCancellation] CancellationToken cancellation = default)
    {
        await using var session = await CreateSessionAsync(cancellation).ConfigureAwait(false);
        await foreach (var ev in session.GenerateAsync(prompt, steps, sampling, cancellation).ConfigureAwait(false)) yield return ev;
    }

    /// <summary>The same generation as an Akka.Streams source.</summary>
    public Source<TokenEvent, NotUsed> GenerateSource(string prompt, int steps, SamplingOptions sampling, CancellationToken cancellation = default) =>
        Source.From(() => Generate(prompt, steps, sampling, cancellation));

    /// <summary>The model's layers this runtime holds (flashlm.layers; all of them unless it is a stage of a pipeline across nodes).</summary>
    public LayerRange Layers => _source.Window ?? new LayerRange(0, _source.ModelLayers);

    /// <summary>The whole model's layer count (<see cref="Config"/> counts this runtime's <see cref="Layers"/>).</summary>
    public int ModelLayers => _source.ModelLayers;

    /// <summary>
    /// Runs one position of <paramref name="session"/> through this runtime's layers as a stage of a pipeline across nodes:
    /// the first stage (layers from 0) takes the <paramref name="token"/>, a later one the <paramref name="hidden"/> state
    /// the stage before produced; the output is the hidden state after this runtime's last layer, or the logits when
    /// <paramref name="head"/> (the last stage). Positions of a session run one at a time, in order; its KV cache holds
    /// this runtime's layers only.
    /// </summary>
    public async Task<StageOutput> RunStageAsync(FlashSession session, int position, int token, float[]? hidden, bool head, bool prefill,
        CancellationToken cancellation = default)
    {
        _stop.ThrowIfStopped();
        var layers = Layers;
        if (hidden is null && layers.From != 0)
            throw new ArgumentException($"this runtime holds layers {layers} of {ModelLayers}: its input is the hidden state of the stage before, not a token");
        if (hidden is not null && hidden.Length != Config.Dim)
            throw new ArgumentException($"the hidden state has {hidden.Length} values; the model's dim is {Config.Dim}");
        if (hidden is null && (uint)token >= (uint)Config.VocabSize)
            throw new ArgumentException($"token {token} is outside the vocabulary of {Config.VocabSize}");
        if (head && layers.To != ModelLayers)
            throw new ArgumentException($"this runtime holds layers {layers} of {ModelLayers}: only the last stage runs the head");
        if ((uint)position >= (uint)session.Capacity)
            throw new ArgumentException($"position {position} is outside the session's {session.Capacity} positions");
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellation, _disposing.Token);
        var done = new TaskCompletionSource<StageOutput>(TaskCreationOptions.RunContinuationsAsynchronously);
        // One stage actor per session, for as long as it stages (started directly: it turns every failure of its own into the
        // position's, and stops itself on one, so it needs no supervision).
        IActorRef actor;
        lock (session)
        {
            if (session.StageActor is null)
            {
                var parts = new SessionActor.Parts(_compute, _predictor, _cache, Plan.Weights + Plan.KvCache, Settings.SessionStallTimeout, _hooks?.Session, _messages);
                session.StageActor = _system.ActorOf(StepActor.Props(parts, session.State, Config.Layers));
            }
            actor = session.StageActor;
        }
        actor.Tell(new StepActor.Run(position, token, hidden, head, prefill, done, linked.Token));
        StageOutput output;
        try
        {
            output = await done.Task.WaitAsync(linked.Token).ConfigureAwait(false);
        }
        catch (Exception)
        {
            // A failed or abandoned position ends the session's stage actor (it stops on a failure; a cancel is not seen
            // until its next layer): the next position starts a new one.
            lock (session)
            {
                if (ReferenceEquals(session.StageActor, actor)) session.StageActor = null;
            }
            actor.Tell(PoisonPill.Instance);
            throw;
        }
        Interlocked.Increment(ref _tokens);
        Interlocked.Add(ref _bytesRead, output.BytesRead);
        return output;
    }

    /// <summary>Runs one turn of <paramref name="session"/> on the actor pipeline.</summary>
    internal async IAsyncEnumerable<TokenEvent> RunTurn(FlashSession session, int[] tokens, int start, int limit, SamplingOptions sampling,
        int? prefill, [EnumeratorCancellation] CancellationToken cancellation)
    {
        _stop.ThrowIfStopped();
        if (_source.Window is { } window && window.Count != _source.ModelLayers)
            throw new InvalidOperationException($"this runtime holds layers {window} of the model's {_source.ModelLayers}: it runs positions as a stage of a pipeline across nodes (flashlm node), not whole turns");
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellation, _disposing.Token);
        var channel = Channel.CreateBounded<TokenEvent>(new BoundedChannelOptions(8) { SingleReader = true, SingleWriter = true });
        var sampler = new Sampler(Config.VocabSize, sampling, new XorShiftRandom(sampling.Seed));
        var finished = new TaskCompletionSource<SessionActor.Finished>(TaskCreationOptions.RunContinuationsAsynchronously);
        var parts = new SessionActor.Parts(_compute, _predictor, _cache, Plan.Weights + Plan.KvCache, Settings.SessionStallTimeout, _hooks?.Session, _messages);
        var props = SessionActor.Props(parts, _model, Tokenizer, session.State, tokens, start, limit, sampler, channel.Writer, linked.Token, finished, prefill);
        var actor = await _supervisor.Ask<IActorRef>(new PipelineSupervisor.Spawn(props, $"session-{session.Id}-turn-{Interlocked.Increment(ref _turns)}", null),
            TimeSpan.FromSeconds(30), linked.Token).ConfigureAwait(false);
        session.Running = finished.Task;
        actor.Tell(new SessionActor.Start());
        bool ended = false;
        try
        {
            await foreach (var ev in channel.Reader.ReadAllAsync(linked.Token).ConfigureAwait(false))
            {
                Interlocked.Increment(ref _tokens);
                Interlocked.Add(ref _bytesRead, ev.Stats.BytesRead);
                yield return ev;
            }
            var end = await finished.Task.ConfigureAwait(false);
            session.Advance(end.Position, end.Pending);
            ended = true;
        }
        finally
        {
            // The consumer walked away (left its await foreach, or failed) before the turn ended: without this the turn's
            // actor would wait forever for room in the channel, holding its sampler and channel, and a next turn of the
            // same session would run beside it on the same KV cache. Cancel it and wait until it no longer touches the
            // session's state (it stops at its next step or layer boundary; the stall timeout bounds the wait).
            if (!ended)
            {
                linked.Cancel();
                try
                {
                    await finished.Task.WaitAsync(Settings.SessionStallTimeout ?? TimeSpan.FromSeconds(60)).ConfigureAwait(false);
                }
                catch (Exception)
                {
                    // cancelled, failed or timed out: the turn is over for the consumer either way
                }
            }
        }
    }

    /// <summary>Null while the runtime serves; once a stage broke (the cache manager, or a stage that stopped), why it stopped.</summary>
    public string? StoppedBecause => _stop.Reason;

    /// <summary>Runtime-wide counters: sessions open, positions run, bytes read from flash, DRAM promised.</summary>
    public RuntimeStats Stats
    {
        get
        {
            int live;
            lock (_live) live = _live.Count;
            return new RuntimeStats(live, Interlocked.Read(ref _tokens), Interlocked.Read(ref _bytesRead), Plan.Budget, Plan.Total, Io.NativeAccounting.Bytes);
        }
    }

    /// <summary>For tests: rows pinned, leases held and sessions known to the cache manager.</summary>
    internal Task<CacheManager.Pins> PinsAsync() => _cache.Ask<CacheManager.Pins>(new CacheManager.GetPins(), TimeSpan.FromSeconds(30));

    /// <summary>For tests: the cache manager's view of one layer.</summary>
    internal Task<CacheManager.Snapshot> SnapshotAsync(int layer) => _cache.Ask<CacheManager.Snapshot>(new CacheManager.GetSnapshot(layer), TimeSpan.FromSeconds(30));

    /// <summary>Cancels every session, waits for them to stop, then stops the pipeline and frees all native memory.</summary>
    public void Dispose()
    {
        if (_disposing.IsCancellationRequested) return;
        _disposing.Cancel();
        Task[] running;
        lock (_live) running = _live.Select(s => s.Running).ToArray();
        try
        {
            Task.WaitAll(running, TimeSpan.FromSeconds(30));
        }
        catch (AggregateException)
        {
            // cancelled sessions end with OperationCanceledException: expected
        }
        // Readers first (they write into cache rows; a reader stops after the read it is doing), then compute (it reads
        // cache rows and may hold the streamed attention's buffers), then the cache (frees the rows), then the rest.
        try
        {
            // Queued before any stage's Terminated can reach the supervisor (they stop only after this): their stops are expected.
            _supervisor.Tell(new PipelineSupervisor.ShuttingDown());
            _loader.GracefulStop(TimeSpan.FromSeconds(30)).Wait();
            _compute.GracefulStop(TimeSpan.FromSeconds(30)).Wait();
            _cache.GracefulStop(TimeSpan.FromSeconds(30)).Wait();
            _supervisor.GracefulStop(TimeSpan.FromSeconds(30)).Wait();
        }
        catch (AggregateException)
        {
        }
        if (_ownsSystem) _system.Terminate().Wait(TimeSpan.FromSeconds(30));
        _source.Dispose();
        _streamed?.Dispose();
    }

    /// <summary>As <see cref="Dispose"/>.</summary>
    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }
}

/// <summary>Runtime-wide statistics.</summary>
/// <param name="NativeBytes">Native (aligned) bytes held by the whole process right now: cache rows, staging buffers; back to
/// the idle figure when sessions end (for leak checks and the soak).</param>
public sealed record RuntimeStats(int OpenSessions, long Positions, long BytesRead, long DramBudget, long DramPlanned, long NativeBytes);

/// <summary>
/// Test hooks (fault injection): called before every flash read; before every compute step with its name ("attend", "ffn",
/// "head"); before each prediction and each cache acquire with the layer; as each session position starts with the position.
/// </summary>
internal sealed record RuntimeHooks(FlashLoader.ReadHook? Read = null, Action<string>? Compute = null, Action<int>? Predict = null,
    Action<int>? Cache = null, Action<int>? Session = null)
{
    /// <summary>Faults the readers inject into their own reads (EIO, short reads, delays, flipped bits, killed readers).</summary>
    internal ReadFaults? Faults { get; init; }

    /// <summary>Records every set the predictor names, by position (the bench's activation trace).</summary>
    internal TraceRecorder? Record { get; init; }

    /// <summary>Called by compute with each position's logits (a buffer the session reuses: copy to keep).</summary>
    internal Action<float[]>? Logits { get; init; }

    /// <summary>The io_uring loader calls this before each submission (the number of reads); it may throw, as a failing
    /// io_uring_enter would. Unlike the other read hooks it keeps the ring.</summary>
    internal Action<int>? UringSubmit { get; init; }
}

/// <summary>Test hook: the model with every position's logits handed to <paramref name="tap"/> as the head computes them.</summary>
internal sealed class LogitsTap(ITransformer inner, Action<float[]> tap) : ITransformer
{
    public ModelConfig Config => inner.Config;
    public long WeightBytes => inner.WeightBytes;
    public IFeedForward Ffn => inner.Ffn;
    public InferenceState CreateState(int positions) => inner.CreateState(positions);
    public float[] Forward(InferenceState state, int token, int pos) => inner.Forward(state, token, pos);
    public void Embed(InferenceState s, int token, int pos) => inner.Embed(s, token, pos);
    public void Attend(InferenceState s, int layer, int pos) => inner.Attend(s, layer, pos);
    public void AddFfnOutput(InferenceState s) => inner.AddFfnOutput(s);

    public float[] Head(InferenceState s)
    {
        var logits = inner.Head(s);
        tap(logits);
        return logits;
    }
}

/// <summary>Why the runtime stopped serving, once it did (set at most once, from any thread).</summary>
internal sealed class StopReason
{
    private string? _reason;

    public string? Reason => Volatile.Read(ref _reason);

    public void Set(string reason) => Interlocked.CompareExchange(ref _reason, reason, null);

    public void ThrowIfStopped()
    {
        if (Reason is { } r) throw new InvalidOperationException($"the runtime stopped because {r}; dispose it and open a new one");
    }
}

/// <summary>Stands in for the FFN in the DRAM-resident model: the flash runtime computes the FFN itself.</summary>
internal sealed class FlashFfnSlot : IFeedForward
{
    public long Bytes => 0;

    public void Compute(int layer, float[] input, float[] output, InferenceState state) =>
        throw new InvalidOperationException("the FFN of a flash model is computed by the flash runtime's layer compute actor");
}
