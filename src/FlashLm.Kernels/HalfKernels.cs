using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace FlashLm.Kernels;

/// <summary>
/// F16 weights against F32 activations without a widened copy: each block of eight halves is sign-extended to
/// 32 bits straight from memory, converted in registers with a shift, a mask and a multiply, and fed into a fused
/// multiply-add, so an F16 row costs one pass over its bytes (.NET exposes no F16C conversion). The conversion is
/// exact for every finite half (normal and subnormal): the half's exponent and mantissa bits land in an F32 bit
/// pattern that is then rescaled by 2^112; infinities and NaNs (never present in weights the formats accept) come
/// out as large finite values. AVX2 + FMA; elsewhere a scalar loop with the same conversion. The summation order depends only on the length, so the same row against
/// the same input gives the same float on every call, dense or sparse.
/// </summary>
public static unsafe class HalfKernels
{
    private const float Rescale = 5.192296858534828e+33f; // 2^112: F16 exponent bias 15 -> F32 bias 127

    // (int)sign-extended half << 13: bit 31 = the sign, bits 13..27 = exponent and mantissa, bits 28..30 = sign copies (cleared).
    private const int Mask = unchecked((int)0x8FFFE000);

    private static bool Simd => Avx2.IsSupported && Fma.IsSupported;

    /// <summary>dot(w, x) for F16 <paramref name="w"/> and F32 <paramref name="x"/> of the same length.</summary>
    public static float Dot(ReadOnlySpan<Half> w, ReadOnlySpan<float> x)
    {
        if (w.Length != x.Length) throw new ArgumentException($"weights hold {w.Length} values, the input {x.Length}");
        int n = x.Length, i = 0;
        float sum = 0f;
        fixed (Half* wh = w)
        fixed (float* xp = x)
        {
            short* wp = (short*)wh;
            if (Simd && n >= 32)
            {
                var mask = Vector256.Create(Mask);
                var scale = Vector256.Create(Rescale);
                Vector256<float> a0 = Vector256<float>.Zero, a1 = Vector256<float>.Zero, a2 = Vector256<float>.Zero, a3 = Vector256<float>.Zero;
                for (; i <= n - 32; i += 32)
                {
                    a0 = Fma.MultiplyAdd(Convert(wp + i, mask, scale), Avx.LoadVector256(xp + i), a0);
                    a1 = Fma.MultiplyAdd(Convert(wp + i + 8, mask, scale), Avx.LoadVector256(xp + i + 8), a1);
                    a2 = Fma.MultiplyAdd(Convert(wp + i + 16, mask, scale), Avx.LoadVector256(xp + i + 16), a2);
                    a3 = Fma.MultiplyAdd(Convert(wp + i + 24, mask, scale), Avx.LoadVector256(xp + i + 24), a3);
                }
                for (; i <= n - 8; i += 8) a0 = Fma.MultiplyAdd(Convert(wp + i, mask, scale), Avx.LoadVector256(xp + i), a0);
                sum = Vector256.Sum((a0 + a1) + (a2 + a3));
            }
            for (; i < n; i++) sum = MathF.FusedMultiplyAdd(ToSingle(wp[i]), xp[i], sum);
        }
        return sum;
    }

    /// <summary>y += a * w for F16 <paramref name="w"/> and F32 <paramref name="y"/> of the same length.</summary>
    public static void Axpy(float a, ReadOnlySpan<Half> w, Span<float> y)
    {
        if (w.Length != y.Length) throw new ArgumentException($"weights hold {w.Length} values, the output {y.Length}");
        int n = y.Length, i = 0;
        fixed (Half* wh = w)
        fixed (float* yp = y)
        {
            short* wp = (short*)wh;
            if (Simd)
            {
                var mask = Vector256.Create(Mask);
                var scale = Vector256.Create(Rescale);
                var va = Vector256.Create(a);
                for (; i <= n - 16; i += 16)
                {
                    Avx.Store(yp + i, Fma.MultiplyAdd(Convert(wp + i, mask, scale), va, Avx.LoadVector256(yp + i)));
                    Avx.Store(yp + i + 8, Fma.MultiplyAdd(Convert(wp + i + 8, mask, scale), va, Avx.LoadVector256(yp + i + 8)));
                }
            }
            for (; i < n; i++) yp[i] = MathF.FusedMultiplyAdd(ToSingle(wp[i]), a, yp[i]);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Convert(short* p, Vector256<int> mask, Vector256<float> scale) =>
        Avx.Multiply(Avx2.And(Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(p), 13), mask).AsSingle(), scale);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float ToSingle(short h) => BitConverter.Int32BitsToSingle((h << 13) & Mask) * Rescale;
}
