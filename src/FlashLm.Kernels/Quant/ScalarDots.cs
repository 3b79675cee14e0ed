using System.Runtime.CompilerServices;

namespace FlashLm.Kernels;

/// <summary>
/// The reference dot products: ggml's scalar vec_dot_&lt;weight&gt;_&lt;activation&gt; in integer form (an exact
/// integer sum per block, then one float multiply-add per block with the block's scales). Weight row w and
/// quantized activation x are <c>blocks</c> whole blocks each. Float order: blocks in sequence, as ggml's
/// generic code does for the 32-element types; for the K types ggml keeps eight partial float sums, so ours may
/// differ from it in the last bits.
/// </summary>
internal static unsafe class ScalarDots
{
    // Q4_0 x Q8_0: sum_b (sumi * dw) * dx, q = nibble - 8 (low nibbles are values 0..15, high nibbles 16..31).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float Q4_0(byte* w, byte* x, int blocks)
    {
        float sum = 0;
        for (int b = 0; b < blocks; b++, w += 18, x += 34)
        {
            byte* q = w + 2;
            sbyte* y = (sbyte*)(x + 2);
            int s0 = 0, s1 = 0;
            for (int j = 0; j < 16; j++)
            {
                s0 += ((q[j] & 0xF) - 8) * y[j];
                s1 += ((q[j] >> 4) - 8) * y[j + 16];
            }
            sum += (s0 + s1) * QuantBlocks.Half(w) * QuantBlocks.Half(x);
        }
        return sum;
    }

    // Q4_1 x Q8_1: sum_b (dw dx) sumi + mw sx.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float Q4_1(byte* w, byte* x, int blocks)
    {
        float sum = 0;
        for (int b = 0; b < blocks; b++, w += 20, x += 36)
        {
            byte* q = w + 4;
            sbyte* y = (sbyte*)(x + 4);
            int s0 = 0, s1 = 0;
            for (int j = 0; j < 16; j++)
            {
                s0 += (q[j] & 0xF) * y[j];
                s1 += (q[j] >> 4) * y[j + 16];
            }
            sum += QuantBlocks.Half(w) * QuantBlocks.Half(x) * (s0 + s1) + QuantBlocks.Half(w + 2) * QuantBlocks.Half(x + 2);
        }
        return sum;
    }

    // Q5_0 x Q8_0: q = (nibble | fifth bit << 4) - 16; bit j of qh is value j's fifth bit.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float Q5_0(byte* w, byte* x, int blocks)
    {
        float sum = 0;
        for (int b = 0; b < blocks; b++, w += 22, x += 34)
        {
            uint qh = *(uint*)(w + 2);
            byte* q = w + 6;
            sbyte* y = (sbyte*)(x + 2);
            int s0 = 0, s1 = 0;
            for (int j = 0; j < 16; j++)
            {
                int h0 = (int)(qh >> j) & 1, h1 = (int)(qh >> (j + 16)) & 1;
                s0 += (((q[j] & 0xF) | (h0 << 4)) - 16) * y[j];
                s1 += (((q[j] >> 4) | (h1 << 4)) - 16) * y[j + 16];
            }
            sum += QuantBlocks.Half(w) * QuantBlocks.Half(x) * (s0 + s1);
        }
        return sum;
    }

    // Q5_1 x Q8_1: q = nibble | fifth bit << 4; sum_b (dw dx) sumi + mw sx.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float Q5_1(byte* w, byte* x, int blocks)
    {
        float sum = 0;
        for (int b = 0; b < blocks; b++, w += 24, x += 36)
        {
            uint qh = *(uint*)(w + 4);
            byte* q = w + 8;
            sbyte* y = (sbyte*)(x + 4);
            int s0 = 0, s1 = 0;
            for (int j = 0; j < 16; j++)
            {
                int h0 = (int)(qh >> j) & 1, h1 = (int)(qh >> (j + 16)) & 1;
                s0 += ((q[j] & 0xF) | (h0 << 4)) * y[j];
                s1 += ((q[j] >> 4) | (h1 << 4)) * y[j + 16];
            }
            sum += QuantBlocks.Half(w) * QuantBlocks.Half(x) * (s0 + s1) + QuantBlocks.Half(w + 2) * QuantBlocks.Half(x + 2);
        }
        return sum;
    }

    // Q8_0 x Q8_0: sum_b sumi * (dw dx).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float Q8_0(byte* w, byte* x, int blocks)
    {
        float sum = 0;
        for (int b = 0; b < blocks; b++, w += 34, x += 34)
        {
            sbyte* q = (sbyte*)(w + 2), y = (sbyte*)(x + 2);
            int s = 0;
            for (int j = 0; j < 32; j++) s += q[j] * y[j];
            sum += s * (QuantBlocks.Half(w) * QuantBlocks.Half(x));
        }
        return sum;
    }

    // Q2_K x Q8_K: dx dw sum_g sc_g sum(q y) - dx dmin sum_g m_g bsum_g, sc/m the low/high nibbles of scales[g].
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float Q2_K(byte* w, byte* x, int blocks)
    {
        float sum = 0;
        for (int b = 0; b < blocks; b++, w += 84, x += 292)
        {
            byte* sc = w, q = w + 16;
            sbyte* y = (sbyte*)(x + 4);
            short* bsums = (short*)(x + 260);
            int mins = 0;
            for (int g = 0; g < 16; g++) mins += bsums[g] * (sc[g] >> 4);
            int isum = 0, k = 0;
            for (int half = 0; half < 2; half++, q += 32)
                for (int shift = 0; shift < 8; shift += 2)
                    for (int part = 0; part < 32; part += 16, k++, y += 16)
                    {
                        int s = 0;
                        for (int l = 0; l < 16; l++) s += y[l] * ((q[part + l] >> shift) & 3);
                        isum += (sc[k] & 0xF) * s;
                    }
            float dx = QuantBlocks.Single(x);
            sum += dx * QuantBlocks.Half(w + 80) * isum - dx * QuantBlocks.Half(w + 82) * mins;
        }
        return sum;
    }

