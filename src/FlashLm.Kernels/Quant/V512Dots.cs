using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using FlashLm.Formats;
using static FlashLm.Kernels.V256Dots;

namespace FlashLm.Kernels;

/// <summary>
/// AVX-512 row kernels for Q2_K, Q3_K and Q6_K: the V256 formulation on 64-byte vectors (64 values of a K block per
/// instruction), each group's scale put in place by one vpermw. Every other type uses its V256 kernel: 512-bit
/// versions of Q8_0, Q4_0, Q4_K and Q5_K were measured slower than the V256 ones (matvec 5632 x 2048 on 2 cores, AMD
/// EPYC with AVX-512: Q8_0 60 against 72 GB/s, Q4_0 27 against 32, Q4_K 37 against 39 in cache and 18-27 against
/// 27-32 from DRAM) and were removed.
/// </summary>
internal static unsafe class V512Dots
{
    public static delegate*<byte*, byte*, int, float> Kernel(DType weight) => weight switch
    {
        DType.Q2_K => &Q2_K,
        DType.Q3_K => &Q3_K,
        DType.Q6_K => &Q6_K,
        _ => V256Dots.Kernel(weight),
    };

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<short> MulU8(Vector512<byte> u, Vector512<sbyte> y) => Avx512BW.MultiplyAddAdjacent(u, y);

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
        for (int b = 0; b < blocks; b++, w += 110, x += 292)
        {
            var sc16 = ScalesQ3K(w + 96);
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
