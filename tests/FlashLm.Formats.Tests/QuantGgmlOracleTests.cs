using System.Diagnostics;
using System.IO.Hashing;
using System.Runtime.InteropServices;
using FlashLm.Formats;
using Xunit;
using Xunit.Abstractions;

namespace FlashLm.Tests;

/// <summary>A fact that needs ggml itself: FLASHLM_GGML_ORACLE names a program built from ggml's C sources (see below).</summary>
public sealed class RequiresGgmlOracleFactAttribute : FactAttribute
{
    public RequiresGgmlOracleFactAttribute()
    {
        if (QuantGgmlOracleTests.Oracle is null)
            Skip = "FLASHLM_GGML_ORACLE is not set: it names a small driver linked against ggml's ggml-quants.c and ggml-cpu/quants.c (built with -ffp-contract=off); the pinned hashes in QuantGgmlGoldenTests cover the same inputs";
    }
}

/// <summary>
/// Our (de)quantizers against ggml's own code, byte for byte. The oracle is run as
/// <c>oracle deq|q TYPE n in.bin out.bin</c>: deq reads blocks and writes F32 (dequantize_row_*), q reads F32 and writes
/// blocks (quantize_row_*_ref). The inputs come from <see cref="QuantGolden"/>, so the hashes printed here are the ones
/// <see cref="QuantGgmlGoldenTests"/> pins.
/// </summary>
public class QuantGgmlOracleTests(ITestOutputHelper output)
{
    internal static string? Oracle => Environment.GetEnvironmentVariable("FLASHLM_GGML_ORACLE") is { Length: > 0 } p && File.Exists(p) ? p : null;

    private static byte[] Run(string op, DType t, int n, byte[] input)
    {
        string dir = Path.Combine(Path.GetTempPath(), "flashlm-oracle-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            string inPath = Path.Combine(dir, "in.bin"), outPath = Path.Combine(dir, "out.bin");
            File.WriteAllBytes(inPath, input);
            using var p = Process.Start(Oracle!, [op, t.ToString(), n.ToString(), inPath, outPath])!;
            p.WaitForExit();
            Assert.Equal(0, p.ExitCode);
            return File.ReadAllBytes(outPath);
        }
        finally { Directory.Delete(dir, true); }
    }

    [RequiresGgmlOracleFact]
    public void Dequantizers_match_ggml_bit_for_bit()
    {
        foreach (var t in QuantGolden.DequantTypes)
        {
            var (blocks, n) = QuantGolden.Blocks(t);
            var ours = new float[n];
            Dequant.ToF32(t, blocks, ours);
            var theirs = MemoryMarshal.Cast<byte, float>(Run("deq", t, n, blocks)).ToArray();
            int diff = 0;
            for (int i = 0; i < n; i++) if (BitConverter.SingleToInt32Bits(ours[i]) != BitConverter.SingleToInt32Bits(theirs[i])) diff++;
            output.WriteLine($"deq {t}: {diff} of {n} differ; ggml hash {QuantGolden.Hash(MemoryMarshal.AsBytes(theirs.AsSpan()))}");
            Assert.Equal(0, diff);
        }
    }

    [RequiresGgmlOracleFact]
    public void Quantizers_match_ggml_byte_for_byte()
    {
        foreach (var t in QuantGolden.QuantTypes)
        {
            var x = QuantGolden.Input(t);
            var ours = new byte[DTypeInfo.ByteCount(t, x.Length)];
            Dequant.Quantize(t, x, ours);
            var theirs = Run("q", t, x.Length, MemoryMarshal.AsBytes(x.AsSpan()).ToArray());
            int diff = 0;
            for (int i = 0; i < ours.Length; i++) if (ours[i] != theirs[i]) diff++;
            output.WriteLine($"q {t}: {diff} of {ours.Length} bytes differ; ggml hash {QuantGolden.Hash(theirs)}");
            Assert.Equal(0, diff);
        }
    }
}

/// <summary>Seeded inputs shared by the oracle tests and the pinned hashes.</summary>
internal static class QuantGolden
{
    public static readonly DType[] DequantTypes =
        [DType.Q4_0, DType.Q4_1, DType.Q5_0, DType.Q5_1, DType.Q8_0, DType.Q2_K, DType.Q3_K, DType.Q4_K, DType.Q5_K, DType.Q6_K, DType.Q8_K];

