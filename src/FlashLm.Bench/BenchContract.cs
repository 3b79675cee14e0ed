using System.Text.Json;
using System.Text.Json.Serialization;

namespace FlashLm.Bench;

/// <summary>What a timing worker (llama.cpp, or FlashLm's dense path) prints: its median decode step.</summary>
/// <param name="MsPerToken">Median wall time of one decode step, ms.</param>
internal sealed record TimingResult(string Name, double MsPerToken, double TokensPerS);

/// <summary>
/// What one rung's worker prints: figures per decode step, means over its steps except <paramref name="MsPerToken"/>
/// (the median). Times in ms, sizes in bytes.
/// </summary>
/// <param name="MessagesPerToken">Messages the pipeline's actors handled per position (TokenStats.Messages).</param>
/// <param name="DramBytes">The most DRAM the runtime's own accounting held at any step.</param>
internal sealed record RungResult(
    string Name, double MsPerToken, double TokensPerS, double BytesPerToken, double ReadsPerToken, double MeanReadBytes,
    double IoMs, double WaitMs, double OverlapMs, double MemMs, double PredictMs, double ComputeMs,
    double NeuronsActive, double NeuronsLoaded, double MessagesPerToken, long DramBytes, long DramBudgetBytes)
{
    /// <summary>Of the neurons lookahead guessed for a layer, the share that layer then used; null when no guess was made.</summary>
    public double? LookaheadPrecision { get; init; }
    /// <summary>Of the neurons the layers used, the share lookahead had guessed; null when no guess was made.</summary>
    public double? LookaheadRecall { get; init; }
    /// <summary>The predictor the runtime took (what auto chose, and the lookahead guess).</summary>
    public string Predictor { get; init; } = "";
    /// <summary>The worker process's peak resident set (VmHWM of /proc/self/status) at the end of its run: everything the process
    /// held, the .NET runtime and Akka included, which the cap must cover.</summary>
    public long PeakRssBytes { get; init; }
    /// <summary>What the runtime set aside of the budget for the process itself (its resident set at open plus the allowance).</summary>
    public long ProcessReserveBytes { get; init; }
    /// <summary>CPU time (user + system, every thread of the process) per decode step, ms: on two cores, what the readers,
    /// actors and kernels take together beside the wall time.</summary>
    public double CpuMsPerToken { get; init; }
    /// <summary>Mean per decode step: active neurons found in pinned (hot) rows, and in the window cache (TokenStats.NeuronsPinnedHit / NeuronsWindowHit).</summary>
    public double NeuronsPinnedHit { get; init; }
    /// <inheritdoc cref="NeuronsPinnedHit"/>
    public double NeuronsWindowHit { get; init; }
    /// <summary>Cache rows pinned for good (DramPlan.PinnedRows).</summary>
    public int PinnedRows { get; init; }
}

