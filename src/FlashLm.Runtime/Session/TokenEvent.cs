namespace FlashLm.Runtime.Session;

/// <summary>Per-token statistics of the flash pipeline (one JSON object per token in `generate --stats`).</summary>
public sealed record TokenStats
{
    /// <summary>Position of this token (0-based).</summary>
    public int TokenIndex { get; init; }
    /// <summary>True while the prompt is being fed.</summary>
    public bool Prefill { get; init; }
    /// <summary>Bytes read from flash for this token.</summary>
    public long BytesRead { get; init; }
    /// <summary>Flash reads issued for this token.</summary>
    public int Reads { get; init; }
    /// <summary>Mean size of one flash read, in bytes.</summary>
    public double MeanReadBytes => Reads > 0 ? (double)BytesRead / Reads : 0;
    /// <summary>Neurons compute used, summed over layers.</summary>
    public int NeuronsActive { get; init; }
    /// <summary>Neurons read from flash (not already cached), summed over layers.</summary>
    public int NeuronsLoaded { get; init; }
    /// <summary>Of <see cref="NeuronsActive"/>, the neurons found in pinned (hot) cache rows (flashlm.pin), summed over layers.</summary>
    public int NeuronsPinnedHit { get; init; }
    /// <summary>Of <see cref="NeuronsActive"/>, the neurons found in the window cache (cached, or being read by a lookahead); the rest
    /// (NeuronsActive - NeuronsPinnedHit - NeuronsWindowHit) were read on demand.</summary>
    public int NeuronsWindowHit { get; init; }
    /// <summary>Neurons dropped from the cache (window or capacity), summed over layers.</summary>
    public int NeuronsEvicted { get; init; }
    /// <summary>Cache rows live after the token, over all layers.</summary>
    public int CachedRows { get; init; }
    /// <summary>Wall time during which at least one flash read was in flight.</summary>
    public double IoMs { get; init; }
    /// <summary>Cache bookkeeping: maps, eviction, row moves, read planning.</summary>
    public double MemMs { get; init; }
    /// <summary>Attention, FFN and head compute.</summary>
    public double ComputeMs { get; init; }
    /// <summary>Time from each layer's attention output to its predicted neuron set (predictor compute and messaging).</summary>
    public double PredictMs { get; init; }
    /// <summary>Time compute waited for rows (reads not yet finished).</summary>
    public double WaitMs { get; init; }
    /// <summary>Read time hidden behind compute: io_ms - wait_ms (at least 0).</summary>
    public double OverlapMs { get; init; }
    /// <summary>Wall time of the whole token.</summary>
    public double TotalMs { get; init; }
    /// <summary>Neurons the predictor named (summed over layers); with a reference: the exact active count,
    /// neurons read but not active (false positives) and active but not read (false negatives).</summary>
    public int? Predicted { get; init; }
    /// <summary>With a reference: the exact active count, summed over layers.</summary>
    public int? TrulyActive { get; init; }
    /// <summary>With a reference: neurons read but not active.</summary>
    public int? FalsePositive { get; init; }
    /// <summary>With a reference: neurons active but not read (a quality cost).</summary>
    public int? FalseNegative { get; init; }
    /// <summary>Neurons the lookahead guesses named for the layers that had one (summed over layers; null: no guess this token).</summary>
    public int? LookaheadGuessed { get; init; }
    /// <summary>Of those, the ones the layer then used (the guess's precision is hits / guessed).</summary>
    public int? LookaheadGuessHits { get; init; }
    /// <summary>Neurons those layers used (the guess's recall is hits / truth).</summary>
    public int? LookaheadGuessTruth { get; init; }
    /// <summary>Mixture of experts (null for a dense FFN), over all layers: experts the router chose, found in the cache, read from
    /// flash, and guessed ahead by the pre-gated prefetch and then used. Found in the cache counts the window's and the pinned
    /// experts' (NeuronsPinnedHit says how many neurons of them were pinned ones). An expert is its neurons' bundles, so these are the
    /// neuron counts over the neurons per expert (whole experts unless the cache holds less than an expert).</summary>
    public double? ExpertsUsed { get; init; }
    /// <inheritdoc cref="ExpertsUsed"/>
    public double? ExpertsHit { get; init; }
    /// <inheritdoc cref="ExpertsUsed"/>
    public double? ExpertsRead { get; init; }
    /// <inheritdoc cref="ExpertsUsed"/>
    public double? ExpertsPrefetchedUsed { get; init; }
    /// <summary>Layers whose lookahead reads were issued this token, and how many of those started before the
    /// previous layer's compute ended (the reads overlapped compute).</summary>
    public int LookaheadLayers { get; init; }
    /// <summary>Of LookaheadLayers, how many started reading before the previous layer's compute ended.</summary>
    public int LookaheadOverlapped { get; init; }
    /// <summary>When this token's first flash read started (Stopwatch ticks; 0 if none), for overlap checks.</summary>
    public long FirstReadTicks { get; init; }
    /// <summary>DRAM in use by the runtime's own accounting.</summary>
    public long DramBytes { get; init; }
    /// <summary>Messages the pipeline's actors handled for this position (all stages; the measure of how chatty a token's path is).</summary>
    public int Messages { get; init; }
}

/// <summary>One position of a generation: the token fed or produced, the bytes it prints, and its statistics.</summary>
/// <param name="Position">0-based position.</param>
/// <param name="Token">The token at the next position (prompt token or sampled).</param>
/// <param name="Piece">The bytes this token prints (llama2.c's decode; may be empty or unprintable).</param>
/// <param name="FromPrompt">True while the prompt is being fed (prefill).</param>
public sealed record TokenEvent(int Position, int Token, byte[] Piece, bool FromPrompt, TokenStats Stats);
