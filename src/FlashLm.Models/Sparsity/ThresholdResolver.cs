using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;

namespace FlashLm.Models.Sparsity;

/// <summary>One rule for which gated-FFN (Llama) thresholds a run uses, shared by the dense and the flash paths.</summary>
public static class ThresholdResolver
{
    /// <summary>Calibration tokens used when thresholds are computed on the fly (self-sampled, fixed seed).</summary>
    public const int OnTheFlyTokens = 512;

    /// <summary>
    /// A target sparsity calibrates thresholds on the fly (0 means dense); no target uses the flash layout's
    /// calibrated thresholds when it has them. OPT (ReLU with biases) never uses thresholds (it is sparse by itself).
    /// A ReLU / FATReLU Llama is sparse by itself too: without calibrated thresholds (or at target 0) every layer gets the
    /// model's own threshold, so the result is never null for it.
    /// </summary>
    public static float[]? Resolve(ModelSource source, double? targetSparsity)
    {
        var c = source.Config;
        if (c.Architecture != Architecture.Llama) return null;
        float[]? own = c.ReluGated ? Enumerable.Repeat(c.DefaultThreshold, c.Layers).ToArray() : null;
        if (targetSparsity is { } target)
        {
            if (target == 0) return own;
            return Calibrator.Calibrate(source, Calibrator.Sequences(source, null, OnTheFlyTokens), target).Thresholds;
        }
        return (source as FlashLayoutModel)?.Thresholds?.Select(t => (float)t).ToArray() ?? own;
    }
}
