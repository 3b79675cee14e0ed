using System.Buffers.Binary;
using FlashLm.Formats;
using Xunit;

namespace FlashLm.Tests;

/// <summary>
/// The block formats' bit layouts, checked independently of Dequant's loops: blocks built value by value from the
/// layout (which byte and bit holds element e), random blocks against a per-element decoder written from the same
/// layout in ggml's float order, and the activation quantizers against hand-computed bytes.
/// </summary>
public class QuantFormatTests
{
    private static readonly DType[] BlockTypes =
        [DType.Q4_0, DType.Q4_1, DType.Q5_0, DType.Q5_1, DType.Q8_0, DType.Q8_1, DType.Q2_K, DType.Q3_K, DType.Q4_K, DType.Q5_K, DType.Q6_K, DType.Q8_K];

    public static TheoryData<DType> AllBlockTypes() => new(BlockTypes);

    private static void PutHalf(byte[] b, int at, float v) => BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(at), BitConverter.HalfToUInt16Bits((Half)v));
    private static float GetHalf(byte[] b, int at) => (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan(at)));

    // ---- DTypeInfo

    [Theory]
    [InlineData(DType.F32, 1, 4)]
    [InlineData(DType.F16, 1, 2)]
    [InlineData(DType.BF16, 1, 2)]
    [InlineData(DType.Q4_0, 32, 18)]
    [InlineData(DType.Q4_1, 32, 20)]
    [InlineData(DType.Q5_0, 32, 22)]
    [InlineData(DType.Q5_1, 32, 24)]
    [InlineData(DType.Q8_0, 32, 34)]
    [InlineData(DType.Q8_1, 32, 36)]
    [InlineData(DType.Q2_K, 256, 84)]
    [InlineData(DType.Q3_K, 256, 110)]
    [InlineData(DType.Q4_K, 256, 144)]
    [InlineData(DType.Q5_K, 256, 176)]
    [InlineData(DType.Q6_K, 256, 210)]
    [InlineData(DType.Q8_K, 256, 292)]
    public void Block_sizes_are_ggmls(DType t, int elements, int bytes)
    {
        Assert.Equal(elements, DTypeInfo.BlockElements(t));
        Assert.Equal(bytes, DTypeInfo.BlockBytes(t));
        Assert.Equal(3L * bytes, DTypeInfo.ByteCount(t, 3L * elements));
        Assert.Equal(elements > 1, DTypeInfo.IsQuantized(t));
        Assert.Equal(t, DTypeInfo.Parse(DTypeInfo.Name(t)));
        Assert.Equal(t, DTypeInfo.Parse(DTypeInfo.Name(t).ToLowerInvariant()));
    }

    [Theory]
    [InlineData(DType.Q4_0, 33)]
    [InlineData(DType.Q8_0, 16)]
    [InlineData(DType.Q4_K, 255)]
    [InlineData(DType.Q6_K, 4096 + 32)]
    [InlineData(DType.F32, -1)]
    public void ByteCount_rejects_partial_blocks(DType t, long elements)
    {
        var e = Assert.Throws<ArgumentException>(() => DTypeInfo.ByteCount(t, elements));
        Assert.Contains(t.ToString(), e.Message);
    }

    [Fact]
    public void Parse_names_the_accepted_types_when_it_fails()
    {
        var e = Assert.Throws<ArgumentException>(() => DTypeInfo.Parse("Q4_K_M"));
        Assert.Contains("Q4_K", e.Message);
        Assert.Contains("Q6_K", e.Message);
        Assert.Contains("BF16", e.Message);
    }

    [Theory]
    [InlineData(DType.Q4_0, DType.Q8_0)]
    [InlineData(DType.Q5_0, DType.Q8_0)]
    [InlineData(DType.Q8_0, DType.Q8_0)]
    [InlineData(DType.Q4_1, DType.Q8_1)]
    [InlineData(DType.Q5_1, DType.Q8_1)]
    [InlineData(DType.Q2_K, DType.Q8_K)]
    [InlineData(DType.Q3_K, DType.Q8_K)]
    [InlineData(DType.Q4_K, DType.Q8_K)]
    [InlineData(DType.Q5_K, DType.Q8_K)]
    [InlineData(DType.Q6_K, DType.Q8_K)]
    [InlineData(DType.F16, DType.F32)]
    [InlineData(DType.BF16, DType.F32)]
    [InlineData(DType.F32, DType.F32)]
    public void ActivationType_is_what_ggml_quantizes_x_to(DType weight, DType act) => Assert.Equal(act, DTypeInfo.ActivationType(weight));

    [Theory]
    [InlineData(DType.Q4_0)]
    [InlineData(DType.Q6_K)]
    public void ToF32_rejects_a_source_of_the_wrong_length(DType t)
    {
        int n = DTypeInfo.BlockElements(t);
        Assert.Throws<ArgumentException>(() => Dequant.ToF32(t, new byte[DTypeInfo.BlockBytes(t) - 1], new float[n]));
        Assert.Throws<ArgumentException>(() => Dequant.ToF32(t, new byte[DTypeInfo.BlockBytes(t)], new float[n + 1]));
    }

    // ---- Hand-built blocks: each element's value is known, its bits placed by the layout

    [Fact]
    public void Q4_0_known_block()
    {
        var b = new byte[18];
        PutHalf(b, 0, 0.5f);
        for (int j = 0; j < 16; j++) b[2 + j] = (byte)(j | ((15 - j) << 4)); // element j = nibble j, element 16 + j = 15 - j
        var y = new float[32];
        Dequant.ToF32(DType.Q4_0, b, y);
        for (int j = 0; j < 16; j++)
        {
            Assert.Equal((j - 8) * 0.5f, y[j]);
            Assert.Equal((7 - j) * 0.5f, y[16 + j]);
        }
    }

    [Fact]
    public void Q4_1_known_block()
    {
        var b = new byte[20];
        PutHalf(b, 0, 1f);
        PutHalf(b, 2, -2f);
        for (int j = 0; j < 16; j++) b[4 + j] = (byte)(j | (3 << 4));
        var y = new float[32];
        Dequant.ToF32(DType.Q4_1, b, y);
        for (int j = 0; j < 16; j++)
        {
            Assert.Equal(j - 2f, y[j]);
            Assert.Equal(1f, y[16 + j]);
        }
    }

    [Fact]
    public void Q5_0_known_block()
    {
        var b = new byte[22];
        PutHalf(b, 0, 1f);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(2), 0x8000_0001u); // fifth bits of elements 0 and 31
        b[6 + 3] = 0x5A; // element 3 = 0xA, element 19 = 0x5
        var y = new float[32];
        Dequant.ToF32(DType.Q5_0, b, y);
        var expected = Enumerable.Repeat(-16f, 32).ToArray();
        expected[0] = 0; expected[31] = 0; expected[3] = 10 - 16; expected[19] = 5 - 16;
        Assert.Equal(expected, y);
    }

    [Fact]
    public void Q5_1_known_block()
    {
        var b = new byte[24];
        PutHalf(b, 0, 2f);
        PutHalf(b, 2, 1f);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), 0x0001_0000u); // fifth bit of element 16
        for (int j = 0; j < 16; j++) b[8 + j] = 0x21;
        var y = new float[32];
        Dequant.ToF32(DType.Q5_1, b, y);
        for (int j = 0; j < 16; j++) Assert.Equal(3f, y[j]);
        Assert.Equal((2 + 16) * 2f + 1, y[16]);
        for (int j = 17; j < 32; j++) Assert.Equal(5f, y[j]);
    }

    [Theory]
    [InlineData(DType.Q8_0, 2)]
    [InlineData(DType.Q8_1, 4)]
    public void Q8_known_block(DType t, int qsAt)
    {
        var b = new byte[DTypeInfo.BlockBytes(t)];
        PutHalf(b, 0, 0.25f);
        for (int j = 0; j < 32; j++) b[qsAt + j] = (byte)(sbyte)(j * 8 - 128);
        var y = new float[32];
        Dequant.ToF32(t, b, y);
        for (int j = 0; j < 32; j++) Assert.Equal((j * 8 - 128) * 0.25f, y[j]);
    }

    // K blocks from per-element values: q[e] and per-group scales given by simple formulas.

    [Fact]
    public void Q2_K_known_block()
    {
        var b = new byte[84];
        PutHalf(b, 80, 0.5f);  // d
        PutHalf(b, 82, 0.25f); // dmin
        for (int g = 0; g < 16; g++) b[g] = (byte)((g % 16) | ((15 - g) << 4));
        for (int e = 0; e < 256; e++) b[16 + e / 128 * 32 + e % 32] |= (byte)((e * 7 % 4) << (2 * (e % 128 / 32)));
        var y = new float[256];
        Dequant.ToF32(DType.Q2_K, b, y);
        for (int e = 0; e < 256; e++) Assert.Equal(0.5f * (e / 16) * (e * 7 % 4) - 0.25f * (15 - e / 16), y[e]);
    }

    [Fact]
    public void Q3_K_known_block()
    {
        var b = new byte[110];
        PutHalf(b, 108, 0.5f);
        static int Scale(int g) => g * 4 - 32; // -32 .. 28
        for (int g = 0; g < 16; g++)
        {
            int s = Scale(g) + 32; // 6 bits
            if (g < 8) b[96 + g] |= (byte)(s & 0xF); else b[96 + g - 8] |= (byte)((s & 0xF) << 4);
            b[96 + 8 + g % 4] |= (byte)((s >> 4) << (2 * (g / 4)));
        }
        static int Value(int e) => e * 5 % 8 - 4; // -4 .. 3
        for (int e = 0; e < 256; e++)
        {
            int u = Value(e) + 4;
            b[32 + e / 128 * 32 + e % 32] |= (byte)((u & 3) << (2 * (e % 128 / 32)));
            b[e % 32] |= (byte)((u >> 2) << (e / 32)); // high bit set = no -4
        }
        var y = new float[256];
        Dequant.ToF32(DType.Q3_K, b, y);
        for (int e = 0; e < 256; e++) Assert.Equal(0.5f * Scale(e / 16) * Value(e), y[e]);
    }

    /// <summary>Packs eight 6-bit scales and mins as Q4_K/Q5_K store them (12 bytes at <paramref name="at"/>).</summary>
    private static void PackK4(byte[] b, int at, int[] sc, int[] mn)
    {
        for (int j = 0; j < 4; j++)
        {
            b[at + j] = (byte)(sc[j] | ((sc[j + 4] >> 4) << 6));
            b[at + j + 4] = (byte)(mn[j] | ((mn[j + 4] >> 4) << 6));
            b[at + j + 8] = (byte)((sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4));
        }
    }

    [Theory]
    [InlineData(DType.Q4_K)]
    [InlineData(DType.Q5_K)]
    public void Q4_K_and_Q5_K_known_blocks(DType t)
    {
        bool five = t == DType.Q5_K;
        var b = new byte[DTypeInfo.BlockBytes(t)];
        PutHalf(b, 0, 0.5f);
        PutHalf(b, 2, 0.125f);
        int[] sc = [1, 63, 17, 32, 48, 5, 60, 33], mn = [63, 0, 31, 16, 47, 2, 50, 61];
        PackK4(b, 4, sc, mn);
        int qs = five ? 48 : 16;
        int Value(int e) => five ? e * 13 % 32 : e * 11 % 16;
        for (int e = 0; e < 256; e++)
        {
            int g = e / 32, l = e % 32, v = Value(e);
            b[qs + e / 64 * 32 + l] |= (byte)((v & 0xF) << (4 * (g % 2)));
            if (five) b[16 + l] |= (byte)((v >> 4) << g);
        }
        var y = new float[256];
        Dequant.ToF32(t, b, y);
        for (int e = 0; e < 256; e++) Assert.Equal(0.5f * sc[e / 32] * Value(e) - 0.125f * mn[e / 32], y[e]);
    }

    [Fact]
    public void Q6_K_known_block()
    {
        var b = new byte[210];
        PutHalf(b, 208, 0.25f);
        for (int g = 0; g < 16; g++) b[192 + g] = (byte)(sbyte)(g % 2 == 0 ? -128 + g : 127 - g);
        static int Value(int e) => e * 37 % 64; // stored 0..63, value - 32
        for (int e = 0; e < 256; e++)
        {
            int n = e / 128, r = e % 128, l = r % 32, quarter = r / 32, v = Value(e);
            b[n * 64 + l + (quarter % 2) * 32] |= (byte)((v & 0xF) << (quarter >= 2 ? 4 : 0));
            b[128 + n * 32 + l] |= (byte)((v >> 4) << (2 * quarter));
        }
        var y = new float[256];
        Dequant.ToF32(DType.Q6_K, b, y);
        for (int e = 0; e < 256; e++) Assert.Equal(0.25f * (sbyte)b[192 + e / 16] * (Value(e) - 32), y[e]);
    }

    [Fact]
    public void Q8_K_known_block()
    {
        var b = new byte[292];
        BinaryPrimitives.WriteSingleLittleEndian(b, -0.75f);
        for (int e = 0; e < 256; e++) b[4 + e] = (byte)(sbyte)(e - 128);
        var y = new float[256];
        Dequant.ToF32(DType.Q8_K, b, y);
        for (int e = 0; e < 256; e++) Assert.Equal(-0.75f * (e - 128), y[e]);
    }

    // ---- Random blocks: bit-exact against a per-element decoder in ggml's float order

    /// <summary>Random blocks with finite F16 scales; every fourth block uses an edge scale (0, negative, subnormal, 65504).</summary>
    internal static byte[] RandomBlocks(DType t, int blocks, int seed)
    {
        var r = new Random(seed);
        int bb = DTypeInfo.BlockBytes(t);
        var b = new byte[blocks * bb];
        r.NextBytes(b);
        float[] edges = [0f, -0.75f, 6e-8f, 65504f];
        for (int k = 0; k < blocks; k++)
        {
            int o = k * bb;
            float Scale() => k % 4 == 3 ? edges[k / 4 % edges.Length] : (float)(r.NextDouble() * 2 - 1) * 0.05f;
            switch (t)
            {
                case DType.Q4_0 or DType.Q5_0 or DType.Q8_0: PutHalf(b, o, Scale()); break;
                case DType.Q4_1 or DType.Q5_1 or DType.Q8_1 or DType.Q4_K or DType.Q5_K: PutHalf(b, o, Scale()); PutHalf(b, o + 2, Scale()); break;
                case DType.Q2_K: PutHalf(b, o + 80, Scale()); PutHalf(b, o + 82, Scale()); break;
                case DType.Q3_K: PutHalf(b, o + 108, Scale()); break;
                case DType.Q6_K: PutHalf(b, o + 208, Scale()); break;
                case DType.Q8_K: BinaryPrimitives.WriteSingleLittleEndian(b.AsSpan(o), Scale()); break;
            }
        }
        return b;
    }

    /// <summary>Element e of a block, from the layout, with ggml's expression order.</summary>
    private static float Element(DType t, byte[] b, int o, int e)
    {
        int Nib(int at, int j) => j < 16 ? b[at + j] & 0xF : b[at + j - 16] >> 4;
        int K4Scale(int g) => g < 4 ? b[o + 4 + g] & 63 : (b[o + 8 + g] & 0xF) | ((b[o + 4 + g - 4] >> 6) << 4);
        int K4Min(int g) => g < 4 ? b[o + 8 + g] & 63 : (b[o + 8 + g] >> 4) | ((b[o + 4 + g] >> 6) << 4);
        switch (t)
        {
            case DType.Q4_0: return (Nib(o + 2, e) - 8) * GetHalf(b, o);
            case DType.Q4_1: return Nib(o + 4, e) * GetHalf(b, o) + GetHalf(b, o + 2);
            case DType.Q5_0: return ((Nib(o + 6, e) | (int)((BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(o + 2)) >> e & 1) << 4)) - 16) * GetHalf(b, o);
            case DType.Q5_1: return (Nib(o + 8, e) | (int)((BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(o + 4)) >> e & 1) << 4)) * GetHalf(b, o) + GetHalf(b, o + 2);
            case DType.Q8_0: return (sbyte)b[o + 2 + e] * GetHalf(b, o);
            case DType.Q8_1: return (sbyte)b[o + 4 + e] * GetHalf(b, o);
            case DType.Q8_K: return BinaryPrimitives.ReadSingleLittleEndian(b.AsSpan(o)) * (sbyte)b[o + 4 + e];
            case DType.Q2_K:
            {
                int sc = b[o + e / 16], q = (b[o + 16 + e / 128 * 32 + e % 32] >> (2 * (e % 128 / 32))) & 3;
                return GetHalf(b, o + 80) * (sc & 0xF) * q - GetHalf(b, o + 82) * (sc >> 4);
            }
            case DType.Q3_K:
            {
                int g = e / 16;
                int low = g < 8 ? b[o + 96 + g] & 0xF : b[o + 96 + g - 8] >> 4;
                int sc = (low | (((b[o + 104 + g % 4] >> (2 * (g / 4))) & 3) << 4)) - 32;
                int q = ((b[o + 32 + e / 128 * 32 + e % 32] >> (2 * (e % 128 / 32))) & 3) - (((b[o + e % 32] >> (e / 32)) & 1) != 0 ? 0 : 4);
                return GetHalf(b, o + 108) * sc * q;
            }
            case DType.Q4_K:
            {
                int g = e / 32, q = (b[o + 16 + e / 64 * 32 + e % 32] >> (4 * (g % 2))) & 0xF;
                return GetHalf(b, o) * K4Scale(g) * q - GetHalf(b, o + 2) * K4Min(g);
            }
            case DType.Q5_K:
            {
                int g = e / 32, q = ((b[o + 48 + e / 64 * 32 + e % 32] >> (4 * (g % 2))) & 0xF) + (((b[o + 16 + e % 32] >> g) & 1) << 4);
                return GetHalf(b, o) * K4Scale(g) * q - GetHalf(b, o + 2) * K4Min(g);
            }
            case DType.Q6_K:
            {
                int n = e / 128, r = e % 128, l = r % 32, quarter = r / 32;
                int low = (b[o + n * 64 + l + quarter % 2 * 32] >> (quarter >= 2 ? 4 : 0)) & 0xF;
                int high = (b[o + 128 + n * 32 + l] >> (2 * quarter)) & 3;
                return GetHalf(b, o + 208) * (sbyte)b[o + 192 + e / 16] * ((low | (high << 4)) - 32);
            }
        }
        throw new ArgumentException(t.ToString());
    }

    [Theory]
    [MemberData(nameof(AllBlockTypes))]
    public void ToF32_matches_a_per_element_decoder_bit_for_bit(DType t)
    {
        const int blocks = 24;
        var b = RandomBlocks(t, blocks, 11 + (int)t);
        int n = DTypeInfo.BlockElements(t), bb = DTypeInfo.BlockBytes(t);
        var y = new float[blocks * n];
        Dequant.ToF32(t, b, y);
        for (int k = 0; k < blocks; k++)
            for (int e = 0; e < n; e++)
            {
                float want = Element(t, b, k * bb, e);
                Assert.True(BitConverter.SingleToInt32Bits(want) == BitConverter.SingleToInt32Bits(y[k * n + e]),
                    $"{t} block {k} element {e}: expected {want}, got {y[k * n + e]}");
            }
    }

    [Theory]
    [MemberData(nameof(AllBlockTypes))]
    public void An_all_zero_block_dequantizes_to_zeros(DType t)
    {
        var y = new float[DTypeInfo.BlockElements(t)];
        Array.Fill(y, 1f);
        Dequant.ToF32(t, new byte[DTypeInfo.BlockBytes(t)], y);
        Assert.All(y, v => Assert.Equal(0f, v));
    }

    [Fact]
    public void F16_and_BF16_widen_exactly()
    {
        ushort[] halves = [0x0000, 0x8000, 0x0001, 0x03FF, 0x0400, 0x3C00, 0x7BFF, 0xFBFF, 0xC000];
        var src = new byte[halves.Length * 2];
        for (int i = 0; i < halves.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(src.AsSpan(2 * i), halves[i]);
        var y = new float[halves.Length];
        Dequant.ToF32(DType.F16, src, y);
        for (int i = 0; i < halves.Length; i++) Assert.Equal((float)BitConverter.UInt16BitsToHalf(halves[i]), y[i]);
        Assert.Equal(5.9604645e-8f, y[2]); // the smallest subnormal, 2^-24
        Assert.Equal(65504f, y[6]);
        Dequant.ToF32(DType.BF16, src, y);
        for (int i = 0; i < halves.Length; i++) Assert.Equal(BitConverter.Int32BitsToSingle(halves[i] << 16), y[i]);
    }

    // ---- Activation quantizers

    [Fact]
    public void Q8_0_rounds_half_away_from_zero_like_roundf()
    {
        var x = new float[32];
        x[0] = 127f; // d = 1, 1/d = 1
        x[1] = 2.5f; x[2] = -2.5f; x[3] = 0.5f; x[4] = 1.49f;
        var q = new byte[34];
        Dequant.Quantize(DType.Q8_0, x, q);
        Assert.Equal(0x3C00, BinaryPrimitives.ReadUInt16LittleEndian(q)); // F16 1.0
        Assert.Equal([127, 3, -3, 1, 1, 0], q.Skip(2).Take(6).Select(v => (int)(sbyte)v));
        // the existing entry point agrees
        var old = new byte[34];
        Dequant.F32ToQ8_0(x, old);
        Assert.Equal(q, old);
    }

    [Fact]
    public void Q8_1_stores_d_and_d_times_the_sum()
    {
        var x = new float[32];
        for (int j = 0; j < 32; j++) x[j] = (j - 16) * 0.5f; // amax 8 at j = 0
        var q = new byte[36];
        Dequant.Quantize(DType.Q8_1, x, q);
        float d = 8f / 127f, id = 1f / d;
        int sum = 0;
        for (int j = 0; j < 32; j++)
        {
            int want = (int)MathF.Round(x[j] * id, MidpointRounding.AwayFromZero);
            Assert.Equal(want, (sbyte)q[4 + j]);
            sum += want;
        }
        Assert.Equal(-127, (sbyte)q[4]);
        Assert.Equal((Half)d, BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(q)));
        Assert.Equal((Half)(sum * d), BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(q.AsSpan(2))));
    }

    [Fact]
    public void Q8_K_uses_the_signed_max_nearest_int_ties_to_even_and_stores_bsums()
    {
        var x = new float[256];
        x[0] = -127f; // max by |x| is negative: iscale = -127 / -127 = 1, d = 1
        x[1] = 2.5f; x[2] = 3.5f; x[3] = -2.5f; x[16] = 100f; x[17] = 0.5f;
        var q = new byte[292];
        Dequant.Quantize(DType.Q8_K, x, q);
        Assert.Equal(1f, BinaryPrimitives.ReadSingleLittleEndian(q));
        Assert.Equal([-127, 2, 4, -2], q.Skip(4).Take(4).Select(v => (int)(sbyte)v));
        Assert.Equal(100, (sbyte)q[4 + 16]);
        Assert.Equal(0, (sbyte)q[4 + 17]);
        Assert.Equal(-127 + 2 + 4 - 2, BinaryPrimitives.ReadInt16LittleEndian(q.AsSpan(260)));
        Assert.Equal(100, BinaryPrimitives.ReadInt16LittleEndian(q.AsSpan(262)));
        for (int g = 2; g < 16; g++) Assert.Equal(0, BinaryPrimitives.ReadInt16LittleEndian(q.AsSpan(260 + 2 * g)));

        // a positive max: iscale = -127 / max, so q has the opposite sign and d is negative
        x.AsSpan().Clear();
        x[5] = 254f; x[6] = -1f;
        Dequant.Quantize(DType.Q8_K, x, q);
        Assert.Equal(-2f, BinaryPrimitives.ReadSingleLittleEndian(q));
        Assert.Equal(-127, (sbyte)q[4 + 5]);
        Assert.Equal(0, (sbyte)q[4 + 6]); // -0.5 ties to even
    }

    [Theory]
    [InlineData(DType.Q8_0)]
    [InlineData(DType.Q8_1)]
    [InlineData(DType.Q8_K)]
    public void Activation_quantizers_round_trip_within_half_a_step(DType t)
    {
        var r = new Random(5);
        int n = 4 * 256;
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float)(r.NextDouble() * 2 - 1) * (i < 256 ? 0.1f : 10f); // scales stay F16-normal (a subnormal d loses precision, by design)
        x.AsSpan(512, 256).Clear(); // an all-zero block
        var q = new byte[DTypeInfo.ByteCount(t, n)];
        Dequant.Quantize(t, x, q);
        var y = new float[n];
        Dequant.ToF32(t, q, y);
        int block = DTypeInfo.BlockElements(t);
        for (int b = 0; b < n / block; b++)
        {
            float amax = 0;
            for (int i = 0; i < block; i++) amax = MathF.Max(amax, MathF.Abs(x[b * block + i]));
            float step = amax / 127f;
            float bound = t == DType.Q8_K ? 0.505f : 0.5f + 127f / 2048; // Q8_0/Q8_1 store d as F16 (relative error 2^-11)
            for (int i = b * block; i < (b + 1) * block; i++)
                Assert.True(MathF.Abs(y[i] - x[i]) <= step * bound + 1e-7f * amax, $"{t} element {i}: {x[i]} -> {y[i]}");
        }
        Assert.All(y.AsSpan(512, 256).ToArray(), v => Assert.Equal(0f, v));
    }

    [Fact]
    public void Quantize_rejects_wrong_lengths_and_unsupported_types()
    {
        Assert.Throws<ArgumentException>(() => Dequant.Quantize(DType.Q8_0, new float[31], new byte[34]));
        Assert.Throws<ArgumentException>(() => Dequant.Quantize(DType.Q8_0, new float[32], new byte[35]));
        var e = Assert.Throws<NotSupportedException>(() => Dequant.Quantize(DType.Q3_K, new float[256], new byte[110]));
        Assert.Contains("Q3_K", e.Message);
    }
}