    // Q3_K x Q8_K: dw dx sum_g (scale_g) sum(q y), q = 2 low bits - (high bit clear ? 4 : 0).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float Q3_K(byte* w, byte* x, int blocks)
    {
        float sum = 0;
        for (int b = 0; b < blocks; b++, w += 110, x += 292)
        {
            byte* hm = w, q = w + 32, sc = w + 96;
            sbyte* y = (sbyte*)(x + 4);
            int isum = 0, k = 0, bit = 0;
            for (int half = 0; half < 2; half++, q += 32)
                for (int shift = 0; shift < 8; shift += 2, bit++)
                    for (int part = 0; part < 32; part += 16, k++, y += 16)
                    {
                        int s = 0;
                        for (int l = 0; l < 16; l++)
                            s += y[l] * (((q[part + l] >> shift) & 3) - (((hm[part + l] >> bit) & 1) != 0 ? 0 : 4));
                        isum += QuantBlocks.ScaleQ3K(k, sc) * s;
                    }
            sum += QuantBlocks.Half(w + 108) * QuantBlocks.Single(x) * isum;
        }
        return sum;
    }

    // Q4_K x Q8_K: dw dx sum_g sc_g sum(q y) - dmin dx sum_g m_g (bsum_2g + bsum_2g+1).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float Q4_K(byte* w, byte* x, int blocks)
    {
        byte* scales = stackalloc byte[8];
        byte* mins = stackalloc byte[8];
        float sum = 0;
        for (int b = 0; b < blocks; b++, w += 144, x += 292)
        {
            QuantBlocks.ScalesMinsK4(w + 4, scales, mins);
            byte* q = w + 16;
            sbyte* y = (sbyte*)(x + 4);
            short* bsums = (short*)(x + 260);
            int m = 0;
            for (int g = 0; g < 16; g++) m += bsums[g] * mins[g / 2];
            int isum = 0;
            for (int g = 0; g < 8; g += 2, q += 32, y += 64)
            {
                int s0 = 0, s1 = 0;
                for (int l = 0; l < 32; l++)
                {
                    s0 += (q[l] & 0xF) * y[l];
                    s1 += (q[l] >> 4) * y[l + 32];
                }
                isum += scales[g] * s0 + scales[g + 1] * s1;
            }
            float dx = QuantBlocks.Single(x);
            sum += QuantBlocks.Half(w) * dx * isum;
            sum -= QuantBlocks.Half(w + 2) * dx * m;
        }
        return sum;
    }

    // Q5_K x Q8_K: as Q4_K with a fifth bit: value 32 g + l has bit g of qh[l].
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float Q5_K(byte* w, byte* x, int blocks)
    {
        byte* scales = stackalloc byte[8];
        byte* mins = stackalloc byte[8];
        float sum = 0;
        for (int b = 0; b < blocks; b++, w += 176, x += 292)
        {
            QuantBlocks.ScalesMinsK4(w + 4, scales, mins);
            byte* qh = w + 16, q = w + 48;
            sbyte* y = (sbyte*)(x + 4);
            short* bsums = (short*)(x + 260);
            int m = 0;
            for (int g = 0; g < 16; g++) m += bsums[g] * mins[g / 2];
            int isum = 0;
            for (int g = 0; g < 8; g += 2, q += 32, y += 64)
            {
                int s0 = 0, s1 = 0;
                for (int l = 0; l < 32; l++)
                {
                    s0 += ((q[l] & 0xF) | (((qh[l] >> g) & 1) << 4)) * y[l];
                    s1 += ((q[l] >> 4) | (((qh[l] >> (g + 1)) & 1) << 4)) * y[l + 32];
                }
                isum += scales[g] * s0 + scales[g + 1] * s1;
            }
            float dx = QuantBlocks.Single(x);
            sum += QuantBlocks.Half(w) * dx * isum;
            sum -= QuantBlocks.Half(w + 2) * dx * m;
        }
        return sum;
    }

    // Q6_K x Q8_K: dw dx sum_g sc_g sum((q - 32) y), q = 4 low bits from ql and 2 high bits from qh.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float Q6_K(byte* w, byte* x, int blocks)
    {
        float sum = 0;
        for (int b = 0; b < blocks; b++, w += 210, x += 292)
        {
            byte* ql = w, qh = w + 128;
            sbyte* sc = (sbyte*)(w + 192);
            sbyte* y = (sbyte*)(x + 4);
            int isum = 0;
            for (int n = 0; n < 2; n++, ql += 64, qh += 32, sc += 8, y += 128)
                for (int half = 0; half < 2; half++)
                {
                    int s1 = 0, s2 = 0, s3 = 0, s4 = 0;
                    for (int l = half * 16; l < half * 16 + 16; l++)
                    {
                        s1 += (((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32) * y[l];
                        s2 += (((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32) * y[l + 32];
                        s3 += (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32) * y[l + 64];
                        s4 += (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32) * y[l + 96];
                    }
                    isum += sc[half] * s1 + sc[half + 2] * s2 + sc[half + 4] * s3 + sc[half + 6] * s4;
                }
            sum += QuantBlocks.Half(w + 208) * QuantBlocks.Single(x) * isum;
        }
        return sum;
    }
}
