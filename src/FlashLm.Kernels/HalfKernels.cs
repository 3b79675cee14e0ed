using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace FlashLm.Kernels;

/// <summary>
/// F16 weights against F32 activations without a widened copy: each block of halves is sign-extended to 32 bits
/// straight from memory and converted in registers with a shift and a mask (.NET exposes no F16C conversion): the
/// half's exponent and mantissa bits land in an F32 bit pattern worth the half times 2^-112. <see cref="Dot(ReadOnlySpan{Half}, ReadOnlySpan{float})"/>
/// rescales that by 2^112 (a multiply per block); <see cref="DotScaled"/> takes x already multiplied by 2^112
/// (<see cref="ScaleInput"/>, once per product over many rows) and saves the multiply. Either way every product
/// w * x is the same real number, so both give the same float, bit for bit; the conversion is exact for every finite
/// half (normal and subnormal); infinities and NaNs (never present in weights the formats accept) come out as large
/// finite values. Paths by <see cref="QuantKernels.Path"/> (what the CPU has, or FLASHLM_SIMD): V512 (AVX-512, 4 x 16
/// lanes), V256 (AVX2 + FMA, 4 x 8 lanes), else a scalar loop with the same conversion. The summation order depends
/// only on the length and the path, so the same row against the same input gives the same float on every call, dense
/// or sparse.
/// </summary>
public static unsafe class HalfKernels
{
    private const float Rescale = 5.192296858534828e+33f; // 2^112: F16 exponent bias 15 -> F32 bias 127

    /// <summary>Largest |x| <see cref="ScaleInput"/> accepts: 2^15 * 2^112 stays finite, and so does every product with a half.</summary>
    private const float ScaleLimit = 32768f;

    // (int)sign-extended half << 13: bit 31 = the sign, bits 13..27 = exponent and mantissa, bits 28..30 = sign copies (cleared).
    private const int Mask = unchecked((int)0x8FFFE000);

    /// <summary>dot(w, x) for F16 <paramref name="w"/> and F32 <paramref name="x"/> of the same length, on the process's path.</summary>
    public static float Dot(ReadOnlySpan<Half> w, ReadOnlySpan<float> x) => Dot(QuantKernels.Path, w, x);

    /// <summary>dot(w, x) on <paramref name="path"/> (tests compare every path with the scalar one).</summary>
    public static float Dot(SimdPath path, ReadOnlySpan<Half> w, ReadOnlySpan<float> x)
    {
        if (w.Length != x.Length) throw new ArgumentException($"weights hold {w.Length} values, the input {x.Length}");
        fixed (Half* wh = w)
        fixed (float* xp = x)
            return Core(path, (short*)wh, xp, x.Length, scaled: false);
    }

    /// <summary>
    /// Writes x * 2^112 into <paramref name="scaled"/> for <see cref="DotScaled"/>; false (and nothing to use) when some
    /// |x| is 2^15 or more (or not finite), where the scaled input could overflow: use <see cref="Dot(ReadOnlySpan{Half}, ReadOnlySpan{float})"/>.
    /// </summary>
    public static bool ScaleInput(ReadOnlySpan<float> x, Span<float> scaled)
    {
        if (scaled.Length < x.Length) throw new ArgumentException($"the scaled input holds {scaled.Length} values, the input {x.Length}");
        if (x.Length == 0) return true;
        float max = System.Numerics.Tensors.TensorPrimitives.MaxMagnitude(x);
        if (!(MathF.Abs(max) < ScaleLimit)) return false;
        System.Numerics.Tensors.TensorPrimitives.Multiply(x, Rescale, scaled);
        return true;
    }

