using System.Numerics.Tensors;
using FlashLm.Formats;

namespace FlashLm.Kernels;

/// <summary>Normalisations and small element-wise kernels, with llama2.c's arithmetic order where it matters.</summary>
public static class Norms
{
    /// <summary>RMSNorm: o = w * (x / sqrt(mean(x^2) + eps)), computed as run.c does.</summary>
    public static void RmsNorm(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, Span<float> o, float eps)
    {
        float ss = TensorPrimitives.SumOfSquares(x);
        ss /= x.Length;
        ss += eps;
        ss = 1.0f / MathF.Sqrt(ss);
        for (int j = 0; j < x.Length; j++) o[j] = weight[j] * (ss * x[j]);
    }

    /// <summary>LayerNorm: o = (x - mean) / sqrt(var + eps) * w + b (biased variance, as PyTorch).</summary>
    public static void LayerNorm(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, ReadOnlySpan<float> bias, Span<float> o, float eps)
    {
        int n = x.Length;
        float mean = TensorPrimitives.Sum(x) / n;
        float var = 0;
        for (int j = 0; j < n; j++)
        {
            float d = x[j] - mean;
            var += d * d;
        }
        var /= n;
        float inv = 1.0f / MathF.Sqrt(var + eps);
        for (int j = 0; j < n; j++) o[j] = (x[j] - mean) * inv * weight[j] + bias[j];
    }

    /// <summary>In-place softmax as run.c: subtract the max, exponentiate, normalise.</summary>
    public static void Softmax(Span<float> x)
    {
        float max = x[0];
        for (int i = 1; i < x.Length; i++) if (x[i] > max) max = x[i];
        float sum = 0.0f;
        for (int i = 0; i < x.Length; i++)
        {
            x[i] = MathF.Exp(x[i] - max);
            sum += x[i];
        }
        for (int i = 0; i < x.Length; i++) x[i] /= sum;
    }

    /// <summary>
    /// silu(g) = g * sigmoid(g), in the one sequence of float steps every SwiGLU path uses (dense, sparse bundles, the oracle,
    /// calibration): their activity decisions must agree bit for bit.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    public static float Silu(float g) => g * (1.0f / (1.0f + MathF.Exp(-g)));

    /// <summary>SwiGLU combine in place: g = silu(g) * u.</summary>
    public static void SwiGlu(Span<float> gate, ReadOnlySpan<float> up)
    {
        for (int i = 0; i < gate.Length; i++)
        {
            gate[i] = Silu(gate[i]) * up[i];
        }
    }

    /// <summary>SwiGLU with activation sparsity: g = silu(g) * u where |silu(g)| &gt;= threshold, else 0.</summary>
    public static void SwiGluThresholded(Span<float> gate, ReadOnlySpan<float> up, float threshold)
    {
        for (int i = 0; i < gate.Length; i++)
        {
            float v = Silu(gate[i]);
            gate[i] = MathF.Abs(v) < threshold ? 0f : v * up[i];
        }
    }

    /// <summary>
    /// ReLU-gated combine with activation sparsity (ReLU / FATReLU Llama FFNs): g = g * u where g &gt; threshold, else 0.
    /// ReLU is threshold 0; FATReLU's threshold, or a calibrated one, leaves more neurons out.
    /// </summary>
    public static void ReluGatedThresholded(Span<float> gate, ReadOnlySpan<float> up, float threshold)
    {
        for (int i = 0; i < gate.Length; i++)
        {
            float g = gate[i];
            gate[i] = g > threshold ? g * up[i] : 0f;
        }
    }

    /// <summary>The gated FFN's combine for <paramref name="activation"/>: <see cref="SwiGluThresholded"/> or <see cref="ReluGatedThresholded"/>.</summary>
    public static void GatedThresholded(FfnActivation activation, Span<float> gate, ReadOnlySpan<float> up, float threshold)
    {
        if (activation == FfnActivation.Silu) SwiGluThresholded(gate, up, threshold);
        else ReluGatedThresholded(gate, up, threshold);
    }

    /// <summary>
    /// Whether a gated FFN neuron with gate pre-activation <paramref name="g"/> is active: SiLU |silu(g)| &gt;= threshold,
    /// ReLU / FATReLU g &gt; threshold. The one rule the dense, sparse, oracle, calibration and predictor-training paths share.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    public static bool GateActive(FfnActivation activation, float g, float threshold) =>
        activation == FfnActivation.Silu ? MathF.Abs(Silu(g)) >= threshold : g > threshold;

    /// <summary>In-place ReLU.</summary>
    public static void Relu(Span<float> x)
    {
        for (int i = 0; i < x.Length; i++) if (x[i] < 0) x[i] = 0;
    }
}
