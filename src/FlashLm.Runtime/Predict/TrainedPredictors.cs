using FlashLm.Formats.FlashLayout;
using FlashLm.Models.Predictors;

namespace FlashLm.Runtime.Predict;

/// <summary>Trained low-rank predictors stored in a flash layout, as runtime predictors.</summary>
internal static class TrainedPredictors
{
    /// <summary>The layout's same-layer (or lookahead) predictors, or null when it has none.</summary>
    /// <remarks>A lookahead predictor's Active(l, x) expects x = layer l-1's FFN input (the runtime calls it with
    /// layer N's input to name layer N+1's neurons).</remarks>
    public static LowRankActive? Load(FlashLayoutModel source, bool lookahead) =>
        PredictorStore.Load(source, lookahead ? PredictorKind.Lookahead : PredictorKind.SameLayer) is { } p ? new LowRankActive(p) : null;
}

/// <summary>A <see cref="LowRankPredictor"/> as the predictor actor uses it. Not thread-safe (the actor serialises calls).</summary>
public sealed class LowRankActive(LowRankPredictor predictor) : IActivePredictor
{
    private readonly int[] _buffer = new int[predictor.Neurons];

    public int Layers => predictor.Layers;

    /// <summary>DRAM the predictor holds (counted in the budget).</summary>
    public long Bytes => predictor.Bytes;

    public int[] Active(int layer, float[] ffnInput)
    {
        int n = predictor.Active(layer, ffnInput, _buffer);
        return _buffer.AsSpan(0, n).ToArray();
    }
}
