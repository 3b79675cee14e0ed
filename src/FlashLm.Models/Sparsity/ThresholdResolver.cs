using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;

namespace FlashLm.Models.Sparsity;

/// <summary>One rule for which SwiGLU thresholds a run uses, shared by the dense and the flash paths.</summary>
public static class ThresholdResolver
{
    /// <summary>Calibration tokens used when thresholds are computed on the fly (self-sampled, fixed seed).</summary>
    public const int OnTheFlyTokens = 512;

    /// <summary>
    /// A target sparsity calibrates thresholds on the fly (0 means dense); no target uses the flash layout's
    /// calibrated thresholds when it has them. ReLU models never use thresholds (they are sparse by themselves).
    /// </summary>
    public static float[]? Resolve(ModelSource source, double? targetSparsity)
    {
        if (source.Config.Architecture != Architecture.Llama) return null;
        if (targetSparsity is { } target)
        {
            if (target == 0) return null;
            return Calibrator.Calibrate(source, Calibrator.Sequences(source, null, OnTheFlyTokens), target).Thresholds;
        }
        return (source as FlashLayoutModel)?.Thresholds?.Select(t => (float)t).ToArray();
    }
}
