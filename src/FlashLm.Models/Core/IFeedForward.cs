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

/// <summary>
/// Called with a layer's FFN input and its neuron activations (hidden; after the nonlinearity, before the down
/// projection); may zero activations, e.g. of neurons a predictor did not name (to measure what a predictor
/// costs in quality).
/// </summary>
public delegate void NeuronMask(int layer, float[] input, float[] activations);
