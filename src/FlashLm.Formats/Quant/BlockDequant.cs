using System.Runtime.CompilerServices;

namespace FlashLm.Formats.Quant;

/// <summary>
/// ggml's dequantize_row_* for each block format, written from the block layouts in ggml-common.h: the same
/// products in the same order (no fused multiply-add), so the floats are bit-identical to ggml built without
/// FP contraction. Each method reads <c>blocks</c> whole blocks from <c>src</c> and writes blocks * BlockElements
/// floats to <c>dst</c>; callers have checked the lengths.
/// </summary>
internal static unsafe class BlockDequant
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float Half(byte* p) => (float)BitConverter.UInt16BitsToHalf(Unsafe.ReadUnaligned<ushort>(p));

    /// <summary>
    /// The 6-bit scale and min of group j (0..7) from the 12 packed bytes of a Q4_K/Q5_K block (ggml's
    /// get_scale_min_k4): groups 0-3 in the low 6 bits of bytes j and j+4; groups 4-7 in the nibbles of byte j+4 with
    /// their top two bits in the top bits of bytes j-4 (scale) and j (min).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void ScaleMinK4(int j, byte* q, out int scale, out int min)
    {
        if (j < 4)
        {
            scale = q[j] & 63;
            min = q[j + 4] & 63;
        }
        else
        {
            scale = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
            min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        }
    }

    /// <summary>The sixteen 6-bit Q3_K scales (still biased by 32) from the 12 packed bytes: low nibbles in bytes
    /// 0-7 (groups 0-7 low, 8-15 high nibble), top two bits in bytes 8-11 (group j at bits 2 (j / 4) of byte 8 + j % 4).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int ScaleQ3K(int j, byte* s)
    {
        int low = j < 8 ? s[j] & 0xF : s[j - 8] >> 4;
        int high = (s[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
        return (low | (high << 4)) - 32;
    }

    public static void Q8_0(byte* s, float* y, int blocks)
    {
        for (int b = 0; b < blocks; b++, s += 34, y += 32)
        {
            float d = Half(s);
            sbyte* q = (sbyte*)(s + 2);
            for (int j = 0; j < 32; j++) y[j] = q[j] * d;
        }
    }

    public static void Q8_1(byte* s, float* y, int blocks)
    {
        for (int b = 0; b < blocks; b++, s += 36, y += 32)
        {
            float d = Half(s);
            sbyte* q = (sbyte*)(s + 4);
            for (int j = 0; j < 32; j++) y[j] = q[j] * d;
        }
    }

    public static void Q4_0(byte* s, float* y, int blocks)
    {
        for (int b = 0; b < blocks; b++, s += 18, y += 32)
        {
            float d = Half(s);
            byte* q = s + 2;
            for (int j = 0; j < 16; j++)
            {
                y[j] = ((q[j] & 0xF) - 8) * d;
                y[j + 16] = ((q[j] >> 4) - 8) * d;
            }
        }
    }

    public static void Q4_1(byte* s, float* y, int blocks)
    {
        for (int b = 0; b < blocks; b++, s += 20, y += 32)
        {
            float d = Half(s), m = Half(s + 2);
            byte* q = s + 4;
            for (int j = 0; j < 16; j++)
            {
                y[j] = (q[j] & 0xF) * d + m;
                y[j + 16] = (q[j] >> 4) * d + m;
            }
        }
    }

    public static void Q5_0(byte* s, float* y, int blocks)
    {
        for (int b = 0; b < blocks; b++, s += 22, y += 32)
        {
            float d = Half(s);
            uint qh = Unsafe.ReadUnaligned<uint>(s + 2);
            byte* q = s + 6;
            for (int j = 0; j < 16; j++)
            {
                int h0 = (int)((qh >> j) << 4) & 0x10, h1 = (int)(qh >> (j + 12)) & 0x10;
                y[j] = (((q[j] & 0xF) | h0) - 16) * d;
                y[j + 16] = (((q[j] >> 4) | h1) - 16) * d;
            }
        }
    }

    public static void Q5_1(byte* s, float* y, int blocks)
    {
        for (int b = 0; b < blocks; b++, s += 24, y += 32)
        {
            float d = Half(s), m = Half(s + 2);
            uint qh = Unsafe.ReadUnaligned<uint>(s + 4);
            byte* q = s + 8;
            for (int j = 0; j < 16; j++)
            {
                int h0 = (int)((qh >> j) << 4) & 0x10, h1 = (int)(qh >> (j + 12)) & 0x10;
                y[j] = ((q[j] & 0xF) | h0) * d + m;
                y[j + 16] = ((q[j] >> 4) | h1) * d + m;
            }
        }
    }

    // Q2_K block: scales[16] (low nibble scale, high nibble min), qs[64], d, dmin.
    public static void Q2_K(byte* s, float* y, int blocks)
    {
        for (int b = 0; b < blocks; b++, s += 84)
        {
            byte* sc = s, q = s + 16;
            float d = Half(s + 80), min = Half(s + 82);
            int g = 0;
            for (int half = 0; half < 2; half++, q += 32)
                for (int shift = 0; shift < 8; shift += 2)
                    for (int part = 0; part < 32; part += 16, g++)
                    {
                        float dl = d * (sc[g] & 0xF), ml = min * (sc[g] >> 4);
                        for (int l = 0; l < 16; l++) *y++ = dl * ((q[part + l] >> shift) & 3) - ml;
                    }
        }
    }

    // Q3_K block: hmask[32], qs[64], scales[12], d.
    public static void Q3_K(byte* s, float* y, int blocks)
    {
        for (int b = 0; b < blocks; b++, s += 110)
        {
            byte* hm = s, q = s + 32, sc = s + 96;
            float d = Half(s + 108);
            int g = 0, bit = 0;
            for (int half = 0; half < 2; half++, q += 32)
                for (int shift = 0; shift < 8; shift += 2, bit++)
                    for (int part = 0; part < 32; part += 16, g++)
                    {
                        float dl = d * ScaleQ3K(g, sc);
                        for (int l = 0; l < 16; l++)
                            *y++ = dl * (((q[part + l] >> shift) & 3) - ((hm[part + l] >> bit & 1) != 0 ? 0 : 4));
                    }
        }
    }

    // Q4_K block: d, dmin, scales[12], qs[128]; 64 values per 32 bytes of qs (low nibbles, then high nibbles).
    public static void Q4_K(byte* s, float* y, int blocks)
    {
        for (int b = 0; b < blocks; b++, s += 144)
        {
            float d = Half(s), min = Half(s + 2);
            byte* sc = s + 4, q = s + 16;
            for (int g = 0; g < 8; g += 2, q += 32)
            {
                ScaleMinK4(g, sc, out int s1, out int m1);
                ScaleMinK4(g + 1, sc, out int s2, out int m2);
                float d1 = d * s1, dm1 = min * m1, d2 = d * s2, dm2 = min * m2;
                for (int l = 0; l < 32; l++) *y++ = d1 * (q[l] & 0xF) - dm1;
                for (int l = 0; l < 32; l++) *y++ = d2 * (q[l] >> 4) - dm2;
            }
        }
    }

    // Q5_K block: d, dmin, scales[12], qh[32], qs[128]; the fifth bit of value 32 g + l is bit g of qh[l].
    public static void Q5_K(byte* s, float* y, int blocks)
    {
        for (int b = 0; b < blocks; b++, s += 176)
        {
            float d = Half(s), min = Half(s + 2);
            byte* sc = s + 4, qh = s + 16, q = s + 48;
            for (int g = 0; g < 8; g += 2, q += 32)
            {
                ScaleMinK4(g, sc, out int s1, out int m1);
                ScaleMinK4(g + 1, sc, out int s2, out int m2);
                float d1 = d * s1, dm1 = min * m1, d2 = d * s2, dm2 = min * m2;
                for (int l = 0; l < 32; l++) *y++ = d1 * ((q[l] & 0xF) + (((qh[l] >> g) & 1) << 4)) - dm1;
                for (int l = 0; l < 32; l++) *y++ = d2 * ((q[l] >> 4) + (((qh[l] >> (g + 1)) & 1) << 4)) - dm2;
            }
        }
    }

    // Q6_K block: ql[128], qh[64], scales[16] (int8), d. Per 128 values: ql[0..64), qh[0..32).
    public static void Q6_K(byte* s, float* y, int blocks)
    {
        for (int b = 0; b < blocks; b++, s += 210)
        {
            byte* ql = s, qh = s + 128;
            sbyte* sc = (sbyte*)(s + 192);
            float d = Half(s + 208);
            for (int n = 0; n < 2; n++, ql += 64, qh += 32, sc += 8, y += 128)
                for (int l = 0; l < 32; l++)
                {
                    int k = l / 16;
                    int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                    int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    y[l] = d * sc[k] * q1;
                    y[l + 32] = d * sc[k + 2] * q2;
                    y[l + 64] = d * sc[k + 4] * q3;
                    y[l + 96] = d * sc[k + 6] * q4;
                }
        }
    }

    // Q8_K block: d (F32), qs[256], bsums[16] (int16).
    public static void Q8_K(byte* s, float* y, int blocks)
    {
        for (int b = 0; b < blocks; b++, s += 292, y += 256)
        {
            float d = Unsafe.ReadUnaligned<float>(s);
            sbyte* q = (sbyte*)(s + 4);
            for (int j = 0; j < 256; j++) y[j] = d * q[j];
        }
    }
}
