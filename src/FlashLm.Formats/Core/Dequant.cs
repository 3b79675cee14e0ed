using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace FlashLm.Formats;

/// <summary>Widening of stored element types to F32 (done on load).</summary>
public static class Dequant
{
    /// <summary>BF16 (the top 16 bits of an IEEE float) to F32.</summary>
    public static void Bf16ToF32(ReadOnlySpan<byte> src, Span<float> dst)
    {
        var s = MemoryMarshal.Cast<byte, ushort>(src);
        var d = MemoryMarshal.Cast<float, uint>(dst);
        for (int i = 0; i < d.Length; i++) d[i] = (uint)s[i] << 16;
    }

    /// <summary>F32 to BF16 with round-to-nearest-even (used by writers).</summary>
    public static ushort F32ToBf16(float f)
    {
        uint u = BitConverter.SingleToUInt32Bits(f);
        if (float.IsNaN(f)) return 0x7FC0;
        uint rounding = 0x7FFF + ((u >> 16) & 1);
        return (ushort)((u + rounding) >> 16);
    }

    /// <summary>GGML Q8_0: each block of 32 values is an F16 scale d followed by 32 int8 q; x = d * q.</summary>
    public static void Q8_0ToF32(ReadOnlySpan<byte> src, Span<float> dst)
    {
        int blocks = dst.Length / 32;
        for (int b = 0; b < blocks; b++)
        {
            var block = src.Slice(b * 34, 34);
            float d = (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(block));
            var q = MemoryMarshal.Cast<byte, sbyte>(block[2..]);
            var o = dst.Slice(b * 32, 32);
            for (int i = 0; i < 32; i++) o[i] = d * q[i];
        }
    }

    /// <summary>Quantises F32 to GGML Q8_0 (d = max|x| / 127, q = round(x / d)), as ggml does.</summary>
    public static void F32ToQ8_0(ReadOnlySpan<float> src, Span<byte> dst)
    {
        int blocks = src.Length / 32;
        for (int b = 0; b < blocks; b++)
        {
            var x = src.Slice(b * 32, 32);
            float amax = 0;
            foreach (var v in x) amax = MathF.Max(amax, MathF.Abs(v));
            float d = amax / 127f;
            float id = d != 0 ? 1f / d : 0f;
            var block = dst.Slice(b * 34, 34);
            BinaryPrimitives.WriteUInt16LittleEndian(block, BitConverter.HalfToUInt16Bits((Half)d));
            for (int i = 0; i < 32; i++) block[2 + i] = (byte)(sbyte)MathF.Round(x[i] * id, MidpointRounding.AwayFromZero); // as ggml roundf
        }
    }
}