    public static readonly DType[] QuantTypes = [DType.Q8_0, DType.Q8_1, DType.Q8_K, DType.Q4_K, DType.Q5_K, DType.Q6_K];

    public static string Hash(ReadOnlySpan<byte> b) => Convert.ToHexString(XxHash64.Hash(b));

    /// <summary>16 random blocks (QuantFormatTests.RandomBlocks) of <paramref name="t"/>.</summary>
    public static (byte[] Blocks, int N) Blocks(DType t) => (QuantFormatTests.RandomBlocks(t, 16, 1000 + (int)t), 16 * DTypeInfo.BlockElements(t));

    /// <summary>
    /// 2048 values in stretches of 256 that exercise the searches: Gaussian-ish weights, an all-zero stretch, tiny
    /// values (below ggml's 1e-15 group threshold), a constant positive stretch, one outlier, all-negative values and
    /// large values.
    /// </summary>
    public static float[] Input(DType t)
    {
        var r = new Random(77 + (int)t);
        var x = new float[2048];
        float Gauss() => (float)(Math.Sqrt(-2 * Math.Log(1 - r.NextDouble())) * Math.Cos(2 * Math.PI * r.NextDouble()));
        for (int i = 0; i < 256; i++) x[i] = 0.02f * Gauss();
        // 256..511 stay zero
        for (int i = 512; i < 768; i++) x[i] = 1e-17f * Gauss();
        for (int i = 768; i < 1024; i++) x[i] = 0.25f;
        for (int i = 1024; i < 1280; i++) x[i] = 0.01f * Gauss();
        x[1100] = 3f;
        for (int i = 1280; i < 1536; i++) x[i] = -MathF.Abs(0.1f * Gauss()) - 0.05f;
        for (int i = 1536; i < 2048; i++) x[i] = 40f * Gauss();
        return x;
    }
}

/// <summary>
/// ggml's own output for the <see cref="QuantGolden"/> inputs, pinned as hashes (printed by
/// <see cref="QuantGgmlOracleTests"/> from ggml at d99724f, ggml-quants.c built with gcc -O2 -ffp-contract=off).
/// </summary>
public class QuantGgmlGoldenTests
{
    [Theory]
    [InlineData(DType.Q4_0, "E38F6E382FB3469C")]
    [InlineData(DType.Q4_1, "D880A6251C9D18F1")]
    [InlineData(DType.Q5_0, "0B293D86E736E485")]
    [InlineData(DType.Q5_1, "E37145D5C3E4575C")]
    [InlineData(DType.Q8_0, "C87E29CA50FF5174")]
    [InlineData(DType.Q2_K, "58C95C6F157BBC5F")]
    [InlineData(DType.Q3_K, "9140FC92A710772C")]
    [InlineData(DType.Q4_K, "AE3C462F9DAE15A5")]
    [InlineData(DType.Q5_K, "0C279F5610825BC7")]
    [InlineData(DType.Q6_K, "14518FDB744F36D8")]
    [InlineData(DType.Q8_K, "509E8D7C1A0A3273")]
    public void Dequantization_equals_ggmls(DType t, string ggmlHash)
    {
        var (blocks, n) = QuantGolden.Blocks(t);
        var y = new float[n];
        Dequant.ToF32(t, blocks, y);
        Assert.Equal(ggmlHash, QuantGolden.Hash(MemoryMarshal.AsBytes(y.AsSpan())));
    }

    [Theory]
    [InlineData(DType.Q8_0, "471F5B99BB535745")]
    [InlineData(DType.Q8_1, "7AF39D7FD3541B35")]
    [InlineData(DType.Q8_K, "34EBD4CA77DCA022")]
    [InlineData(DType.Q4_K, "F73348CCB5AC0B44")]
    [InlineData(DType.Q5_K, "5B472D7B7EE2F45B")]
    [InlineData(DType.Q6_K, "37131E27A8CB0D65")]
    public void Quantization_equals_ggmls_reference(DType t, string ggmlHash)
    {
        var x = QuantGolden.Input(t);
        var q = new byte[DTypeInfo.ByteCount(t, x.Length)];
        Dequant.Quantize(t, x, q);
        Assert.Equal(ggmlHash, QuantGolden.Hash(q));
    }
}
