using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using FlashLm.Formats;
using static FlashLm.Kernels.V256Dots;

namespace FlashLm.Kernels;

/// <summary>
/// AVX2 y += a * dequant(row) without a dequantized copy: each block's values are widened to floats in registers
/// with ggml's dequantization expression (same products, no fused multiply-add) and added as y + a * v, so the
/// result is bit-identical to the scalar path. Types without a kernel here return null (dequantize, then add).
/// </summary>
internal static unsafe class V256Axpy
{
    public static delegate*<float, byte*, float*, int, void> Kernel(DType weight) => weight switch
    {
        DType.Q8_0 => &Q8_0,
        DType.Q4_0 => &Q4_0,
        DType.Q4_K => &Q4_K,
        DType.Q5_K => &Q5_K,
        DType.Q6_K => &Q6_K,
        _ => null,
    };

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Add8(float* y, Vector256<float> a, Vector256<float> v) =>
        Avx.Store(y, Avx.Add(Avx.LoadVector256(y), Avx.Multiply(a, v)));

    /// <summary>Bytes 8k .. 8k + 7 of a 32-byte vector of signed values, as eight floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Signed8(Vector256<sbyte> v, int k)
    {
        var half = k < 2 ? v.GetLower() : v.GetUpper();
        if ((k & 1) != 0) half = Sse2.ShiftRightLogical128BitLane(half, 8);
        return Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(half));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Unsigned8(Vector256<byte> v, int k)
    {
        var half = k < 2 ? v.GetLower() : v.GetUpper();
        if ((k & 1) != 0) half = Sse2.ShiftRightLogical128BitLane(half, 8);
        return Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(half));
    }

    // x = q * d
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Q8_0(float a, byte* w, float* y, int n)
    {
        var va = Vector256.Create(a);
        for (int b = 0; b < n / 32; b++, w += 34, y += 32)
        {
            var d = Vector256.Create(H(w));
            for (int k = 0; k < 4; k++)
                Add8(y + 8 * k, va, Avx.Multiply(Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32((sbyte*)(w + 2 + 8 * k))), d));
        }
    }

    // x = (nibble - 8) * d
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Q4_0(float a, byte* w, float* y, int n)
    {
        var va = Vector256.Create(a);
        var m4 = Vector128.Create((byte)0x0F);
        var eight = Vector256.Create((sbyte)8);
        for (int b = 0; b < n / 32; b++, w += 18, y += 32)
        {
            var d = Vector256.Create(H(w));
            var v = Sse2.LoadVector128(w + 2);
            var q = Vector256.Create(v & m4, Sse2.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & m4).AsSByte() - eight;
            for (int k = 0; k < 4; k++) Add8(y + 8 * k, va, Avx.Multiply(Signed8(q, k), d));
        }
    }

    // x = (d sc) q - (dmin m), per 32-value group
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Q4_K(float a, byte* w, float* y, int n)
    {
        var va = Vector256.Create(a);
        var m4 = Vector256.Create((byte)0x0F);
        byte* sm = stackalloc byte[16];
        for (int b = 0; b < n / 256; b++, w += 144)
        {
            ScalesMinsK4(w + 4).Store(sm);
            float d = H(w), dmin = H(w + 2);
            byte* q = w + 16;
            for (int j = 0; j < 4; j++, q += 32, y += 64)
            {
                var v = Avx.LoadVector256(q);
                Group(y, va, v & m4, d * sm[2 * j], dmin * sm[8 + 2 * j]);
                Group(y + 32, va, Avx2.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & m4, d * sm[2 * j + 1], dmin * sm[8 + 2 * j + 1]);
            }
        }
    }

    // As Q4_K with the fifth bit of group g in bit g of qh[l].
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Q5_K(float a, byte* w, float* y, int n)
    {
        var va = Vector256.Create(a);
        var m4 = Vector256.Create((byte)0x0F);
        var bit4 = Vector256.Create((byte)0x10);
        byte* sm = stackalloc byte[16];
        for (int b = 0; b < n / 256; b++, w += 176)
        {
            ScalesMinsK4(w + 4).Store(sm);
            float d = H(w), dmin = H(w + 2);
            var qh = Avx.LoadVector256(w + 16);
            byte* q = w + 48;
            for (int j = 0; j < 4; j++, q += 32, y += 64)
            {
                var v = Avx.LoadVector256(q);
                var lo = (v & m4) | (Avx2.ShiftLeftLogical(qh.AsUInt16(), 4).AsByte() & bit4);
                var hi = (Avx2.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & m4) | (Avx2.ShiftLeftLogical(qh.AsUInt16(), 3).AsByte() & bit4);
                qh = Avx2.ShiftRightLogical(qh.AsUInt16(), 2).AsByte();
                Group(y, va, lo, d * sm[2 * j], dmin * sm[8 + 2 * j]);
                Group(y + 32, va, hi, d * sm[2 * j + 1], dmin * sm[8 + 2 * j + 1]);
            }
        }
    }

    /// <summary>y[0..32) += a * (d q - m) for 32 unsigned quants.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Group(float* y, Vector256<float> va, Vector256<byte> q, float d, float m)
    {
        var vd = Vector256.Create(d);
        var vm = Vector256.Create(m);
        for (int k = 0; k < 4; k++) Add8(y + 8 * k, va, Avx.Subtract(Avx.Multiply(vd, Unsigned8(q, k)), vm));
    }

    // x = (d sc_g) (q - 32), groups of 16.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Q6_K(float a, byte* w, float* y, int n)
    {
        var va = Vector256.Create(a);
        var m4 = Vector256.Create((byte)0x0F);
        var m2 = Vector256.Create((byte)0x30);
        var bias = Vector256.Create((sbyte)32);
        for (int b = 0; b < n / 256; b++, w += 210)
        {
            byte* ql = w, qh = w + 128;
            sbyte* sc = (sbyte*)(w + 192);
            float d = H(w + 208);
            for (int half = 0; half < 2; half++, ql += 64, qh += 32, sc += 8, y += 128)
            {
                var lo = Avx.LoadVector256(ql);
                var hi = Avx.LoadVector256(ql + 32);
                var h = Avx.LoadVector256(qh);
                var q1 = ((lo & m4) | (Avx2.ShiftLeftLogical(h.AsUInt16(), 4).AsByte() & m2)).AsSByte() - bias;
                var q2 = ((hi & m4) | (Avx2.ShiftLeftLogical(h.AsUInt16(), 2).AsByte() & m2)).AsSByte() - bias;
                var q3 = ((Avx2.ShiftRightLogical(lo.AsUInt16(), 4).AsByte() & m4) | (h & m2)).AsSByte() - bias;
                var q4 = ((Avx2.ShiftRightLogical(hi.AsUInt16(), 4).AsByte() & m4) | (Avx2.ShiftRightLogical(h.AsUInt16(), 2).AsByte() & m2)).AsSByte() - bias;
                Quarter(y, va, q1, d * sc[0], d * sc[1]);
                Quarter(y + 32, va, q2, d * sc[2], d * sc[3]);
                Quarter(y + 64, va, q3, d * sc[4], d * sc[5]);
                Quarter(y + 96, va, q4, d * sc[6], d * sc[7]);
            }
        }
    }

    /// <summary>y[0..32) += a * (s q): s0 for the first 16 values, s1 for the next 16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Quarter(float* y, Vector256<float> va, Vector256<sbyte> q, float s0, float s1)
    {
        var v0 = Vector256.Create(s0);
        var v1 = Vector256.Create(s1);
        Add8(y, va, Avx.Multiply(v0, Signed8(q, 0)));
        Add8(y + 8, va, Avx.Multiply(v0, Signed8(q, 1)));
        Add8(y + 16, va, Avx.Multiply(v1, Signed8(q, 2)));
        Add8(y + 24, va, Avx.Multiply(v1, Signed8(q, 3)));
    }
}
