using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using FlashLm.Formats;

namespace FlashLm.Kernels;

/// <summary>
/// AVX2 row kernels: the integer dot of a block is pmaddubsw (unsigned weight bytes times signed activation bytes,
/// adjacent pairs summed to int16) and pmaddwd (pairs of int16 times a scale or one, summed to int32), so 32 weights
/// cost a handful of instructions; each block's int32 lanes are converted once and multiply-added with the block's
/// scale product into eight float lanes. Signed weights (Q8_0, Q4_0, Q5_0) use the sign trick: |w| times y with w's
/// sign. No product saturates: |w| &lt;= 128 and |y| &lt;= 127 (ggml's activation quantizers never produce -128), so
/// a pair sums to at most 32512. Types without a kernel here return null (the scalar kernel runs).
/// </summary>
internal static unsafe class V256Dots
{
    public static delegate*<byte*, byte*, int, float> Kernel(DType weight) => weight switch
    {
        DType.F32 => &QuantKernels.DotF32Wide,
        DType.F16 => &QuantKernels.DotF16Wide,
        DType.BF16 => &DotBf16,
        DType.Q8_0 => &Q8_0,
        DType.Q4_0 => &Q4_0,
        DType.Q4_1 => &Q4_1,
        DType.Q5_0 => &Q5_0,
        DType.Q5_1 => &Q5_1,
        DType.Q2_K => &Q2_K,
        DType.Q3_K => &Q3_K,
        DType.Q4_K => &Q4_K,
        DType.Q5_K => &Q5_K,
        DType.Q6_K => &Q6_K,
        _ => null,
    };

    /// <summary>F16 bits to F32 by table (exact; .NET has no F16C conversion).</summary>
    private static readonly float[] HalfTable = BuildHalfTable();

    /// <summary>
    /// Runs the class constructor (builds <see cref="HalfTable"/>). Must be called before any kernel here is first run: a
    /// kernel is compiled fully optimized on its first call (AggressiveOptimization, no tiering), and one compiled while
    /// the table is not yet built keeps a class-initialisation check and an extra load on every scale it reads; measured,
    /// that halved a Q4_0 matvec (15 against 31 GB/s, AMD EPYC, V256).
    /// </summary>
    internal static void EnsureInitialized() => _ = HalfTable.Length;

    private static float[] BuildHalfTable()
    {
        var t = new float[65536];
        for (int i = 0; i < t.Length; i++) t[i] = (float)BitConverter.UInt16BitsToHalf((ushort)i);
        return t;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float H(byte* p) => Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(HalfTable), (nint)Unsafe.ReadUnaligned<ushort>(p));

