using System.Runtime.CompilerServices;
using static FlashLm.Formats.Quant.BlockQuant;

namespace FlashLm.Formats.Quant;

/// <summary>
/// Re-quantization of F32 to Q4_K, Q5_K and Q6_K with the search of ggml's quantize_row_q4_K_ref / q5_K_ref /
/// q6_K_ref: per group the scale (and min) minimising a weighted squared error over a small grid of candidate
/// scales (make_qkx2_quants for Q4_K/Q5_K, make_qx_quants with x^2 weights for Q6_K), the group scales quantized to
/// 6 or 8 bits against one F16 super-block scale, then every value re-rounded with the stored scales. Same float
/// operations in the same order, without fused multiply-adds.
/// </summary>
internal static unsafe class KQuant
{
    private const float GroupMaxEps = 1e-15f;

    /// <summary>
    /// ggml's make_qkx2_quants: L[i] in [0, nmax] and returns the scale, with x ~ scale L - min (*theMin = min >= 0),
    /// trying iscale = (rmin + rdelta is + nmax) / (max - min) for is = 0..nstep and keeping the weighted least-squares
    /// fit with the smallest weighted error.
    /// </summary>
    private static float MakeQkx2Quants(int n, int nmax, float* x, float* weights, byte* L, out float theMin, byte* Laux,
        float rmin, float rdelta, int nstep)
    {
        float min = x[0], max = x[0];
        float sumW = weights[0];
        float sumX = sumW * x[0];
        for (int i = 1; i < n; i++)
        {
            if (x[i] < min) min = x[i];
            if (x[i] > max) max = x[i];
            float w = weights[i];
            sumW += w;
            sumX += w * x[i];
        }
        if (min > 0) min = 0;
        if (max == min)
        {
            for (int i = 0; i < n; i++) L[i] = 0;
            theMin = -min;
            return 0f;
        }
        float iscale = nmax / (max - min);
        float scale = 1 / iscale;
        float bestError = 0;
        for (int i = 0; i < n; i++)
        {
            int l = NearestInt(iscale * (x[i] - min));
            L[i] = (byte)Math.Max(0, Math.Min(nmax, l));
            float diff = scale * L[i] + min - x[i];
            diff = diff * diff;
            bestError += weights[i] * diff;
        }
        if (nstep < 1)
        {
            theMin = -min;
            return scale;
        }
        for (int step = 0; step <= nstep; step++)
        {
            iscale = (rmin + rdelta * step + nmax) / (max - min);
            float sumL = 0, sumL2 = 0, sumXL = 0;
            for (int i = 0; i < n; i++)
            {
                int l = NearestInt(iscale * (x[i] - min));
                l = Math.Max(0, Math.Min(nmax, l));
                Laux[i] = (byte)l;
                float w = weights[i];
                sumL += w * l;
                sumL2 += w * l * l;
                sumXL += w * l * x[i];
            }
            float D = sumW * sumL2 - sumL * sumL;
            if (D > 0)
            {
                float thisScale = (sumW * sumXL - sumX * sumL) / D;
                float thisMin = (sumL2 * sumX - sumL * sumXL) / D;
                if (thisMin > 0)
                {
                    thisMin = 0;
                    thisScale = sumXL / sumL2;
                }
                float curError = 0;
                for (int i = 0; i < n; i++)
                {
                    float diff = thisScale * Laux[i] + thisMin - x[i];
                    diff = diff * diff;
                    curError += weights[i] * diff;
                }
                if (curError < bestError)
                {
                    for (int i = 0; i < n; i++) L[i] = Laux[i];
                    bestError = curError;
                    scale = thisScale;
                    min = thisMin;
                }
            }
        }
        theMin = -min;
        return scale;
    }

