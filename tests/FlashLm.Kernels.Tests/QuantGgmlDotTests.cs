using System.Diagnostics;
using FlashLm.Formats;
using FlashLm.Kernels;
using Xunit;
using Xunit.Abstractions;
using static FlashLm.Tests.QuantTestData;

namespace FlashLm.Tests;

/// <summary>A fact that needs ggml itself (FLASHLM_GGML_ORACLE; see FlashLm.Formats.Tests' QuantGgmlOracleTests).</summary>
public sealed class RequiresGgmlOracleFactAttribute : FactAttribute
{
    public RequiresGgmlOracleFactAttribute()
    {
        if (QuantGgmlDotTests.Oracle is null)
            Skip = "FLASHLM_GGML_ORACLE is not set: it names a small driver linked against ggml's ggml-quants.c and ggml-cpu/quants.c (generic vec_dot); the double-precision references in QuantKernelTests cover the same property";
    }
}

/// <summary>
/// The scalar Dot against ggml's generic vec_dot_&lt;type&gt;_q8_* (run as <c>oracle dot TYPE n in.bin out.bin rowBytes</c>,
/// in.bin = row then quantized input): identical for the 32-value types, whose blocks ggml sums in sequence as we do;
/// within float summation order for the K types (ggml keeps eight partial sums).
/// </summary>
public class QuantGgmlDotTests(ITestOutputHelper output)
{
    internal static string? Oracle => Environment.GetEnvironmentVariable("FLASHLM_GGML_ORACLE") is { Length: > 0 } p && File.Exists(p) ? p : null;

    private static float GgmlDot(DType t, byte[] w, byte[] xq, int n)
    {
        string dir = Path.Combine(Path.GetTempPath(), "flashlm-oracle-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            string inPath = Path.Combine(dir, "in.bin"), outPath = Path.Combine(dir, "out.bin");
            File.WriteAllBytes(inPath, [.. w, .. xq]);
            using var p = Process.Start(Oracle!, ["dot", t.ToString(), n.ToString(), inPath, outPath, w.Length.ToString()])!;
            p.WaitForExit();
            Assert.Equal(0, p.ExitCode);
            return BitConverter.ToSingle(File.ReadAllBytes(outPath));
        }
        finally { Directory.Delete(dir, true); }
    }

    [RequiresGgmlOracleFact]
    public void Scalar_dot_is_ggmls_vec_dot()
    {
        foreach (var t in WeightTypes.Where(DTypeInfo.IsQuantized))
        {
            const int n = 4096;
            var w = RandomRow(t, n, 500 + (int)t);
            var xq = Quantize(t, RandomInput(n, 501));
            float ggml = GgmlDot(t, w, xq, n);
            var (_, abs) = Reference(t, w, xq, n);
            foreach (var p in Enum.GetValues<SimdPath>().Where(QuantKernels.IsSupported))
            {
                float ours = QuantKernels.Dot(p, t, w, xq, n);
                output.WriteLine($"{t} {p}: ggml {ggml:R}, ours {ours:R}, |diff| / sum|wx| = {Math.Abs(ggml - ours) / abs:E2}");
                if (p == SimdPath.Scalar && DTypeInfo.BlockElements(t) == 32) Assert.Equal(ggml, ours);
                else Assert.True(Math.Abs(ggml - ours) <= 2e-5 * abs, $"{t} {p}: ggml {ggml}, ours {ours}");
            }
        }
    }
}
