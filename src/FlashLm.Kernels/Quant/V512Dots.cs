using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using FlashLm.Formats;
using static FlashLm.Kernels.V256Dots;

namespace FlashLm.Kernels;

/// <summary>
/// AVX-512 row kernels: the V256 formulation on 64-byte vectors (two 32-value blocks, or 64 values of a K block,
/// per instruction). AVX-512 has no vpsignb, so signed weights use |w| (vpabsb) and y negated under the mask
/// w &lt; 0. Types without a kernel here use the V256 one.
/// </summary>
internal static unsafe class V512Dots
{
    public static delegate*<byte*, byte*, int, float> Kernel(DType weight) => weight switch
    {
        DType.Q8_0 => &Q8_0,
        DType.Q4_0 => &Q4_0,
        DType.Q2_K => &Q2_K,
        DType.Q3_K => &Q3_K,
        DType.Q4_K => &Q4_K,
        DType.Q5_K => &Q5_K,
        DType.Q6_K => &Q6_K,
        _ => V256Dots.Kernel(weight),
    };

    private static Vector512<short> Ones16
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => Vector512.Create((short)1);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<short> MulU8(Vector512<byte> u, Vector512<sbyte> y) => Avx512BW.MultiplyAddAdjacent(u, y);

    /// <summary>Signed x times signed y, groups of four summed: sixteen int32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> DotI8(Vector512<sbyte> x, Vector512<sbyte> y)
    {
        var sy = Vector512.ConditionalSelect(Vector512.LessThan(x, Vector512<sbyte>.Zero), Vector512<sbyte>.Zero - y, y);
        return Avx512BW.MultiplyAddAdjacent(MulU8(Avx512BW.Abs(x), sy), Ones16);
    }