/// <summary>One rung of the report: medians over its repetitions, and the floor the disk allows at its read size.</summary>
internal sealed record RungRow(
    string Name, int Repetitions, double MsPerToken, double MsPerTokenMin, double MsPerTokenMax, double TokensPerS,
    double BytesPerToken, double ReadsPerToken, double MeanReadBytes, double IoMs, double WaitMs, double OverlapMs,
    double MemMs, double PredictMs, double ComputeMs, double NeuronsActive, double NeuronsLoaded, double MessagesPerToken,
    double DiskMbpsAtReadSize, double FloorMsPerToken, long CapBytes)
{
    /// <summary>Median over repetitions of the lookahead guess's precision (null when a run made no guess).</summary>
    public double? LookaheadPrecision { get; init; }
    /// <summary>Median over repetitions of the lookahead guess's recall.</summary>
    public double? LookaheadRecall { get; init; }
    /// <summary>The predictor the runtime took.</summary>
    public string Predictor { get; init; } = "";
    /// <summary>The largest peak resident set of the rung's workers (VmHWM), against <see cref="CapBytes"/>.</summary>
    public long PeakRssBytes { get; init; }
    /// <summary>The largest share of a worker's peak resident set beyond the runtime's own accounting (its DRAM in use): the
    /// .NET runtime, Akka, code and stacks (and the oracle's weights, on oracle rungs), which the process reserve must cover.</summary>
    public long ProcessOverheadBytes { get; init; }
    /// <summary>The smallest process reserve the rung's runtimes took off the cap.</summary>
    public long ProcessReserveBytes { get; init; }
    /// <summary>The cgroup limit the rung's workers ran under: <see cref="CapBytes"/>, plus the oracle's weights when the rung uses it.</summary>
    public long ProcessCapBytes { get; init; }
    /// <summary>Median over repetitions of the process's CPU time per decode step, ms.</summary>
    public double CpuMsPerToken { get; init; }
    /// <summary>Medians over repetitions of <see cref="RungResult.NeuronsPinnedHit"/> and <see cref="RungResult.NeuronsWindowHit"/>.</summary>
    public double NeuronsPinnedHit { get; init; }
    /// <inheritdoc cref="NeuronsPinnedHit"/>
    public double NeuronsWindowHit { get; init; }
    /// <summary>Cache rows pinned for good.</summary>
    public int PinnedRows { get; init; }
    /// <summary>Mixture of experts, per decode step over all layers: experts the router chose, found in the cache (window or pinned),
    /// and read from flash (an expert is its neurons' bundles: neuron counts over the neurons per expert). Null for dense models.</summary>
    public double? ExpertsUsed { get; init; }
    /// <inheritdoc cref="ExpertsUsed"/>
    public double? ExpertsHit { get; init; }
    /// <inheritdoc cref="ExpertsUsed"/>
    public double? ExpertsRead { get; init; }
}

internal sealed record BenchModel(string Path, string Architecture, int Dim, int HiddenDim, int Layers, long Bytes);

/// <summary>llama.cpp under the same cap: its median, or how many of its runs the cap killed (then 0 tokens/s).</summary>
internal sealed record LlamaCppSummary(double? MsPerToken, double TokensPerS, int Repetitions, int KilledByCap, string Settings);

/// <summary>The whole model in DRAM, no cap: FlashLm's dense path against llama.cpp, alternating.</summary>
internal sealed record InDramSummary(
    double FlashlmDenseMsPerToken, double LlamacppMsPerToken, double SpeedRatio, int Repetitions,
    double[] FlashlmDenseMsPerTokenAll, double[] LlamacppMsPerTokenAll);

/// <summary>The bench's JSON report (--json).</summary>
internal sealed record BenchReport(
    string Machine, BenchModel Model, long DramBudgetBytes, long RuntimeBudgetBytes, bool Cgroup, string Predictor,
    int DecodeTokens, double? FloorMsPerToken, IReadOnlyList<RungRow> Rungs, LlamaCppSummary? Llamacpp, InDramSummary? InDram);

/// <summary>
/// The one JSON shape of the bench's records: snake_case names, every constructor parameter required and no unknown
/// member accepted, so a worker and an orchestrator that disagree fail with the member named instead of reading zeros.
/// </summary>
internal static class BenchJson
{
    public static JsonSerializerOptions Options { get; } = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        RespectRequiredConstructorParameters = true,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public static JsonSerializerOptions Indented { get; } = new(Options) { WriteIndented = true };

    public static string Line<T>(T value) => JsonSerializer.Serialize(value, Options);

    /// <summary>Parses a worker's last stdout line; <paramref name="who"/> names the worker in the error.</summary>
    public static T Parse<T>(string line, string who)
    {
        try
        {
            return JsonSerializer.Deserialize<T>(line, Options) ?? throw new InvalidOperationException($"bench worker {who} printed null");
        }
        catch (JsonException e)
        {
            string shown = line.Length > 200 ? line[..200] + "..." : line;
            throw new InvalidOperationException($"bench worker {who}: its output is not a {typeof(T).Name} ({e.Message}): {shown}", e);
        }
    }
}