    /// <summary>
    /// ggml's make_qx_quants with rmse_type 1 and no importance weights: L[i] = l + nmax with l in [-nmax, nmax - 1],
    /// x ~ scale l, weights x^2, trying iscale = -(nmax + 0.1 is) / max (max = the value of largest magnitude) for
    /// is = -9..9 and keeping the best weighted least-squares fit.
    /// </summary>
    private static float MakeQxQuants(int n, int nmax, float* x, sbyte* L)
    {
        float max = 0, amax = 0;
        for (int i = 0; i < n; i++)
        {
            float ax = MathF.Abs(x[i]);
            if (ax > amax) { amax = ax; max = x[i]; }
        }
        if (amax < GroupMaxEps)
        {
            for (int i = 0; i < n; i++) L[i] = 0;
            return 0f;
        }
        float iscale = -nmax / max;
        float sumlx = 0, suml2 = 0;
        for (int i = 0; i < n; i++)
        {
            int l = Clamp(NearestInt(iscale * x[i]), nmax);
            L[i] = (sbyte)(l + nmax);
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        float scale = suml2 != 0 ? sumlx / suml2 : 0f;
        float best = scale * sumlx;
        for (int k = -9; k <= 9; k++)
        {
            if (k == 0) continue;
            iscale = -(nmax + 0.1f * k) / max;
            sumlx = suml2 = 0;
            for (int i = 0; i < n; i++)
            {
                int l = Clamp(NearestInt(iscale * x[i]), nmax);
                float w = x[i] * x[i];
                sumlx += w * x[i] * l;
                suml2 += w * l * l;
            }
            if (suml2 > 0 && sumlx * sumlx > best * suml2)
            {
                for (int i = 0; i < n; i++) L[i] = (sbyte)(nmax + Clamp(NearestInt(iscale * x[i]), nmax));
                scale = sumlx / suml2;
                best = scale * sumlx;
            }
        }
        return scale;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Clamp(int l, int nmax) => Math.Max(-nmax, Math.Min(nmax - 1, l));

    /// <summary>Q4_K (nmax 15, candidates -1 + 0.1 k, k = 0..20) or Q5_K (nmax 31, -0.5 + 0.1 k, k = 0..15).</summary>
    public static void Q4_K(float* x, byte* y, int blocks) => Q45K(x, y, blocks, five: false);

    public static void Q5_K(float* x, byte* y, int blocks) => Q45K(x, y, blocks, five: true);

    private static void Q45K(float* x, byte* y, int blocks, bool five)
    {
        int nmax = five ? 31 : 15, bb = five ? 176 : 144;
        byte* L = stackalloc byte[256];
        byte* Laux = stackalloc byte[32];
        float* weights = stackalloc float[32];
        float* mins = stackalloc float[8];
        float* scales = stackalloc float[8];
        for (int b = 0; b < blocks; b++, x += 256, y += bb)
        {
            new Span<byte>(y, bb).Clear();
            float maxScale = 0, maxMin = 0;
            for (int j = 0; j < 8; j++)
            {
                float* xj = x + 32 * j;
                float sumX2 = 0;
                for (int l = 0; l < 32; l++) sumX2 += xj[l] * xj[l];
                float avX = MathF.Sqrt(sumX2 / 32);
                for (int l = 0; l < 32; l++) weights[l] = avX + MathF.Abs(xj[l]);
                scales[j] = five
                    ? MakeQkx2Quants(32, 31, xj, weights, L + 32 * j, out mins[j], Laux, -0.5f, 0.1f, 15)
                    : MakeQkx2Quants(32, 15, xj, weights, L + 32 * j, out mins[j], Laux, -1f, 0.1f, 20);
                if (scales[j] > maxScale) maxScale = scales[j];
                if (mins[j] > maxMin) maxMin = mins[j];
            }
            float invScale = maxScale > 0 ? 63f / maxScale : 0f;
            float invMin = maxMin > 0 ? 63f / maxMin : 0f;
            byte* sc = y + 4;
            for (int j = 0; j < 8; j++)
            {
                int ls = Math.Min(63, (int)(byte)NearestInt(invScale * scales[j]));
                int lm = Math.Min(63, (int)(byte)NearestInt(invMin * mins[j]));
                if (j < 4)
                {
                    sc[j] = (byte)ls;
                    sc[j + 4] = (byte)lm;
                }
                else
                {
                    sc[j + 4] = (byte)((ls & 0xF) | ((lm & 0xF) << 4));
                    sc[j - 4] |= (byte)((ls >> 4) << 6);
                    sc[j] |= (byte)((lm >> 4) << 6);
                }
            }
            WriteHalf(y, maxScale / 63f);
            WriteHalf(y + 2, maxMin / 63f);
            float dAll = BlockDequant.Half(y), dminAll = BlockDequant.Half(y + 2);
            for (int j = 0; j < 8; j++)
            {
                BlockDequant.ScaleMinK4(j, sc, out int s, out int m);
                float d = dAll * s;
                if (d == 0) continue;
                float dm = dminAll * m;
                for (int i = 0; i < 32; i++)
                {
                    int l = NearestInt((x[32 * j + i] + dm) / d);
                    L[32 * j + i] = (byte)Math.Max(0, Math.Min(nmax, l));
                }
            }
            if (!five)
            {
                byte* q = y + 16;
                for (int j = 0; j < 256; j += 64, q += 32)
                    for (int l = 0; l < 32; l++) q[l] = (byte)(L[j + l] | (L[j + l + 32] << 4));
            }
            else
            {
                byte* qh = y + 16, ql = y + 48;
                int m1 = 1, m2 = 2;
                for (int n = 0; n < 256; n += 64, ql += 32, m1 <<= 2, m2 <<= 2)
                    for (int j = 0; j < 32; j++)
                    {
                        int l1 = L[n + j], l2 = L[n + j + 32];
                        if (l1 > 15) { l1 -= 16; qh[j] |= (byte)m1; }
                        if (l2 > 15) { l2 -= 16; qh[j] |= (byte)m2; }
                        ql[j] = (byte)(l1 | (l2 << 4));
                    }
            }
        }
    }

    public static void Q6_K(float* x, byte* y, int blocks)
    {
        sbyte* L = stackalloc sbyte[256];
        float* scales = stackalloc float[16];
        for (int b = 0; b < blocks; b++, x += 256, y += 210)
        {
            new Span<byte>(y, 210).Clear();
            float maxScale = 0, maxAbsScale = 0;
            for (int g = 0; g < 16; g++)
            {
                float scale = MakeQxQuants(16, 32, x + 16 * g, L + 16 * g);
                scales[g] = scale;
                float abs = MathF.Abs(scale);
                if (abs > maxAbsScale) { maxAbsScale = abs; maxScale = scale; }
            }
            if (maxAbsScale < GroupMaxEps) continue; // all zero, d = 0
            float iscale = -128f / maxScale;
            WriteHalf(y + 208, 1 / iscale);
            sbyte* sc = (sbyte*)(y + 192);
            for (int g = 0; g < 16; g++) sc[g] = (sbyte)Math.Min(127, NearestInt(iscale * scales[g]));
            float dAll = BlockDequant.Half(y + 208);
            for (int g = 0; g < 16; g++)
            {
                float d = dAll * sc[g];
                if (d == 0) continue;
                for (int i = 0; i < 16; i++)
                {
                    int l = NearestInt(x[16 * g + i] / d);
                    L[16 * g + i] = (sbyte)(Math.Max(-32, Math.Min(31, l)) + 32);
                }
            }
            byte* ql = y, qh = y + 128;
            for (int j = 0; j < 256; j += 128, ql += 64, qh += 32)
                for (int l = 0; l < 32; l++)
                {
                    int q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF, q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
                    ql[l] = (byte)(q1 | (q3 << 4));
                    ql[l + 32] = (byte)(q2 | (q4 << 4));
                    qh[l] = (byte)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
                }
        }
    }
}