    /// <summary>dot(w, x) given <paramref name="xScaled"/> = x * 2^112 from <see cref="ScaleInput"/>: the same float as <see cref="Dot(SimdPath, ReadOnlySpan{Half}, ReadOnlySpan{float})"/> on x.</summary>
    public static float DotScaled(SimdPath path, ReadOnlySpan<Half> w, ReadOnlySpan<float> xScaled)
    {
        if (w.Length != xScaled.Length) throw new ArgumentException($"weights hold {w.Length} values, the input {xScaled.Length}");
        fixed (Half* wh = w)
        fixed (float* xp = xScaled)
            return Core(path, (short*)wh, xp, xScaled.Length, scaled: true);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Core(SimdPath path, short* wp, float* xp, int n, bool scaled)
    {
        if (path == SimdPath.V512 && n >= 64) return scaled ? Dot512(wp, xp, n, true) : Dot512(wp, xp, n, false);
        if (path != SimdPath.Scalar && n >= 32 && Fma.IsSupported) return scaled ? Dot256(wp, xp, n, true) : Dot256(wp, xp, n, false);
        return Tail(wp, xp, 0, n, 0f, scaled);
    }

    private static float Tail(short* wp, float* xp, int i, int n, float sum, bool scaled)
    {
        if (scaled)
            for (; i < n; i++) sum = MathF.FusedMultiplyAdd(BitConverter.Int32BitsToSingle((wp[i] << 13) & Mask), xp[i], sum);
        else
            for (; i < n; i++) sum = MathF.FusedMultiplyAdd(ToSingle(wp[i]), xp[i], sum);
        return sum;
    }

    private static float Dot512(short* wp, float* xp, int n, bool scaled)
    {
        var mask = Vector512.Create(Mask);
        var scale = Vector512.Create(scaled ? 1f : Rescale);
        Vector512<float> a0 = Vector512<float>.Zero, a1 = Vector512<float>.Zero, a2 = Vector512<float>.Zero, a3 = Vector512<float>.Zero;
        int i = 0;
        if (scaled)
        {
            for (; i <= n - 64; i += 64)
            {
                a0 = Avx512F.FusedMultiplyAdd(Bits(wp + i, mask), Avx512F.LoadVector512(xp + i), a0);
                a1 = Avx512F.FusedMultiplyAdd(Bits(wp + i + 16, mask), Avx512F.LoadVector512(xp + i + 16), a1);
                a2 = Avx512F.FusedMultiplyAdd(Bits(wp + i + 32, mask), Avx512F.LoadVector512(xp + i + 32), a2);
                a3 = Avx512F.FusedMultiplyAdd(Bits(wp + i + 48, mask), Avx512F.LoadVector512(xp + i + 48), a3);
            }
            for (; i <= n - 16; i += 16) a0 = Avx512F.FusedMultiplyAdd(Bits(wp + i, mask), Avx512F.LoadVector512(xp + i), a0);
        }
        else
        {
            for (; i <= n - 64; i += 64)
            {
                a0 = Avx512F.FusedMultiplyAdd(Avx512F.Multiply(Bits(wp + i, mask), scale), Avx512F.LoadVector512(xp + i), a0);
                a1 = Avx512F.FusedMultiplyAdd(Avx512F.Multiply(Bits(wp + i + 16, mask), scale), Avx512F.LoadVector512(xp + i + 16), a1);
                a2 = Avx512F.FusedMultiplyAdd(Avx512F.Multiply(Bits(wp + i + 32, mask), scale), Avx512F.LoadVector512(xp + i + 32), a2);
                a3 = Avx512F.FusedMultiplyAdd(Avx512F.Multiply(Bits(wp + i + 48, mask), scale), Avx512F.LoadVector512(xp + i + 48), a3);
            }
            for (; i <= n - 16; i += 16) a0 = Avx512F.FusedMultiplyAdd(Avx512F.Multiply(Bits(wp + i, mask), scale), Avx512F.LoadVector512(xp + i), a0);
        }
        return Tail(wp, xp, i, n, Vector512.Sum((a0 + a1) + (a2 + a3)), scaled);
    }

    private static float Dot256(short* wp, float* xp, int n, bool scaled)
    {
        var mask = Vector256.Create(Mask);
        var scale = Vector256.Create(Rescale);
        Vector256<float> a0 = Vector256<float>.Zero, a1 = Vector256<float>.Zero, a2 = Vector256<float>.Zero, a3 = Vector256<float>.Zero;
        int i = 0;
        if (scaled)
        {
            for (; i <= n - 32; i += 32)
            {
                a0 = Fma.MultiplyAdd(Bits(wp + i, mask), Avx.LoadVector256(xp + i), a0);
                a1 = Fma.MultiplyAdd(Bits(wp + i + 8, mask), Avx.LoadVector256(xp + i + 8), a1);
                a2 = Fma.MultiplyAdd(Bits(wp + i + 16, mask), Avx.LoadVector256(xp + i + 16), a2);
                a3 = Fma.MultiplyAdd(Bits(wp + i + 24, mask), Avx.LoadVector256(xp + i + 24), a3);
            }
            for (; i <= n - 8; i += 8) a0 = Fma.MultiplyAdd(Bits(wp + i, mask), Avx.LoadVector256(xp + i), a0);
        }
        else
        {
            for (; i <= n - 32; i += 32)
            {
                a0 = Fma.MultiplyAdd(Convert(wp + i, mask, scale), Avx.LoadVector256(xp + i), a0);
                a1 = Fma.MultiplyAdd(Convert(wp + i + 8, mask, scale), Avx.LoadVector256(xp + i + 8), a1);
                a2 = Fma.MultiplyAdd(Convert(wp + i + 16, mask, scale), Avx.LoadVector256(xp + i + 16), a2);
                a3 = Fma.MultiplyAdd(Convert(wp + i + 24, mask, scale), Avx.LoadVector256(xp + i + 24), a3);
            }
            for (; i <= n - 8; i += 8) a0 = Fma.MultiplyAdd(Convert(wp + i, mask, scale), Avx.LoadVector256(xp + i), a0);
        }
        return Tail(wp, xp, i, n, Vector256.Sum((a0 + a1) + (a2 + a3)), scaled);
    }

    /// <summary>y += a * w for F16 <paramref name="w"/> and F32 <paramref name="y"/> of the same length, on the process's path.</summary>
    public static void Axpy(float a, ReadOnlySpan<Half> w, Span<float> y) => Axpy(QuantKernels.Path, a, w, y);

    /// <summary>y += a * w on <paramref name="path"/>: one fused multiply-add per element, so every path gives the same floats.</summary>
    public static void Axpy(SimdPath path, float a, ReadOnlySpan<Half> w, Span<float> y)
    {
        if (w.Length != y.Length) throw new ArgumentException($"weights hold {w.Length} values, the output {y.Length}");
        int n = y.Length, i = 0;
        fixed (Half* wh = w)
        fixed (float* yp = y)
        {
            short* wp = (short*)wh;
            // bits * (a 2^112) is the same real number as w * a, so the same float comes out, unless a 2^112 overflows.
            if (path == SimdPath.V512 && float.IsFinite(a * Rescale))
            {
                var mask = Vector512.Create(Mask);
                var va = Vector512.Create(a * Rescale);
                for (; i <= n - 32; i += 32)
                {
                    Avx512F.Store(yp + i, Avx512F.FusedMultiplyAdd(Bits(wp + i, mask), va, Avx512F.LoadVector512(yp + i)));
                    Avx512F.Store(yp + i + 16, Avx512F.FusedMultiplyAdd(Bits(wp + i + 16, mask), va, Avx512F.LoadVector512(yp + i + 16)));
                }
            }
            else if (path != SimdPath.Scalar && Fma.IsSupported)
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
    private static Vector256<float> Bits(short* p, Vector256<int> mask) => Avx2.And(Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(p), 13), mask).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Bits(short* p, Vector512<int> mask) =>
        Avx512F.And(Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512Int32(Avx.LoadVector256(p)), 13), mask).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float ToSingle(short h) => BitConverter.Int32BitsToSingle((h << 13) & Mask) * Rescale;
}
