using System.Buffers.Binary;
using System.Runtime.InteropServices;
using FlashLm.Formats;

namespace FlashLm.Kernels;

/// <summary>
/// The activation side of a quantized matmul as llama.cpp's CPU backend does it on x86 (AVX2/AVX-512 builds), so that the
/// integer dots see the same int8 inputs: Q8_0 and Q8_1 take d = amax / 127 (stored F16) and q = round-half-to-even(x * (127 /
/// amax)), and Q8_1 also stores d * sum(q); Q8_K is ggml's reference (the x86 build uses it). ggml's portable reference for
/// Q8_0/Q8_1 (what <see cref="Dequant.Quantize"/> writes, for weights) instead multiplies by 1 / d and rounds half away from
/// zero, which differs in a few values per block. This is the scalar path; V256Quant is the same, vectorised.
/// </summary>
internal static class LlamaCppActivation
{
    public static void Quantize(DType act, ReadOnlySpan<float> x, Span<byte> xq)
    {
        if (act is not (DType.Q8_0 or DType.Q8_1))
        {
            Dequant.Quantize(act, x, xq);
            return;
        }
        bool withSum = act == DType.Q8_1;
        long need = DTypeInfo.ByteCount(act, x.Length);
        if (xq.Length != need) throw new ArgumentException($"{act}: {x.Length} values take {need} bytes, got a buffer of {xq.Length}", nameof(xq));
        int stride = withSum ? 36 : 34, qs = withSum ? 4 : 2;
        for (int b = 0; b < x.Length / 32; b++)
        {
            var v = x.Slice(b * 32, 32);
            var y = xq.Slice(b * stride, stride);
            float amax = 0;
            foreach (var e in v) amax = MathF.Max(amax, MathF.Abs(e));
            float d = amax / 127f;
            float id = amax != 0 ? 127f / amax : 0f;
            var q = MemoryMarshal.Cast<byte, sbyte>(y[qs..]);
            int sum = 0;
            for (int i = 0; i < 32; i++)
            {
                int r = (int)MathF.Round(v[i] * id, MidpointRounding.ToEven);
                q[i] = (sbyte)r;
                sum += r;
            }
            BinaryPrimitives.WriteUInt16LittleEndian(y, BitConverter.HalfToUInt16Bits((Half)d));
            if (withSum) BinaryPrimitives.WriteUInt16LittleEndian(y[2..], BitConverter.HalfToUInt16Bits((Half)(sum * d)));
        }
    }
}
