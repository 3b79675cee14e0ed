using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Models;
using FlashLm.Runtime.Io;

namespace FlashLm.Runtime.Compute;

/// <summary>
/// The dense FFN computed from a flash layout's own bundles: every layer's section held in DRAM, every neuron of a layer
/// accumulated in neuron order by the same code the flash runtime runs over its cache rows (<see cref="SparseFfnSpec"/>),
/// on the same parts (for a quantized layout: the source's gate/up blocks and the re-quantized down columns). So the
/// flash runtime at sparsity 0, whose cache hands compute the layer's neurons in order, gives exactly this model's
/// output, and with thresholds exactly the dense thresholded model's. The whole FFN is in DRAM: a reference, not a way to
/// run a model larger than DRAM. One caller at a time (like the runtime's compute stage, it reuses its quantized-input buffers).
/// </summary>
public sealed class LayoutDenseFfn : IFeedForward, IDisposable
{
    private readonly AlignedBuffer[] _sections; // (layers) hidden * stride bytes each
    private readonly nint[][] _addresses;       // (layers, hidden) bundle i of layer l
    private readonly int[] _neurons;            // 0..hidden-1
    private readonly SparseFfnSpec _spec;
    private readonly float[]? _weights;         // mixture of experts: the routing weight of each expert, this layer

    /// <param name="layout">The layout; its sections are read and each bundle checked against ffn.sums.</param>
    /// <param name="thresholds">Per-layer SwiGLU thresholds (null: dense).</param>
    public LayoutDenseFfn(FlashLayoutModel layout, IReadOnlyList<float>? thresholds = null)
    {
        var c = layout.Config;
        var ffn = layout.Ffn;
        if (thresholds is not null && thresholds.Count != c.Layers)
            throw new ArgumentException($"{thresholds.Count} thresholds for {c.Layers} layers");
        var sums = layout.LoadBundleChecksums();
        float[][]? upBias = null, downBias = null;
        if (c.Architecture == Architecture.Opt)
        {
            upBias = Enumerable.Range(0, c.Layers).Select(l => layout.ReadF32(TensorNames.Block(l, TensorNames.FfnUpBias))).ToArray();
            downBias = Enumerable.Range(0, c.Layers).Select(l => layout.ReadF32(TensorNames.Block(l, TensorNames.FfnDownBias))).ToArray();
        }
        var routers = c.MoE ? Enumerable.Range(0, c.Layers).Select(l => Matrix.Load(layout, TensorNames.Block(l, TensorNames.FfnRouter))).ToArray() : null;
        _spec = new SparseFfnSpec(ffn, c, thresholds?.ToArray(), upBias, downBias, routers);
        _weights = c.MoE ? new float[c.Experts] : null;
        _neurons = Enumerable.Range(0, ffn.Neurons).ToArray();
        _sections = new AlignedBuffer[c.Layers];
        _addresses = new nint[c.Layers][];
        try
        {
            using var handle = File.OpenHandle(ffn.FilePath, FileMode.Open, FileAccess.Read, FileShare.Read);
            for (int l = 0; l < c.Layers; l++)
            {
                var section = _sections[l] = new AlignedBuffer(ffn.LayerBytes);
                long start = ffn.LayerOffset(l);
                for (long done = 0; done < ffn.LayerBytes;)
                {
                    int n = (int)Math.Min(1 << 24, ffn.LayerBytes - done);
                    BinaryFile.ReadExactly(handle, ffn.FilePath, start + done, section.Span(done, n), $"ffn layer {l}");
                    done += n;
                }
                _addresses[l] = new nint[ffn.Neurons];
                for (int i = 0; i < ffn.Neurons; i++)
                {
                    var bundle = section.Span(i * ffn.BundleStride, (int)ffn.BundleBytes);
                    if (sums.Check(bundle, start + i * ffn.BundleStride) is { } problem)
                        throw new ModelFormatException(ffn.FilePath, problem, $"ffn layer {l}", start + i * ffn.BundleStride);
                    unsafe { _addresses[l][i] = (nint)(section.Pointer + i * ffn.BundleStride); }
                }
            }
        }
        catch
        {
            Dispose();
            throw;
        }
        Bytes = _sections.Sum(s => s.Length) + _spec.Bytes;
    }

    /// <inheritdoc/>
    public long Bytes { get; }

    /// <inheritdoc/>
    public void Compute(int layer, float[] input, float[] output, InferenceState state)
    {
        // Mixture of experts: routed, then every neuron of the chosen experts in neuron order (the others skipped).
        if (_weights is not null) _spec.Route(layer, input, _weights);
        _spec.Accumulate(input, output, layer, first: true, _addresses[layer], _neurons, _weights);
    }

    public void Dispose()
    {
        foreach (var s in _sections) s?.Dispose();
    }
}
