using FlashLm.Formats.FlashLayout;

namespace FlashLm.Runtime.Predict;

/// <summary>Trained low-rank predictors stored in a flash layout, as runtime predictors.</summary>
public static class TrainedPredictors
{
    /// <summary>The layout's same-layer (or lookahead) predictors, or null when it has none.</summary>
    public static IActivePredictor? Load(FlashLayoutModel source, bool lookahead, float[]? thresholds) => null;
}
