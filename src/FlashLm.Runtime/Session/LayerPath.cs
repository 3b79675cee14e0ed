using Akka.Actor;
using FlashLm.Models;
using FlashLm.Runtime.Predict;

namespace FlashLm.Runtime.Session;

/// <summary>
/// The forward path of one layer: the session starts it on compute (attention), compute hands the FFN input to the
/// predictor, the predictor asks the cache manager for the rows on the session's behalf, the cache manager hands the
/// ready lease to compute, compute releases it (and asks for a remainder itself) and tells the session when the
/// layer is done. The session hears back once per layer instead of four times.
/// </summary>
internal static class LayerPath
{
    /// <summary>Who takes part in one position's layers and whose they are.</summary>
    /// <param name="Session">The session the steps run for: failures go to it, leases and reads are charged to it.</param>
    /// <param name="State">The session's hidden state (compute writes it; the predictor reads its FFN input).</param>
    /// <param name="Prefill">Whether this position's reads are prefill reads.</param>
    public sealed record Route(IActorRef Session, IActorRef Compute, IActorRef Predictor, IActorRef Cache, InferenceState State, long Position,
        bool Prefill);

    /// <summary>What a layer's steps measured so far (Stopwatch ticks), carried along the path to the session.</summary>
    /// <param name="ComputeTicks">Attention and FFN compute.</param>
    /// <param name="WaitTicks">From asking the cache manager for rows to compute having them.</param>
    /// <param name="PredictTicks">From the attention output to the active set being named.</param>
    /// <param name="AttnIoTicks">Reading the layer's attention weights (streamed attention only), with its bytes and reads.</param>
    /// <param name="Quality">The prediction against the reference, when one is measured.</param>
    /// <param name="Guess">The lookahead guess made for this layer during the layer before, against the set this layer used
    /// (Predicted = guessed, TrulyActive = used, FalsePositive = guessed but unused, FalseNegative = used but not guessed).</param>
    public sealed record Tally(long ComputeTicks = 0, long WaitTicks = 0, long PredictTicks = 0, long AttnIoTicks = 0, long AttnBytes = 0,
        int AttnReads = 0, Predictor.PredictionQuality? Quality = null, Predictor.PredictionQuality? Guess = null);
}