    /// <summary>Two blocks' scale products, eight lanes each.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Scales(float d0, float d1) => Vector512.Create(Vector256.Create(d0), Vector256.Create(d1));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<sbyte> Load2(byte* a, byte* b) => Vector512.Create(Avx.LoadVector256((sbyte*)a), Avx.LoadVector256((sbyte*)b));

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q8_0(byte* w, byte* x, int n)
    {
        int blocks = n / 32, b = 0;
        var acc = Vector512<float>.Zero;
        for (; b + 1 < blocks; b += 2, w += 68, x += 68)
        {
            var s = DotI8(Load2(w + 2, w + 36), Load2(x + 2, x + 36));
            acc = Avx512F.FusedMultiplyAdd(Scales(H(w) * H(x), H(w + 34) * H(x + 34)), Avx512F.ConvertToVector512Single(s), acc);
        }
        float sum = Vector512.Sum(acc);
        if (b < blocks) sum += V256Tail(DType.Q8_0, w, x);
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q4_0(byte* w, byte* x, int n)
    {
        int blocks = n / 32, b = 0;
        var acc = Vector512<float>.Zero;
        var m4 = Vector128.Create((byte)0x0F);
        var eight = Vector512.Create((byte)8);
        for (; b + 1 < blocks; b += 2, w += 36, x += 68)
        {
            var v0 = Sse2.LoadVector128(w + 2);
            var v1 = Sse2.LoadVector128(w + 20);
            var q = Vector512.Create(
                Vector256.Create(v0 & m4, Sse2.ShiftRightLogical(v0.AsUInt16(), 4).AsByte() & m4),
                Vector256.Create(v1 & m4, Sse2.ShiftRightLogical(v1.AsUInt16(), 4).AsByte() & m4));
            // (q - 8) y = q y - 8 y: both pair sums fit in int16 (at most 3810 and 2032)
            var y = Load2(x + 2, x + 36);
            var s = Avx512BW.MultiplyAddAdjacent(MulU8(q, y) - MulU8(eight, y), Ones16);
            acc = Avx512F.FusedMultiplyAdd(Scales(H(w) * H(x), H(w + 18) * H(x + 34)), Avx512F.ConvertToVector512Single(s), acc);
        }
        float sum = Vector512.Sum(acc);
        if (b < blocks) sum += V256Tail(DType.Q4_0, w, x);
        return sum;
    }

    /// <summary>The last odd block through the V256 kernel.</summary>
    private static float V256Tail(DType t, byte* w, byte* x) => V256Dots.Kernel(t)(w, x, 32);

    /// <summary>Sixteen copies of a then sixteen of b, as int16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<short> Pair(int a, int b) => Vector512.Create(Vector256.Create((short)a), Vector256.Create((short)b));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> MinTerms(Vector128<byte> scalesMins, byte* x)
    {
        var pairs = Avx2.MultiplyAddAdjacent(Avx.LoadVector256((short*)(x + 260)), Vector256.Create((short)1));
        var mins = Avx2.ConvertToVector256Int32(Sse2.ShiftRightLogical128BitLane(scalesMins, 8));
        return Avx2.MultiplyLow(pairs, mins);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q4_K(byte* w, byte* x, int n)
    {
        int blocks = n / 256;
        var acc = Vector512<float>.Zero;
        var accMin = Vector256<float>.Zero;
        var m4 = Vector256.Create((byte)0x0F);
        byte* sm = stackalloc byte[16];
        for (int b = 0; b < blocks; b++, w += 144, x += 292)
        {
            var scalesMins = ScalesMinsK4(w + 4);
            scalesMins.Store(sm);
            byte* q = w + 16;
            sbyte* y = (sbyte*)(x + 4);
            var sumi = Vector512<int>.Zero;
            for (int j = 0; j < 4; j++, q += 32, y += 64)
            {
                var v = Avx.LoadVector256(q);
                var u = Vector512.Create(v & m4, Avx2.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & m4);
                sumi += Avx512BW.MultiplyAddAdjacent(MulU8(u, Avx512F.LoadVector512(y)), Pair(sm[2 * j], sm[2 * j + 1]));
            }
            float dx = *(float*)x;
            acc = Avx512F.FusedMultiplyAdd(Vector512.Create(H(w) * dx), Avx512F.ConvertToVector512Single(sumi), acc);
            accMin = Fma.MultiplyAdd(Vector256.Create(H(w + 2) * dx), Avx.ConvertToVector256Single(MinTerms(scalesMins, x)), accMin);
        }
        return Vector512.Sum(acc) - Vector256.Sum(accMin);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q5_K(byte* w, byte* x, int n)
    {
        int blocks = n / 256;
        var acc = Vector512<float>.Zero;
        var accMin = Vector256<float>.Zero;
        var m4 = Vector256.Create((byte)0x0F);
        var bit4 = Vector512.Create((byte)0x10);
        byte* sm = stackalloc byte[16];
        for (int b = 0; b < blocks; b++, w += 176, x += 292)
        {
            var scalesMins = ScalesMinsK4(w + 4);
            scalesMins.Store(sm);
            var qh = Avx.LoadVector256(w + 16);
            byte* q = w + 48;
            sbyte* y = (sbyte*)(x + 4);
            var sumi = Vector512<int>.Zero;
            for (int j = 0; j < 4; j++, q += 32, y += 64)
            {
                var v = Avx.LoadVector256(q);
                // fifth bits: bit 2j of qh[l] for the low half, bit 2j + 1 for the high half, moved to bit 4
                var h = Vector512.Create(Avx2.ShiftLeftLogical(qh.AsUInt16(), 4).AsByte(), Avx2.ShiftLeftLogical(qh.AsUInt16(), 3).AsByte()) & bit4;
                qh = Avx2.ShiftRightLogical(qh.AsUInt16(), 2).AsByte();
                var u = Vector512.Create(v & m4, Avx2.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & m4) | h;
                sumi += Avx512BW.MultiplyAddAdjacent(MulU8(u, Avx512F.LoadVector512(y)), Pair(sm[2 * j], sm[2 * j + 1]));
            }
            float dx = *(float*)x;
            acc = Avx512F.FusedMultiplyAdd(Vector512.Create(H(w) * dx), Avx512F.ConvertToVector512Single(sumi), acc);
            accMin = Fma.MultiplyAdd(Vector256.Create(H(w + 2) * dx), Avx.ConvertToVector256Single(MinTerms(scalesMins, x)), accMin);
        }
        return Vector512.Sum(acc) - Vector256.Sum(accMin);
    }

    // Q6_K: per 128 values, [q1 | q2] = low nibbles of ql[0..64) with bits 0-1 / 2-3 of qh, [q3 | q4] = high nibbles with bits 4-5 / 6-7.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q6_K(byte* w, byte* x, int n)
    {
        int blocks = n / 256;
        var acc = Vector512<float>.Zero;
        var m4 = Vector512.Create((byte)0x0F);
        var m2 = Vector512.Create((byte)0x30);
        // scale index (0..15) of each int16 lane of the maddubs output, for the four 64-value quarters of a block
        var idx0 = Vector512.Create(Vector256.Create(Vector128.Create((short)0), Vector128.Create((short)1)), Vector256.Create(Vector128.Create((short)2), Vector128.Create((short)3)));
        var four = Vector512.Create((short)4);
        for (int b = 0; b < blocks; b++, w += 210, x += 292)
        {
            byte* ql = w, qh = w + 128;
            sbyte* y = (sbyte*)(x + 4);
            var scales16 = Avx2.ConvertToVector256Int16(Sse2.LoadVector128((sbyte*)(w + 192)));
            var bias = Avx2.MultiplyAddAdjacent(Avx.LoadVector256((short*)(x + 260)), scales16);
            var s512 = Vector512.Create(scales16, scales16);
            var idx = idx0;
            var sumi = Vector512<int>.Zero;
            for (int half = 0; half < 2; half++, ql += 64, qh += 32, y += 128)
            {
                var a = Avx512F.LoadVector512(ql);
                var h0 = Avx.LoadVector256(qh);
                var h = Vector512.Create(h0, Avx2.ShiftRightLogical(h0.AsUInt16(), 2).AsByte());
                var q12 = (a & m4) | (Avx512BW.ShiftLeftLogical(h.AsUInt16(), 4).AsByte() & m2);
                var q34 = (Avx512BW.ShiftRightLogical(a.AsUInt16(), 4).AsByte() & m4) | (h & m2);
                sumi += Avx512BW.MultiplyAddAdjacent(MulU8(q12, Avx512F.LoadVector512(y)), Avx512BW.PermuteVar32x16(s512, idx));
                idx += four;
                sumi += Avx512BW.MultiplyAddAdjacent(MulU8(q34, Avx512F.LoadVector512(y + 64)), Avx512BW.PermuteVar32x16(s512, idx));
                idx += four;
            }
            float d = H(w + 208) * *(float*)x;
            acc = Avx512F.FusedMultiplyAdd(Vector512.Create(d), Avx512F.ConvertToVector512Single(sumi), acc);
            acc = Avx512F.FusedMultiplyAdd(Vector512.Create(-32f * d), Vector512.Create(Avx.ConvertToVector256Single(bias), Vector256<float>.Zero), acc);
        }
        return Vector512.Sum(acc);
    }

    /// <summary>The int16 lane -> group-of-16 index of a 64-value quarter: four groups, eight lanes each (add 4 per quarter).</summary>
    private static Vector512<short> QuarterGroups =>
        Vector512.Create(Vector256.Create(Vector128.Create((short)0), Vector128.Create((short)1)), Vector256.Create(Vector128.Create((short)2), Vector128.Create((short)3)));

    // Q2_K: per 128 values, 32 bytes of qs hold four 2-bit planes of 32 values; planes 0-1 and 2-3 make one 64-byte vector each.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q2_K(byte* w, byte* x, int n)
    {
        int blocks = n / 256;
        var acc = Vector512<float>.Zero;
        var accMin = Vector256<float>.Zero;
        var m2 = Vector256.Create((byte)3);
        var four = Vector512.Create((short)4);
        for (int b = 0; b < blocks; b++, w += 84, x += 292)
        {
            var raw = Sse2.LoadVector128(w);
            var mins = Avx2.ConvertToVector256Int16(Sse2.ShiftRightLogical(raw.AsUInt16(), 4).AsByte() & Vector128.Create((byte)0x0F));
            var minTerms = Avx2.MultiplyAddAdjacent(Avx.LoadVector256((short*)(x + 260)), mins);
            var sc16 = Avx2.ConvertToVector256Int16(raw & Vector128.Create((byte)0x0F));
            var s512 = Vector512.Create(sc16, sc16);
            var idx = QuarterGroups;
            sbyte* y = (sbyte*)(x + 4);
            var sumi = Vector512<int>.Zero;
            for (int h = 0; h < 2; h++, y += 128)
            {
                var v = Avx.LoadVector256(w + 16 + 32 * h);
                var v2 = Avx2.ShiftRightLogical(v.AsUInt16(), 2).AsByte();
                var v4 = Avx2.ShiftRightLogical(v.AsUInt16(), 4).AsByte();
                var v6 = Avx2.ShiftRightLogical(v.AsUInt16(), 6).AsByte();
                var u01 = Vector512.Create(v & m2, v2 & m2);
                var u23 = Vector512.Create(v4 & m2, v6 & m2);
                sumi += Avx512BW.MultiplyAddAdjacent(MulU8(u01, Avx512F.LoadVector512(y)), Avx512BW.PermuteVar32x16(s512, idx));
                idx += four;
                sumi += Avx512BW.MultiplyAddAdjacent(MulU8(u23, Avx512F.LoadVector512(y + 64)), Avx512BW.PermuteVar32x16(s512, idx));
                idx += four;
            }
            float dx = *(float*)x;
            acc = Avx512F.FusedMultiplyAdd(Vector512.Create(H(w + 80) * dx), Avx512F.ConvertToVector512Single(sumi), acc);
            accMin = Fma.MultiplyAdd(Vector256.Create(H(w + 82) * dx), Avx.ConvertToVector256Single(minTerms), accMin);
        }
        return Vector512.Sum(acc) - Vector256.Sum(accMin);
    }

    // Q3_K: u = 2 low bits | high bit << 2 (value u - 4), the -4 taken out with the bsums as in the V256 kernel.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q3_K(byte* w, byte* x, int n)
    {
        int blocks = n / 256;
        var acc = Vector512<float>.Zero;
        var m2 = Vector256.Create((byte)3);
        var bit2 = Vector256.Create((byte)4);
        var four = Vector512.Create((short)4);
        short* scales = stackalloc short[16];
        for (int b = 0; b < blocks; b++, w += 110, x += 292)
        {
            for (int g = 0; g < 16; g++) scales[g] = (short)QuantBlocks.ScaleQ3K(g, w + 96);
            var sc16 = Avx.LoadVector256(scales);
            var bias = Avx2.MultiplyAddAdjacent(Avx.LoadVector256((short*)(x + 260)), sc16);
            var s512 = Vector512.Create(sc16, sc16);
            var idx = QuarterGroups;
            var hm = Avx.LoadVector256(w);
            sbyte* y = (sbyte*)(x + 4);
            var sumi = Vector512<int>.Zero;
            for (int h = 0; h < 2; h++, y += 128)
            {
                var v = Avx.LoadVector256(w + 32 + 32 * h);
                // plane s of this half: bits 2s..2s+1 of qs, bit 4h + s of hmask (hm already shifted by 4h)
                var u0 = (v & m2) | (Avx2.ShiftLeftLogical(hm.AsUInt16(), 2).AsByte() & bit2);
                var u1 = (Avx2.ShiftRightLogical(v.AsUInt16(), 2).AsByte() & m2) | (Avx2.ShiftLeftLogical(hm.AsUInt16(), 1).AsByte() & bit2);
                var u2 = (Avx2.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & m2) | (hm & bit2);
                var u3 = (Avx2.ShiftRightLogical(v.AsUInt16(), 6).AsByte() & m2) | (Avx2.ShiftRightLogical(hm.AsUInt16(), 1).AsByte() & bit2);
                hm = Avx2.ShiftRightLogical(hm.AsUInt16(), 4).AsByte();
                sumi += Avx512BW.MultiplyAddAdjacent(MulU8(Vector512.Create(u0, u1), Avx512F.LoadVector512(y)), Avx512BW.PermuteVar32x16(s512, idx));
                idx += four;
                sumi += Avx512BW.MultiplyAddAdjacent(MulU8(Vector512.Create(u2, u3), Avx512F.LoadVector512(y + 64)), Avx512BW.PermuteVar32x16(s512, idx));
                idx += four;
            }
            sumi -= Vector512.Create(Avx2.ShiftLeftLogical(bias, 2), Vector256<int>.Zero);
            acc = Avx512F.FusedMultiplyAdd(Vector512.Create(H(w + 108) * *(float*)x), Avx512F.ConvertToVector512Single(sumi), acc);
        }
        return Vector512.Sum(acc);
    }
}
