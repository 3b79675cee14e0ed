namespace FlashLm.Models;

/// <summary>
/// The FFN of every layer, separated from the rest of the forward pass so that the flash runtime can
/// replace the dense matrices with cached neuron bundles.
/// </summary>
public interface IFeedForward
{
    /// <summary>
    /// output (dim) = FFN_layer(input (dim)), using state's hidden buffers (Hb, Hb2) as scratch.
    /// Biases, if the architecture has them, are included.
    /// </summary>
    void Compute(int layer, float[] input, float[] output, InferenceState state);

    /// <summary>Bytes of FFN weights this implementation holds in DRAM.</summary>
    long Bytes { get; }
}
