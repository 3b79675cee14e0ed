using System.Numerics.Tensors;
using FlashLm.Formats;

namespace FlashLm.Kernels;

/// <summary>
/// Where the parts of a quantized bundle are and what they hold: <see cref="Dim"/> elements each, gate (absent for OPT:
/// <see cref="Gate"/> = -1) and up rows of their source types, the down column re-quantized.
/// </summary>
public readonly record struct QuantBundle(int Dim, DType GateType, long Gate, int GateBytes, DType UpType, long Up, int UpBytes,
    DType DownType, long Down, int DownBytes);

/// <summary>
/// FFN over individual neuron bundles (the flash layout's unit): each bundle holds one neuron's input
/// rows and its output column, contiguous, in F32 or F16, or quantized (<see cref="QuantBundle"/>: the input x is
/// quantized once, per the row type's activation type, and the dots and the down accumulation run on the blocks).
/// The FFN output is the sum over active neurons of activation * down column, so any subset of neurons can be
/// accumulated in any order.
/// </summary>
public static unsafe class SparseFfn
{
    /// <summary>
    /// Gated neuron. SwiGLU: a = silu(gate . x) * (up . x), inactive (contributes nothing) if |silu(gate . x)| &lt; threshold.
    /// ReLU / FATReLU: a = (gate . x) * (up . x), inactive unless gate . x &gt; threshold. Adds (a * scale) * down into
    /// <paramref name="output"/> (dim) and returns a. <paramref name="scale"/>: a mixture-of-experts neuron's expert weight (1: none).
    /// </summary>
    public static float Gated(byte* bundle, long gateOffset, long upOffset, long downOffset, bool f16,
        ReadOnlySpan<float> x, FfnActivation activation, float threshold, Span<float> output, float scale = 1f)
    {
        float g = Dot(bundle + gateOffset, f16, x);
        if (!Activate(activation, g, threshold, out float act)) return 0f;
        float a = act * Dot(bundle + upOffset, f16, x);
        Axpy(bundle + downOffset, f16, a * scale, output);
        return a;
    }

    /// <summary>act(g) and whether the neuron is active, by <see cref="Norms.GateActive"/>'s rule (the same float steps).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static bool Activate(FfnActivation activation, float g, float threshold, out float act)
    {
        if (activation == FfnActivation.Silu)
        {
            act = Norms.Silu(g);
            return !(MathF.Abs(act) < threshold);
        }
        act = g;
        return g > threshold;
    }

    /// <summary>ReLU neuron with bias: a = max(0, up . x + bias); adds a * down into output and returns a.</summary>
    public static float Relu(byte* bundle, long upOffset, long downOffset, bool f16,
        ReadOnlySpan<float> x, float bias, Span<float> output)
    {
        float a = Dot(bundle + upOffset, f16, x) + bias;
        if (a <= 0) return 0f;
        Axpy(bundle + downOffset, f16, a, output);
        return a;
    }

    /// <summary>
    /// Quantized gated neuron: as <see cref="Gated(byte*, long, long, long, bool, ReadOnlySpan{float}, FfnActivation, float, Span{float})"/>,
    /// with <paramref name="xqGate"/> and <paramref name="xqUp"/> the FFN input quantized by <see cref="QuantKernels.QuantizeActivation"/>
    /// for the gate and up types (the same buffer when they agree).
    /// </summary>
    public static float Gated(byte* bundle, in QuantBundle q, ReadOnlySpan<byte> xqGate, ReadOnlySpan<byte> xqUp, FfnActivation activation, float threshold,
        Span<float> output, float scale = 1f)
    {
        float g = QuantKernels.Dot(q.GateType, new ReadOnlySpan<byte>(bundle + q.Gate, q.GateBytes), xqGate, q.Dim);
        if (!Activate(activation, g, threshold, out float act)) return 0f;
        float a = act * QuantKernels.Dot(q.UpType, new ReadOnlySpan<byte>(bundle + q.Up, q.UpBytes), xqUp, q.Dim);
        QuantKernels.Axpy(q.DownType, a * scale, new ReadOnlySpan<byte>(bundle + q.Down, q.DownBytes), output);
        return a;
    }

    /// <summary>Quantized ReLU neuron with bias: as <see cref="Relu(byte*, long, long, bool, ReadOnlySpan{float}, float, Span{float})"/>, with <paramref name="xqUp"/> the input quantized for the up type.</summary>
    public static float Relu(byte* bundle, in QuantBundle q, ReadOnlySpan<byte> xqUp, float bias, Span<float> output)
    {
        float a = QuantKernels.Dot(q.UpType, new ReadOnlySpan<byte>(bundle + q.Up, q.UpBytes), xqUp, q.Dim) + bias;
        if (a <= 0) return 0f;
        QuantKernels.Axpy(q.DownType, a, new ReadOnlySpan<byte>(bundle + q.Down, q.DownBytes), output);
        return a;
    }

    private static float Dot(byte* p, bool f16, ReadOnlySpan<float> x)
    {
        int n = x.Length;
        return f16 ? HalfKernels.Dot(new ReadOnlySpan<Half>(p, n), x) : TensorPrimitives.Dot(new ReadOnlySpan<float>(p, n), x);
    }

    private static void Axpy(byte* p, bool f16, float a, Span<float> output)
    {
        int n = output.Length;
        if (f16) HalfKernels.Axpy(a, new ReadOnlySpan<Half>(p, n), output);
        else TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(p, n), a, output, output);
    }
}
