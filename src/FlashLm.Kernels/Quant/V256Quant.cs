using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using FlashLm.Formats;

namespace FlashLm.Kernels;

/// <summary>
/// AVX2 activation quantizers, byte-identical to ggml's quantize_row_q8_0_ref / q8_1_ref / q8_K_ref (and so to
/// Dequant.Quantize): the same single-precision products; C's roundf (half away from zero) rebuilt exactly from the
/// truncation and the exact fractional part; ggml's nearest_int (half to even for |v| &lt;= 2^22) is vroundps.
/// </summary>
internal static unsafe class V256Quant
{
    /// <summary>Quantizes x to <paramref name="act"/> (Q8_0, Q8_1 or Q8_K); false for any other type.</summary>
    public static bool Quantize(DType act, ReadOnlySpan<float> x, Span<byte> xq)
    {
        if (act is not (DType.Q8_0 or DType.Q8_1 or DType.Q8_K)) return false;
        long need = DTypeInfo.ByteCount(act, x.Length);
        if (xq.Length != need) throw new ArgumentException($"{act}: {x.Length} values take {need} bytes, got a buffer of {xq.Length}", nameof(xq));
        fixed (float* xp = x)
        fixed (byte* q = xq)
        {
            if (act == DType.Q8_K) Q8_K(xp, q, x.Length / 256);
            else Q8_01(xp, q, x.Length / 32, act == DType.Q8_1);
        }
        return true;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Abs(Vector256<float> v) => Avx.AndNot(Vector256.Create(-0f), v);

    /// <summary>roundf on integral-or-not floats: trunc(v) plus one step away from zero when |v - trunc(v)| &gt;= 0.5.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> RoundF(Vector256<float> v)
    {
        var t = Avx.RoundToZero(v);
        var up = Avx.CompareGreaterThanOrEqual(Abs(v - t), Vector256.Create(0.5f)) & Vector256.Create(1f);
        return Avx.ConvertToVector256Int32WithTruncation(t + (up | (v & Vector256.Create(-0f))));
    }

    /// <summary>Four vectors of eight int32 (each in int8 range) to 32 bytes in order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<sbyte> Pack(Vector256<int> a, Vector256<int> b, Vector256<int> c, Vector256<int> d)
    {
        var ab = Avx2.PackSignedSaturate(a, b);
        var cd = Avx2.PackSignedSaturate(c, d);
        var bytes = Avx2.PackSignedSaturate(ab, cd);
        return Avx2.PermuteVar8x32(bytes.AsInt32(), Vector256.Create(0, 4, 1, 5, 2, 6, 3, 7)).AsSByte();
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Q8_01(float* x, byte* y, int blocks, bool withSum)
    {
        int stride = withSum ? 36 : 34, qs = withSum ? 4 : 2;
        for (int b = 0; b < blocks; b++, x += 32, y += stride)
        {
            var v0 = Avx.LoadVector256(x);
            var v1 = Avx.LoadVector256(x + 8);
            var v2 = Avx.LoadVector256(x + 16);
            var v3 = Avx.LoadVector256(x + 24);
            float amax = Vector256.Max(Vector256.Max(Abs(v0), Abs(v1)), Vector256.Max(Abs(v2), Abs(v3))) is var m
                ? MathF.Max(MathF.Max(MathF.Max(m[0], m[1]), MathF.Max(m[2], m[3])), MathF.Max(MathF.Max(m[4], m[5]), MathF.Max(m[6], m[7])))
                : 0;
            float d = amax / 127f;
            var id = Vector256.Create(d != 0 ? 1f / d : 0f);
            var i0 = RoundF(v0 * id);
            var i1 = RoundF(v1 * id);
            var i2 = RoundF(v2 * id);
            var i3 = RoundF(v3 * id);
            Avx.Store((sbyte*)(y + qs), Pack(i0, i1, i2, i3));
            Unsafe.WriteUnaligned(y, BitConverter.HalfToUInt16Bits((Half)d));
            if (withSum)
            {
                int sum = Vector256.Sum((i0 + i1) + (i2 + i3));
                Unsafe.WriteUnaligned(y + 2, BitConverter.HalfToUInt16Bits((Half)(sum * d)));
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Q8_K(float* x, byte* y, int blocks)
    {
        for (int b = 0; b < blocks; b++, x += 256, y += 292)
        {
            var am = Vector256<float>.Zero;
            for (int k = 0; k < 256; k += 8) am = Vector256.Max(am, Abs(Avx.LoadVector256(x + k)));
            float amax = 0;
            for (int k = 0; k < 8; k++) amax = MathF.Max(amax, am[k]);
            if (amax == 0)
            {
                new Span<byte>(y, 292).Clear();
                continue;
            }
            // ggml keeps the first element of largest magnitude (strict >), with its sign
            var target = Vector256.Create(amax);
            float max = 0;
            for (int k = 0; k < 256; k += 8)
            {
                uint mask = Avx.CompareEqual(Abs(Avx.LoadVector256(x + k)), target).ExtractMostSignificantBits();
                if (mask != 0) { max = x[k + BitOperations.TrailingZeroCount(mask)]; break; }
            }
            float iscale = -127f / max;
            var vs = Vector256.Create(iscale);
            var cap = Vector256.Create(127);
            short* bsums = (short*)(y + 260);
            for (int k = 0; k < 256; k += 32)
            {
                var i0 = Avx2.Min(Avx.ConvertToVector256Int32(Avx.RoundToNearestInteger(vs * Avx.LoadVector256(x + k))), cap);
                var i1 = Avx2.Min(Avx.ConvertToVector256Int32(Avx.RoundToNearestInteger(vs * Avx.LoadVector256(x + k + 8))), cap);
                var i2 = Avx2.Min(Avx.ConvertToVector256Int32(Avx.RoundToNearestInteger(vs * Avx.LoadVector256(x + k + 16))), cap);
                var i3 = Avx2.Min(Avx.ConvertToVector256Int32(Avx.RoundToNearestInteger(vs * Avx.LoadVector256(x + k + 24))), cap);
                Avx.Store((sbyte*)(y + 4 + k), Pack(i0, i1, i2, i3));
                bsums[k / 16] = (short)Vector256.Sum(i0 + i1);
                bsums[k / 16 + 1] = (short)Vector256.Sum(i2 + i3);
            }
            Unsafe.WriteUnaligned(y, 1f / iscale);
        }
    }
}