    private static Vector256<short> Ones16
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => Vector256.Create((short)1);
    }

    /// <summary>Signed bytes x times signed bytes y, groups of four summed: eight int32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> DotI8(Vector256<sbyte> x, Vector256<sbyte> y) => DotU8(Avx2.Sign(x, x).AsByte(), Avx2.Sign(y, x));

    /// <summary>Unsigned bytes u times signed bytes y, groups of four summed: eight int32 (one vpdpbusd with AVX-VNNI).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> DotU8(Vector256<byte> u, Vector256<sbyte> y) =>
        AvxVnni.IsSupported
            ? AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, u, y)
            : Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u, y), Ones16);

    /// <summary>(q - 8) y for unsigned nibbles q, groups of four summed, as q y - 8 y (no sign juggling).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> DotOffset8(Vector256<byte> q, Vector256<sbyte> y, Vector256<byte> eight) =>
        AvxVnni.IsSupported
            ? AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, q, y) - AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, eight, y)
            : Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q, y) - Avx2.MultiplyAddAdjacent(eight, y), Ones16);

    /// <summary>The 32 nibbles of 16 bytes: low nibbles (elements 0..15) in the lower half, high nibbles (16..31) in the upper.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Nibbles16(byte* q)
    {
        var v = Sse2.LoadVector128(q);
        var m = Vector128.Create((byte)0x0F);
        return Vector256.Create(v & m, Sse2.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & m);
    }

    /// <summary>Bit i of the 32-bit word as byte i: 0xFF where set, 0 where clear.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> BitsToBytes(uint bits)
    {
        var spread = Avx2.Shuffle(Vector256.Create(bits).AsByte(),
            Vector256.Create((byte)0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
        var mask = Vector256.Create(0x8040201008040201UL).AsByte();
        return Avx2.CompareEqual(spread & mask, mask);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float DotBf16(byte* w, byte* x, int n)
    {
        ushort* wp = (ushort*)w;
        float* xp = (float*)x;
        var a0 = Vector256<float>.Zero;
        var a1 = Vector256<float>.Zero;
        int i = 0;
        for (; i <= n - 16; i += 16)
        {
            var h = Avx.LoadVector256(wp + i);
            var lo = Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(h.GetLower()), 16).AsSingle();
            var hi = Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(h.GetUpper()), 16).AsSingle();
            a0 = Fma.MultiplyAdd(lo, Avx.LoadVector256(xp + i), a0);
            a1 = Fma.MultiplyAdd(hi, Avx.LoadVector256(xp + i + 8), a1);
        }
        float s = Vector256.Sum(a0 + a1);
        for (; i < n; i++) s += BitConverter.Int32BitsToSingle(wp[i] << 16) * xp[i];
        return s;
    }

    // Q8_0 x Q8_0: 34-byte blocks on both sides.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q8_0(byte* w, byte* x, int n)
    {
        int blocks = n / 32, b = 0;
        var a0 = Vector256<float>.Zero;
        var a1 = Vector256<float>.Zero;
        for (; b + 1 < blocks; b += 2, w += 68, x += 68)
        {
            var s0 = DotI8(Avx.LoadVector256((sbyte*)(w + 2)), Avx.LoadVector256((sbyte*)(x + 2)));
            var s1 = DotI8(Avx.LoadVector256((sbyte*)(w + 36)), Avx.LoadVector256((sbyte*)(x + 36)));
            a0 = Fma.MultiplyAdd(Vector256.Create(H(w) * H(x)), Avx.ConvertToVector256Single(s0), a0);
            a1 = Fma.MultiplyAdd(Vector256.Create(H(w + 34) * H(x + 34)), Avx.ConvertToVector256Single(s1), a1);
        }
        if (b < blocks)
        {
            var s0 = DotI8(Avx.LoadVector256((sbyte*)(w + 2)), Avx.LoadVector256((sbyte*)(x + 2)));
            a0 = Fma.MultiplyAdd(Vector256.Create(H(w) * H(x)), Avx.ConvertToVector256Single(s0), a0);
        }
        return Vector256.Sum(a0 + a1);
    }

    // Q4_0 x Q8_0: nibble - 8 as signed bytes.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q4_0(byte* w, byte* x, int n)
    {
        int blocks = n / 32, b = 0;
        var eight = Vector256.Create((byte)8);
        var a0 = Vector256<float>.Zero;
        var a1 = Vector256<float>.Zero;
        for (; b + 1 < blocks; b += 2, w += 36, x += 68)
        {
            var s0 = DotOffset8(Nibbles16(w + 2), Avx.LoadVector256((sbyte*)(x + 2)), eight);
            var s1 = DotOffset8(Nibbles16(w + 20), Avx.LoadVector256((sbyte*)(x + 36)), eight);
            a0 = Fma.MultiplyAdd(Vector256.Create(H(w) * H(x)), Avx.ConvertToVector256Single(s0), a0);
            a1 = Fma.MultiplyAdd(Vector256.Create(H(w + 18) * H(x + 34)), Avx.ConvertToVector256Single(s1), a1);
        }
        if (b < blocks)
        {
            var s0 = DotOffset8(Nibbles16(w + 2), Avx.LoadVector256((sbyte*)(x + 2)), eight);
            a0 = Fma.MultiplyAdd(Vector256.Create(H(w) * H(x)), Avx.ConvertToVector256Single(s0), a0);
        }
        return Vector256.Sum(a0 + a1);
    }

    // Q4_1 x Q8_1: unsigned nibbles; plus m * s per block.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q4_1(byte* w, byte* x, int n)
    {
        int blocks = n / 32;
        var acc = Vector256<float>.Zero;
        float mins = 0;
        for (int b = 0; b < blocks; b++, w += 20, x += 36)
        {
            var s = DotU8(Nibbles16(w + 4), Avx.LoadVector256((sbyte*)(x + 4)));
            acc = Fma.MultiplyAdd(Vector256.Create(H(w) * H(x)), Avx.ConvertToVector256Single(s), acc);
            mins += H(w + 2) * H(x + 2);
        }
        return Vector256.Sum(acc) + mins;
    }

    // Q5_0 x Q8_0: nibble | 0xF0 where the fifth bit is clear (= nibble - 16 as a signed byte), else the nibble.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q5_0(byte* w, byte* x, int n)
    {
        int blocks = n / 32;
        var acc = Vector256<float>.Zero;
        var high = Vector256.Create((byte)0xF0);
        for (int b = 0; b < blocks; b++, w += 22, x += 34)
        {
            var bits = BitsToBytes(Unsafe.ReadUnaligned<uint>(w + 2));
            var q = (Nibbles16(w + 6) | Avx2.AndNot(bits, high)).AsSByte();
            var s = DotI8(q, Avx.LoadVector256((sbyte*)(x + 2)));
            acc = Fma.MultiplyAdd(Vector256.Create(H(w) * H(x)), Avx.ConvertToVector256Single(s), acc);
        }
        return Vector256.Sum(acc);
    }

    // Q5_1 x Q8_1: nibble | 0x10 where the fifth bit is set; plus m * s per block.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q5_1(byte* w, byte* x, int n)
    {
        int blocks = n / 32;
        var acc = Vector256<float>.Zero;
        var bit4 = Vector256.Create((byte)0x10);
        float mins = 0;
        for (int b = 0; b < blocks; b++, w += 24, x += 36)
        {
            var q = Nibbles16(w + 8) | (BitsToBytes(Unsafe.ReadUnaligned<uint>(w + 4)) & bit4);
            var s = DotU8(q, Avx.LoadVector256((sbyte*)(x + 4)));
            acc = Fma.MultiplyAdd(Vector256.Create(H(w) * H(x)), Avx.ConvertToVector256Single(s), acc);
            mins += H(w + 2) * H(x + 2);
        }
        return Vector256.Sum(acc) + mins;
    }

    /// <summary>
    /// The eight 6-bit scales (low 64 bits) and eight 6-bit mins (high 64 bits) of a Q4_K/Q5_K block from its 12
    /// packed bytes, four at a time: groups 0-3 are the low 6 bits of bytes 0-3 (scales) and 4-7 (mins); groups 4-7
    /// the nibbles of bytes 8-11 with the top two bits of bytes 0-3 (scales) and 4-7 (mins) above them.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector128<byte> ScalesMinsK4(byte* p)
    {
        uint u0 = Unsafe.ReadUnaligned<uint>(p), u1 = Unsafe.ReadUnaligned<uint>(p + 4), u2 = Unsafe.ReadUnaligned<uint>(p + 8);
        uint sLo = u0 & 0x3F3F3F3F, mLo = u1 & 0x3F3F3F3F;
        uint sHi = (u2 & 0x0F0F0F0F) | (((u0 >> 6) & 0x03030303) << 4);
        uint mHi = ((u2 >> 4) & 0x0F0F0F0F) | (((u1 >> 6) & 0x03030303) << 4);
        return Vector128.Create(sLo, sHi, mLo, mHi).AsByte();
    }

    /// <summary>The eight 6-bit scales of a Q4_K/Q5_K block (low 8 bytes of <see cref="ScalesMinsK4"/>) as int16, in both 128-bit halves.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Scales8(Vector128<byte> scalesMins)
    {
        var s = Sse41.ConvertToVector128Int16(scalesMins).AsByte();
        return Vector256.Create(s, s);
    }

    /// <summary>acc + pairs of int16 products summed to int32 (one vpdpwssd with AVX-VNNI).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> ScaledAdd(Vector256<int> acc, Vector256<short> a, Vector256<short> b) =>
        AvxVnni.IsSupported ? AvxVnni.MultiplyWideningAndAdd(acc, a, b) : acc + Avx2.MultiplyAddAdjacent(a, b);

    /// <summary>pshufb control that puts scale 0 (bytes 0-1) in every int16 lane; add 2 for the next scale.</summary>
    private static Vector256<byte> PairPick => Vector256.Create((ushort)0x0100).AsByte();

    /// <summary>sum_g mins[g] (bsums[2g] + bsums[2g+1]) as eight int32 lanes, for the Q8_K input at x.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> MinTerms(Vector128<byte> scalesMins, byte* x)
    {
        var pairs = Avx2.MultiplyAddAdjacent(Avx.LoadVector256((short*)(x + 260)), Ones16);
        var mins = Avx2.ConvertToVector256Int32(Sse2.ShiftRightLogical128BitLane(scalesMins, 8));
        return Avx2.MultiplyLow(pairs, mins);
    }

    // Q4_K x Q8_K: per 64 values, 32 bytes of qs: low nibbles are group 2j, high nibbles group 2j + 1.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q4_K(byte* w, byte* x, int n)
    {
        int blocks = n / 256;
        var acc = Vector256<float>.Zero;
        var accMin = Vector256<float>.Zero;
        var m4 = Vector256.Create((byte)0x0F);
        var two = Vector256.Create((byte)2);
        for (int b = 0; b < blocks; b++, w += 144, x += 292)
        {
            var scalesMins = ScalesMinsK4(w + 4);
            var s16 = Scales8(scalesMins);
            var pick = PairPick;
            byte* q = w + 16;
            sbyte* y = (sbyte*)(x + 4);
            var sumi = Vector256<int>.Zero;
            for (int j = 0; j < 4; j++, q += 32, y += 64)
            {
                var v = Avx.LoadVector256(q);
                var lo = v & m4;
                var hi = Avx2.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & m4;
                sumi = ScaledAdd(sumi, Avx2.MultiplyAddAdjacent(lo, Avx.LoadVector256(y)), Avx2.Shuffle(s16, pick).AsInt16()); // scale of group 2j
                pick += two;
                sumi = ScaledAdd(sumi, Avx2.MultiplyAddAdjacent(hi, Avx.LoadVector256(y + 32)), Avx2.Shuffle(s16, pick).AsInt16()); // group 2j + 1
                pick += two;
            }
            float dx = *(float*)x;
            acc = Fma.MultiplyAdd(Vector256.Create(H(w) * dx), Avx.ConvertToVector256Single(sumi), acc);
            accMin = Fma.MultiplyAdd(Vector256.Create(H(w + 2) * dx), Avx.ConvertToVector256Single(MinTerms(scalesMins, x)), accMin);
        }
        return Vector256.Sum(acc) - Vector256.Sum(accMin);
    }

    // Q5_K x Q8_K: as Q4_K with the fifth bit of group g in bit g of qh[l].
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q5_K(byte* w, byte* x, int n)
    {
        int blocks = n / 256;
        var acc = Vector256<float>.Zero;
        var accMin = Vector256<float>.Zero;
        var m4 = Vector256.Create((byte)0x0F);
        var bit4 = Vector256.Create((byte)0x10);
        var two = Vector256.Create((byte)2);
        for (int b = 0; b < blocks; b++, w += 176, x += 292)
        {
            var scalesMins = ScalesMinsK4(w + 4);
            var s16 = Scales8(scalesMins);
            var pick = PairPick;
            var qh = Avx.LoadVector256(w + 16);
            byte* q = w + 48;
            sbyte* y = (sbyte*)(x + 4);
            var sumi = Vector256<int>.Zero;
            for (int j = 0; j < 4; j++, q += 32, y += 64)
            {
                var v = Avx.LoadVector256(q);
                var lo = (v & m4) | (Avx2.ShiftLeftLogical(qh.AsUInt16(), 4).AsByte() & bit4);
                var hi = (Avx2.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & m4) | (Avx2.ShiftLeftLogical(qh.AsUInt16(), 3).AsByte() & bit4);
                qh = Avx2.ShiftRightLogical(qh.AsUInt16(), 2).AsByte(); // bits 2j + 2, 2j + 3 of each byte come down to bits 0, 1 (bits from the neighbour byte land above and are masked)
                sumi = ScaledAdd(sumi, Avx2.MultiplyAddAdjacent(lo, Avx.LoadVector256(y)), Avx2.Shuffle(s16, pick).AsInt16()); // scale of group 2j
                pick += two;
                sumi = ScaledAdd(sumi, Avx2.MultiplyAddAdjacent(hi, Avx.LoadVector256(y + 32)), Avx2.Shuffle(s16, pick).AsInt16()); // group 2j + 1
                pick += two;
            }
            float dx = *(float*)x;
            acc = Fma.MultiplyAdd(Vector256.Create(H(w) * dx), Avx.ConvertToVector256Single(sumi), acc);
            accMin = Fma.MultiplyAdd(Vector256.Create(H(w + 2) * dx), Avx.ConvertToVector256Single(MinTerms(scalesMins, x)), accMin);
        }
        return Vector256.Sum(acc) - Vector256.Sum(accMin);
    }

    // Q6_K x Q8_K: q in 0..63 (bias 32 removed afterwards with the bsums: sum sc_g (q - 32) y = sum sc_g q y - 32 sum sc_g bsum_g).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q6_K(byte* w, byte* x, int n)
    {
        int blocks = n / 256;
        var acc = Vector256<float>.Zero;
        var m4 = Vector256.Create((byte)0x0F);
        var m2 = Vector256.Create((byte)0x30);
        for (int b = 0; b < blocks; b++, w += 210, x += 292)
        {
            byte* ql = w, qh = w + 128;
            sbyte* sc = (sbyte*)(w + 192);
            sbyte* y = (sbyte*)(x + 4);
            var scales16 = Avx2.ConvertToVector256Int16(Sse2.LoadVector128(sc));
            var bias = Avx2.MultiplyAddAdjacent(Avx.LoadVector256((short*)(x + 260)), scales16);
            var sumi = Vector256<int>.Zero;
            for (int half = 0; half < 2; half++, ql += 64, qh += 32, sc += 8, y += 128)
            {
                var a = Avx.LoadVector256(ql);
                var c = Avx.LoadVector256(ql + 32);
                var h = Avx.LoadVector256(qh);
                var q1 = (a & m4) | (Avx2.ShiftLeftLogical(h.AsUInt16(), 4).AsByte() & m2);
                var q2 = (c & m4) | (Avx2.ShiftLeftLogical(h.AsUInt16(), 2).AsByte() & m2);
                var q3 = (Avx2.ShiftRightLogical(a.AsUInt16(), 4).AsByte() & m4) | (h & m2);
                var q4 = (Avx2.ShiftRightLogical(c.AsUInt16(), 4).AsByte() & m4) | (Avx2.ShiftRightLogical(h.AsUInt16(), 2).AsByte() & m2);
                sumi += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q1, Avx.LoadVector256(y)), Pair(sc[0], sc[1]));
                sumi += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q2, Avx.LoadVector256(y + 32)), Pair(sc[2], sc[3]));
                sumi += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q3, Avx.LoadVector256(y + 64)), Pair(sc[4], sc[5]));
                sumi += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q4, Avx.LoadVector256(y + 96)), Pair(sc[6], sc[7]));
            }
            sumi -= Avx2.ShiftLeftLogical(bias, 5);
            acc = Fma.MultiplyAdd(Vector256.Create(H(w + 208) * *(float*)x), Avx.ConvertToVector256Single(sumi), acc);
        }
        return Vector256.Sum(acc);
    }

    /// <summary>Eight copies of a then eight of b, as int16 (the scales of two groups of 16 in one 32-byte vector).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<short> Pair(sbyte a, sbyte b) => Vector256.Create(Vector128.Create((short)a), Vector128.Create((short)b));

    // Q2_K x Q8_K: per 128 values, 32 bytes of qs hold four 2-bit planes (shift 0, 2, 4, 6), each 32 values = two
    // groups of 16; scales[g] low nibble = scale, high nibble = min (times the bsums).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q2_K(byte* w, byte* x, int n)
    {
        int blocks = n / 256;
        var acc = Vector256<float>.Zero;
        var accMin = Vector256<float>.Zero;
        var m2 = Vector256.Create((byte)3);
        for (int b = 0; b < blocks; b++, w += 84, x += 292)
        {
            byte* sc = w;
            var mins = Avx2.ConvertToVector256Int16(Sse2.ShiftRightLogical(Sse2.LoadVector128(sc).AsUInt16(), 4).AsByte() & Vector128.Create((byte)0x0F));
            var minTerms = Avx2.MultiplyAddAdjacent(Avx.LoadVector256((short*)(x + 260)), mins);
            sbyte* y = (sbyte*)(x + 4);
            var sumi = Vector256<int>.Zero;
            for (int h = 0; h < 2; h++)
            {
                var v = Avx.LoadVector256(w + 16 + 32 * h);
                for (int s = 0; s < 4; s++, y += 32, sc += 2)
                {
                    var q = v & m2;
                    v = Avx2.ShiftRightLogical(v.AsUInt16(), 2).AsByte(); // the next plane comes down to bits 0-1
                    sumi += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q, Avx.LoadVector256(y)), PairS(sc[0] & 0xF, sc[1] & 0xF));
                }
            }
            float dx = *(float*)x;
            acc = Fma.MultiplyAdd(Vector256.Create(H(w + 80) * dx), Avx.ConvertToVector256Single(sumi), acc);
            accMin = Fma.MultiplyAdd(Vector256.Create(H(w + 82) * dx), Avx.ConvertToVector256Single(minTerms), accMin);
        }
        return Vector256.Sum(acc) - Vector256.Sum(accMin);
    }

    // Q3_K x Q8_K: u = 2 low bits | high bit << 2 in 0..7 (the value is u - 4); the -4 is taken out with the bsums:
    // sum sc_g (u - 4) y = sum sc_g u y - 4 sum sc_g bsum_g.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q3_K(byte* w, byte* x, int n)
    {
        int blocks = n / 256;
        var acc = Vector256<float>.Zero;
        var m2 = Vector256.Create((byte)3);
        var bit2 = Vector256.Create((byte)4);
        short* scales = stackalloc short[16];
        for (int b = 0; b < blocks; b++, w += 110, x += 292)
        {
            var scales16 = ScalesQ3K(w + 96);
            Avx.Store(scales, scales16);
            var bias = Avx2.MultiplyAddAdjacent(Avx.LoadVector256((short*)(x + 260)), scales16);
            var hm = Avx.LoadVector256(w);
            sbyte* y = (sbyte*)(x + 4);
            short* sc = scales;
            var sumi = Vector256<int>.Zero;
            for (int h = 0; h < 2; h++)
            {
                var v = Avx.LoadVector256(w + 32 + 32 * h);
                for (int s = 0; s < 4; s++, y += 32, sc += 2)
                {
                    var q = (v & m2) | (Avx2.ShiftLeftLogical(hm.AsUInt16(), 2).AsByte() & bit2);
                    v = Avx2.ShiftRightLogical(v.AsUInt16(), 2).AsByte();
                    hm = Avx2.ShiftRightLogical(hm.AsUInt16(), 1).AsByte(); // the next plane's high bit comes down to bit 0
                    sumi += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q, Avx.LoadVector256(y)), PairS(sc[0], sc[1]));
                }
            }
            sumi -= Avx2.ShiftLeftLogical(bias, 2);
            acc = Fma.MultiplyAdd(Vector256.Create(H(w + 108) * *(float*)x), Avx.ConvertToVector256Single(sumi), acc);
        }
        return Vector256.Sum(acc);
    }

    /// <summary>
    /// The sixteen Q3_K scales (-32..31) as int16 from the 12 packed bytes, four at a time: low nibbles from bytes
    /// 0-3 (groups 0-3, 8-11 in the high nibbles) and 4-7 (groups 4-7, 12-15), the two high bits of group j at bits
    /// 2 (j / 4) of byte 8 + j % 4.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<short> ScalesQ3K(byte* p)
    {
        uint a0 = Unsafe.ReadUnaligned<uint>(p), a1 = Unsafe.ReadUnaligned<uint>(p + 4), a2 = Unsafe.ReadUnaligned<uint>(p + 8);
        const uint Low = 0x0F0F0F0F, High = 0x03030303;
        var u = Vector128.Create(
            (a0 & Low) | ((a2 & High) << 4),
            (a1 & Low) | (((a2 >> 2) & High) << 4),
            ((a0 >> 4) & Low) | (((a2 >> 4) & High) << 4),
            ((a1 >> 4) & Low) | (((a2 >> 6) & High) << 4)).AsSByte();
        return Avx2.ConvertToVector256Int16(u - Vector128.Create((sbyte)32));
    }

    /// <summary>Eight copies of a then eight of b, as int16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<short> PairS(int a, int b) => Vector256.Create(Vector128.Create((short)a), Vector128.Create((short)b));
}