/// <summary>The K re-quantizers (Q4_K, Q5_K, Q6_K): error bounds on Gaussian weights and the degenerate blocks.</summary>
public class QuantKRequantTests
{
    private static float[] Gaussian(int n, int seed, float sigma)
    {
        var r = new Random(seed);
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = sigma * (float)(Math.Sqrt(-2 * Math.Log(1 - r.NextDouble())) * Math.Cos(2 * Math.PI * r.NextDouble()));
        return x;
    }

    private static float[] RoundTrip(DType t, float[] x)
    {
        var q = new byte[DTypeInfo.ByteCount(t, x.Length)];
        Dequant.Quantize(t, x, q);
        var y = new float[x.Length];
        Dequant.ToF32(t, q, y);
        return y;
    }

    // RMS error / RMS value on Gaussian weights. ggml's reference quantizers give about 0.09 (Q4_K), 0.045 (Q5_K)
    // and 0.02 (Q6_K) on such data (and ours is byte-identical to them: QuantGgmlGoldenTests).
    [Theory]
    [InlineData(DType.Q4_K, 0.10)]
    [InlineData(DType.Q5_K, 0.05)]
    [InlineData(DType.Q6_K, 0.025)]
    public void Round_trip_error_is_that_of_the_bit_width(DType t, double maxRelRms)
    {
        var x = Gaussian(64 * 256, 3, 0.02f);
        var y = RoundTrip(t, x);
        double e2 = 0, x2 = 0;
        for (int i = 0; i < x.Length; i++) { e2 += (double)(y[i] - x[i]) * (y[i] - x[i]); x2 += (double)x[i] * x[i]; }
        double rel = Math.Sqrt(e2 / x2);
        Assert.True(rel < maxRelRms, $"{t}: relative RMS error {rel:F4} >= {maxRelRms}");
        Assert.True(rel > maxRelRms / 4, $"{t}: relative RMS error {rel:F4} is implausibly small for the bit width");
    }

    [Theory]
    [InlineData(DType.Q4_K)]
    [InlineData(DType.Q5_K)]
    [InlineData(DType.Q6_K)]
    public void Degenerate_blocks_round_trip(DType t)
    {
        Assert.All(RoundTrip(t, new float[256]), v => Assert.Equal(0f, v));
        var c = RoundTrip(t, Enumerable.Repeat(0.25f, 256).ToArray());
        Assert.All(c, v => Assert.True(MathF.Abs(v - 0.25f) < 0.25f * 0.02f, $"{t}: 0.25 -> {v}"));
        var neg = Enumerable.Range(0, 256).Select(i => -0.01f * (1 + i % 7)).ToArray();
        var yn = RoundTrip(t, neg);
        for (int i = 0; i < 256; i++) Assert.True(MathF.Abs(yn[i] - neg[i]) < 0.07f * 0.01f * 7, $"{t} element {i}: {neg[i]} -> {yn[i]}");
    }
}
