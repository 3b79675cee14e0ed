using System.Buffers.Binary;
using System.Runtime.InteropServices;
using FlashLm.Formats;
using FlashLm.Kernels;
using Xunit;

namespace FlashLm.Tests;

/// <summary>A theory for one SIMD path: skipped, with the reason, on a CPU without it.</summary>
public sealed class SimdTheoryAttribute : TheoryAttribute
{
    public SimdTheoryAttribute(SimdPath path)
    {
        if (!QuantKernels.IsSupported(path))
            Skip = $"this CPU has no {path} path (Vector512.IsHardwareAccelerated and AVX-512 BW for V512, AVX2 for V256); the scalar path is tested instead";
    }
}

/// <summary>Seeded weight rows and inputs for the quantized kernels.</summary>
internal static class QuantTestData
{
    public static readonly DType[] WeightTypes =
        [DType.F32, DType.F16, DType.BF16, DType.Q4_0, DType.Q4_1, DType.Q5_0, DType.Q5_1, DType.Q8_0, DType.Q2_K, DType.Q3_K, DType.Q4_K, DType.Q5_K, DType.Q6_K];

    private static void PutHalf(byte[] b, int at, float v) => BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(at), BitConverter.HalfToUInt16Bits((Half)v));

    /// <summary>
    /// Rows of random blocks: random quant bits, finite F16 scales (every fourth block an edge scale: 0, negative,
    /// the smallest subnormal, 65504, and, for types with a min, a negative min). F32/F16/BF16: values in [-1, 1).
    /// </summary>
    public static byte[] RandomRow(DType t, int n, int seed)
    {
        var r = new Random(seed);
        if (!DTypeInfo.IsQuantized(t))
        {
            var f = new float[n];
            for (int i = 0; i < n; i++) f[i] = (float)(r.NextDouble() * 2 - 1);
            var bytes = new byte[DTypeInfo.ByteCount(t, n)];
            Dequant.Quantize(t, f, bytes);
            return bytes;
        }
        int bb = DTypeInfo.BlockBytes(t), blocks = n / DTypeInfo.BlockElements(t);
        var b = new byte[blocks * bb];
        r.NextBytes(b);
        float[] edges = [0f, -0.75f, 5.9604645e-8f, 65504f, -3e-3f];
        for (int k = 0; k < blocks; k++)
        {
            int o = k * bb;
            float Scale() => k % 4 == 3 ? edges[k / 4 % edges.Length] : (float)(r.NextDouble() * 2 - 1) * 0.05f;
            switch (t)
            {
                case DType.Q4_0 or DType.Q5_0 or DType.Q8_0: PutHalf(b, o, Scale()); break;
                case DType.Q4_1 or DType.Q5_1 or DType.Q4_K or DType.Q5_K: PutHalf(b, o, Scale()); PutHalf(b, o + 2, Scale()); break;
                case DType.Q2_K: PutHalf(b, o + 80, Scale()); PutHalf(b, o + 82, Scale()); break;
                case DType.Q3_K: PutHalf(b, o + 108, Scale()); break;
                case DType.Q6_K: PutHalf(b, o + 208, Scale()); break;
            }
        }
        return b;
    }

    /// <summary>A block row whose every quant byte is <paramref name="fill"/> (all max or all min quants), scales kept finite.</summary>
    public static byte[] FilledRow(DType t, int n, byte fill, float scale)
    {
        var b = RandomRow(t, n, 1);
        int bb = DTypeInfo.BlockBytes(t);
        var tmp = new byte[bb];
        for (int o = 0; o < b.Length; o += bb)
        {
            Array.Fill(tmp, fill);
            switch (t)
            {
                case DType.Q4_0 or DType.Q5_0 or DType.Q8_0: PutHalf(tmp, 0, scale); break;
                case DType.Q4_1 or DType.Q5_1 or DType.Q4_K or DType.Q5_K: PutHalf(tmp, 0, scale); PutHalf(tmp, 2, -scale); break;
                case DType.Q2_K: PutHalf(tmp, 80, scale); PutHalf(tmp, 82, scale); break;
                case DType.Q3_K: PutHalf(tmp, 108, scale); break;
                case DType.Q6_K: PutHalf(tmp, 208, scale); break;
            }
            tmp.CopyTo(b, o);
        }
        return b;
    }

    /// <summary>Inputs in [-1, 1) with one all-zero stretch and one large (x 1000) stretch.</summary>
    public static float[] RandomInput(int n, int seed)
    {
        var r = new Random(seed);
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float)(r.NextDouble() * 2 - 1);
        if (n >= 1024)
        {
            x.AsSpan(256, 256).Clear();
            for (int i = 512; i < 768; i++) x[i] *= 1000;
        }
        return x;
    }

    public static byte[] Quantize(DType weight, float[] x)
    {
        var xq = new byte[QuantKernels.ActivationBytes(weight, x.Length)];
        QuantKernels.QuantizeActivation(weight, x, xq);
        return xq;
    }

    public static float[] ToF32(DType t, byte[] b, int n)
    {
        var y = new float[n];
        Dequant.ToF32(t, b, y);
        return y;
    }

    /// <summary>
    /// sum(dequant(w) * dequant(xq)) in double, plus, for Q8_1 inputs, the difference between the block sum ggml
    /// stores (s = F16(d sum(q)) with the unrounded d) and the one dequantization implies (F16(d) sum(q)), times the
    /// weight block's min: ggml's Q4_1/Q5_1 dots use s. Returns the reference and sum |w x| (the error scale).
    /// </summary>
    public static (double Value, double AbsSum) Reference(DType weight, byte[] w, byte[] xq, int n)
    {
        var wf = ToF32(weight, w, n);
        var act = DTypeInfo.ActivationType(weight);
        var xf = ToF32(act, xq, n);
        double s = 0, abs = 0;
        for (int i = 0; i < n; i++)
        {
            s += (double)wf[i] * xf[i];
            abs += Math.Abs((double)wf[i] * xf[i]);
        }
        if (act == DType.Q8_1)
        {
            int wb = DTypeInfo.BlockBytes(weight);
            for (int b = 0; b < n / 32; b++)
            {
                double m = (double)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(w.AsSpan(b * wb + 2)));
                double d = (double)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(xq.AsSpan(b * 36)));
                double stored = (double)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(xq.AsSpan(b * 36 + 2)));
                int sum = 0;
                for (int j = 0; j < 32; j++) sum += (sbyte)xq[b * 36 + 4 + j];
                s += m * (stored - d * sum);
                abs += Math.Abs(m * stored);
            }
        }
        return (s, abs);
    }

    public static float[] AsFloats(byte[] b) => MemoryMarshal.Cast<byte, float>(b).ToArray();
}
