using System.Runtime.CompilerServices;

namespace FlashLm.Formats.Quant;

/// <summary>
/// ggml's reference quantizers for the activation formats (quantize_row_q8_0_ref, q8_1_ref, q8_K_ref), byte for
/// byte: the same scale, the same rounding (C's roundf for Q8_0/Q8_1, ggml's nearest_int for Q8_K), the same
/// stored sums. Each method quantizes <c>blocks</c> whole blocks; callers have checked the lengths.
/// </summary>
internal static unsafe class BlockQuant
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void WriteHalf(byte* p, float f) => Unsafe.WriteUnaligned(p, BitConverter.HalfToUInt16Bits((Half)f));

    /// <summary>C's roundf: to nearest, ties away from zero.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float RoundF(float f) => MathF.Round(f, MidpointRounding.AwayFromZero);

    /// <summary>
    /// ggml's nearest_int: round to nearest, ties to even, by adding 1.5 * 2^23 and reading the mantissa bits
    /// (valid for |f| &lt;= 2^22, as in ggml; larger or NaN inputs give the same garbage ggml gets).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int NearestInt(float f)
    {
        float v = f + 12582912f;
        return (BitConverter.SingleToInt32Bits(v) & 0x007FFFFF) - 0x00400000;
    }

    /// <summary>max |x[i]| with ggml's MAX(a, b) = a &gt; b ? a : b.</summary>
    private static float AbsMax(float* x, int n)
    {
        float amax = 0;
        for (int j = 0; j < n; j++)
        {
            float a = MathF.Abs(x[j]);
            amax = amax > a ? amax : a;
        }
        return amax;
    }

    // d = max|x| / 127 (F16), q = roundf(x / d) computed as x * (1 / d) with the unrounded d.
    public static void Q8_0(float* x, byte* y, int blocks)
    {
        for (int b = 0; b < blocks; b++, x += 32, y += 34)
        {
            float d = AbsMax(x, 32) / 127f;
            float id = d != 0 ? 1f / d : 0f;
            WriteHalf(y, d);
            sbyte* q = (sbyte*)(y + 2);
            for (int j = 0; j < 32; j++) q[j] = (sbyte)RoundF(x[j] * id);
        }
    }

    // As Q8_0, plus s = F16(sum(q) * d) with the unrounded d.
    public static void Q8_1(float* x, byte* y, int blocks)
    {
        for (int b = 0; b < blocks; b++, x += 32, y += 36)
        {
            float d = AbsMax(x, 32) / 127f;
            float id = d != 0 ? 1f / d : 0f;
            sbyte* q = (sbyte*)(y + 4);
            int sum = 0;
            for (int j = 0; j < 32; j++)
            {
                q[j] = (sbyte)RoundF(x[j] * id);
                sum += q[j];
            }
            WriteHalf(y, d);
            WriteHalf(y + 2, sum * d);
        }
    }

    // iscale = -127 / x[argmax |x|] (the signed value), q = min(127, nearest_int(iscale x)), d = 1 / iscale (F32),
    // bsums[g] = sum of q over group g of 16. An all-zero block stores d = 0 and zeros.
    public static void Q8_K(float* x, byte* y, int blocks)
    {
        for (int b = 0; b < blocks; b++, x += 256, y += 292)
        {
            float max = 0, amax = 0;
            for (int j = 0; j < 256; j++)
            {
                float a = MathF.Abs(x[j]);
                if (a > amax) { amax = a; max = x[j]; }
            }
            sbyte* q = (sbyte*)(y + 4);
            short* bsums = (short*)(y + 260);
            if (amax == 0)
            {
                new Span<byte>(y, 292).Clear();
                continue;
            }
            float iscale = -127f / max;
            for (int j = 0; j < 256; j++) q[j] = (sbyte)Math.Min(127, NearestInt(iscale * x[j]));
            for (int g = 0; g < 16; g++)
            {
                int sum = 0;
                for (int i = 0; i < 16; i++) sum += q[g * 16 + i];
                Unsafe.WriteUnaligned(bsums + g, (short)sum);
            }
            Unsafe.WriteUnaligned(y, 1f / iscale);
        }
    }
}
