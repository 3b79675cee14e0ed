using System.Runtime.CompilerServices;

namespace FlashLm.Kernels;

/// <summary>Shared decoding of the packed fields of ggml's blocks (the layouts are in FlashLm.Formats' DType docs).</summary>
internal static unsafe class QuantBlocks
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Half(byte* p) => (float)BitConverter.UInt16BitsToHalf(Unsafe.ReadUnaligned<ushort>(p));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Single(byte* p) => Unsafe.ReadUnaligned<float>(p);

    /// <summary>
    /// The eight 6-bit scales and eight 6-bit mins of a Q4_K/Q5_K block from its 12 packed bytes (ggml's
    /// get_scale_min_k4 for j = 0..7): groups 0-3 in the low 6 bits of bytes j (scale) and j + 4 (min); groups 4-7
    /// in the nibbles of byte j + 4 with their top two bits in the top bits of bytes j - 4 (scale) and j (min).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void ScalesMinsK4(byte* q, byte* scales, byte* mins)
    {
        for (int j = 0; j < 4; j++)
        {
            scales[j] = (byte)(q[j] & 63);
            mins[j] = (byte)(q[j + 4] & 63);
        }
        for (int j = 4; j < 8; j++)
        {
            scales[j] = (byte)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
            mins[j] = (byte)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
        }
    }

    /// <summary>Scale j (0..15) of a Q3_K block, unbiased (-32..31), from its 12 packed bytes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int ScaleQ3K(int j, byte* s)
    {
        int low = j < 8 ? s[j] & 0xF : s[j - 8] >> 4;
        int high = (s[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
        return (low | (high << 4)) - 32;
    }
}
