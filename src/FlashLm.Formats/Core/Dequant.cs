using System.Buffers.Binary;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using FlashLm.Formats.Quant;

namespace FlashLm.Formats;

/// <summary>
/// Widening of stored element types to F32 (done on load) and quantization of F32 to block formats. The block
/// formats follow ggml bit for bit: <see cref="ToF32"/> gives the same floats as ggml's dequantize_row_*, and
/// <see cref="Quantize"/> the same bytes as quantize_row_q8_0_ref / q8_1_ref / q8_K_ref (the K re-quantizers: see
/// <see cref="Quantize"/>). Scalar code: the kernels' fast paths live in FlashLm.Kernels.
/// </summary>
public static class Dequant
{
    /// <summary>
    /// dst = the values stored in <paramref name="src"/> as <paramref name="type"/> (every type). dst.Length must be
    /// a whole number of blocks and src must hold exactly <see cref="DTypeInfo.ByteCount"/> bytes for it.
    /// </summary>
    public static unsafe void ToF32(DType type, ReadOnlySpan<byte> src, Span<float> dst)
    {
        long need = DTypeInfo.ByteCount(type, dst.Length);
        if (src.Length != need)
            throw new ArgumentException($"{type}: {dst.Length} values take {need} bytes, got {src.Length}", nameof(src));
        switch (type)
        {
            case DType.F32: MemoryMarshal.Cast<byte, float>(src).CopyTo(dst); return;
            case DType.F16: TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(src), dst); return;
            case DType.BF16: Bf16ToF32(src, dst); return;
        }
        int blocks = dst.Length / DTypeInfo.BlockElements(type);
        fixed (byte* s = src)
        fixed (float* d = dst)
        {
            switch (type)
            {
                case DType.Q8_0: BlockDequant.Q8_0(s, d, blocks); break;
                case DType.Q4_0: BlockDequant.Q4_0(s, d, blocks); break;
                case DType.Q4_1: BlockDequant.Q4_1(s, d, blocks); break;
                case DType.Q5_0: BlockDequant.Q5_0(s, d, blocks); break;
                case DType.Q5_1: BlockDequant.Q5_1(s, d, blocks); break;
                case DType.Q8_1: BlockDequant.Q8_1(s, d, blocks); break;
                case DType.Q2_K: BlockDequant.Q2_K(s, d, blocks); break;
                case DType.Q3_K: BlockDequant.Q3_K(s, d, blocks); break;
                case DType.Q4_K: BlockDequant.Q4_K(s, d, blocks); break;
                case DType.Q5_K: BlockDequant.Q5_K(s, d, blocks); break;
                case DType.Q6_K: BlockDequant.Q6_K(s, d, blocks); break;
                case DType.Q8_K: BlockDequant.Q8_K(s, d, blocks); break;
                default: throw new ArgumentOutOfRangeException(nameof(type), type, "unknown dtype");
            }
        }
    }

    /// <summary>
    /// Quantizes <paramref name="src"/> into <paramref name="dst"/> as <paramref name="type"/>: Q8_0, Q8_1 and Q8_K
    /// bit-exact with ggml's quantize_row_q8_0_ref / q8_1_ref / q8_K_ref; Q4_K, Q5_K and Q6_K with the search of
    /// ggml's quantize_row_q4_K_ref / q5_K_ref / q6_K_ref (make_qkx2_quants, make_qx_quants); F32, F16 and BF16
    /// (round to nearest even) too. src.Length must be a whole number of blocks and dst exactly its byte count.
    /// </summary>
    public static unsafe void Quantize(DType type, ReadOnlySpan<float> src, Span<byte> dst)
    {
        long need = DTypeInfo.ByteCount(type, src.Length);
        if (dst.Length != need)
            throw new ArgumentException($"{type}: {src.Length} values take {need} bytes, got a buffer of {dst.Length}", nameof(dst));
        switch (type)
        {
            case DType.F32: MemoryMarshal.AsBytes(src).CopyTo(dst); return;
            case DType.F16: TensorPrimitives.ConvertToHalf(src, MemoryMarshal.Cast<byte, Half>(dst)); return;
            case DType.BF16:
                var u = MemoryMarshal.Cast<byte, ushort>(dst);
                for (int i = 0; i < src.Length; i++) u[i] = F32ToBf16(src[i]);
                return;
        }
        int blocks = src.Length / DTypeInfo.BlockElements(type);
        fixed (float* s = src)
        fixed (byte* d = dst)
        {
            switch (type)
            {
                case DType.Q8_0: BlockQuant.Q8_0(s, d, blocks); break;
                case DType.Q8_1: BlockQuant.Q8_1(s, d, blocks); break;
                case DType.Q8_K: BlockQuant.Q8_K(s, d, blocks); break;
                case DType.Q4_K: KQuant.Q4_K(s, d, blocks); break;
                case DType.Q5_K: KQuant.Q5_K(s, d, blocks); break;
                case DType.Q6_K: KQuant.Q6_K(s, d, blocks); break;
                default:
                    throw new NotSupportedException($"quantizing to {type} is not supported (supported: F32, F16, BF16, Q8_0, Q8_1, Q8_K, Q4_K, Q5_K, Q6_K)");
            }
        }
    }

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
