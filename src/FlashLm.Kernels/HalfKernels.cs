using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace FlashLm.Kernels;

/// <summary>
/// F16 weights against F32 activations without a widened copy: each block of halves is converted in registers
/// and fed straight into a fused multiply-add, so an F16 row costs one pass over its bytes. The conversion is
/// exact for every finite half (normal and subnormal): the half's exponent and mantissa bits are moved into an
/// F32 bit pattern and rescaled by 2^112; infinities and NaNs (never present in weights the formats accept)
/// come out as large finite values. The summation order depends only on the length, so the same row against
/// the same input gives the same float on every call, dense or sparse.
/// </summary>
public static class HalfKernels
{
    private const float Rescale = 5.192296858534828e+33f; // 2^112: F16 exponent bias 15 -> F32 bias 127

    /// <summary>dot(w, x) for F16 <paramref name="w"/> and F32 <paramref name="x"/> of the same length.</summary>
    public static float Dot(ReadOnlySpan<Half> w, ReadOnlySpan<float> x)
    {
        if (w.Length != x.Length) throw new ArgumentException($"weights hold {w.Length} values, the input {x.Length}");
        int n = x.Length, i = 0;
        ref ushort wr = ref Unsafe.As<Half, ushort>(ref MemoryMarshal.GetReference(w));
        ref float xr = ref MemoryMarshal.GetReference(x);
        float sum = 0f;
        if (Vector512.IsHardwareAccelerated && n >= 32)
        {
            Vector512<float> a0 = Vector512<float>.Zero, a1 = Vector512<float>.Zero, a2 = Vector512<float>.Zero, a3 = Vector512<float>.Zero;
            for (; i <= n - 64; i += 64)
            {
                var (l0, h0) = Vector512.Widen(Vector512.LoadUnsafe(ref wr, (nuint)i));
                var (l1, h1) = Vector512.Widen(Vector512.LoadUnsafe(ref wr, (nuint)(i + 32)));
                a0 = Vector512.FusedMultiplyAdd(ToSingle(l0), Vector512.LoadUnsafe(ref xr, (nuint)i), a0);
                a1 = Vector512.FusedMultiplyAdd(ToSingle(h0), Vector512.LoadUnsafe(ref xr, (nuint)(i + 16)), a1);
                a2 = Vector512.FusedMultiplyAdd(ToSingle(l1), Vector512.LoadUnsafe(ref xr, (nuint)(i + 32)), a2);
                a3 = Vector512.FusedMultiplyAdd(ToSingle(h1), Vector512.LoadUnsafe(ref xr, (nuint)(i + 48)), a3);
            }
            for (; i <= n - 32; i += 32)
            {
                var (l0, h0) = Vector512.Widen(Vector512.LoadUnsafe(ref wr, (nuint)i));
                a0 = Vector512.FusedMultiplyAdd(ToSingle(l0), Vector512.LoadUnsafe(ref xr, (nuint)i), a0);
                a1 = Vector512.FusedMultiplyAdd(ToSingle(h0), Vector512.LoadUnsafe(ref xr, (nuint)(i + 16)), a1);
            }
            sum = Vector512.Sum((a0 + a1) + (a2 + a3));
        }
        else if (Vector256.IsHardwareAccelerated && n >= 16)
        {
            Vector256<float> a0 = Vector256<float>.Zero, a1 = Vector256<float>.Zero;
            for (; i <= n - 16; i += 16)
            {
                var (l0, h0) = Vector256.Widen(Vector256.LoadUnsafe(ref wr, (nuint)i));
                a0 = Vector256.FusedMultiplyAdd(ToSingle(l0), Vector256.LoadUnsafe(ref xr, (nuint)i), a0);
                a1 = Vector256.FusedMultiplyAdd(ToSingle(h0), Vector256.LoadUnsafe(ref xr, (nuint)(i + 8)), a1);
            }
            sum = Vector256.Sum(a0 + a1);
        }
        for (; i < n; i++) sum = MathF.FusedMultiplyAdd(ToSingle(Unsafe.Add(ref wr, i)), Unsafe.Add(ref xr, i), sum);
        return sum;
    }

    /// <summary>y += a * w for F16 <paramref name="w"/> and F32 <paramref name="y"/> of the same length.</summary>
    public static void Axpy(float a, ReadOnlySpan<Half> w, Span<float> y)
    {
        if (w.Length != y.Length) throw new ArgumentException($"weights hold {w.Length} values, the output {y.Length}");
        int n = y.Length, i = 0;
        ref ushort wr = ref Unsafe.As<Half, ushort>(ref MemoryMarshal.GetReference(w));
        ref float yr = ref MemoryMarshal.GetReference(y);
        if (Vector512.IsHardwareAccelerated)
        {
            var va = Vector512.Create(a);
            for (; i <= n - 32; i += 32)
            {
                var (l0, h0) = Vector512.Widen(Vector512.LoadUnsafe(ref wr, (nuint)i));
                Vector512.FusedMultiplyAdd(ToSingle(l0), va, Vector512.LoadUnsafe(ref yr, (nuint)i)).StoreUnsafe(ref yr, (nuint)i);
                Vector512.FusedMultiplyAdd(ToSingle(h0), va, Vector512.LoadUnsafe(ref yr, (nuint)(i + 16))).StoreUnsafe(ref yr, (nuint)(i + 16));
            }
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            var va = Vector256.Create(a);
            for (; i <= n - 16; i += 16)
            {
                var (l0, h0) = Vector256.Widen(Vector256.LoadUnsafe(ref wr, (nuint)i));
                Vector256.FusedMultiplyAdd(ToSingle(l0), va, Vector256.LoadUnsafe(ref yr, (nuint)i)).StoreUnsafe(ref yr, (nuint)i);
                Vector256.FusedMultiplyAdd(ToSingle(h0), va, Vector256.LoadUnsafe(ref yr, (nuint)(i + 8))).StoreUnsafe(ref yr, (nuint)(i + 8));
            }
        }
        for (; i < n; i++) Unsafe.Add(ref yr, i) = MathF.FusedMultiplyAdd(ToSingle(Unsafe.Add(ref wr, i)), a, Unsafe.Add(ref yr, i));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> ToSingle(Vector512<uint> h) =>
        (((h & Vector512.Create(0x8000u)) << 16) | ((h & Vector512.Create(0x7fffu)) << 13)).AsSingle() * Vector512.Create(Rescale);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> ToSingle(Vector256<uint> h) =>
        (((h & Vector256.Create(0x8000u)) << 16) | ((h & Vector256.Create(0x7fffu)) << 13)).AsSingle() * Vector256.Create(Rescale);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float ToSingle(ushort h) => BitConverter.UInt32BitsToSingle(((h & 0x8000u) << 16) | ((h & 0x7fffu) << 13)) * Rescale;
}
