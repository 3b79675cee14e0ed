using System.Runtime.Intrinsics.X86;

namespace FlashLm.Kernels;

/// <summary>What the CPU is and which of its features the kernels can use: for benchmark reports, so a figure names its CPU.</summary>
public static class CpuInfo
{
    /// <summary>The CPU's model name (Linux /proc/cpuinfo), or the architecture where it is not known.</summary>
    public static string Model
    {
        get
        {
            try
            {
                if (File.Exists("/proc/cpuinfo"))
                    foreach (var line in File.ReadLines("/proc/cpuinfo"))
                        if (line.StartsWith("model name", StringComparison.Ordinal) && line.IndexOf(':') is > 0 and var at)
                            return line[(at + 1)..].Trim();
            }
            catch (IOException)
            {
            }
            return System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture.ToString();
        }
    }

    /// <summary>The SIMD features that choose kernel paths, as the runtime sees them (AVX512-FP16 from /proc/cpuinfo, which .NET does
    /// not report), and the path the kernels run.</summary>
    public static string Features
    {
        get
        {
            var f = new List<string>();
            if (Avx2.IsSupported) f.Add("AVX2");
            if (Fma.IsSupported) f.Add("FMA");
            if (Avx512F.IsSupported) f.Add("AVX-512F");
            if (Avx512BW.IsSupported) f.Add("AVX-512BW");
            if (Avx512Vbmi.IsSupported) f.Add("AVX-512VBMI");
            if (AvxVnni.IsSupported) f.Add("AVX-VNNI");
            if (CpuFlag("avx512_vnni")) f.Add("AVX-512VNNI");
            if (CpuFlag("f16c")) f.Add("F16C");
            if (CpuFlag("avx512_fp16")) f.Add("AVX512-FP16");
            return $"{string.Join(" ", f)}; kernel path {QuantKernels.Path}";
        }
    }

    /// <summary>"model (features; kernel path)".</summary>
    public static string Describe() => $"{Model} ({Features})";

    private static bool CpuFlag(string flag)
    {
        try
        {
            if (!File.Exists("/proc/cpuinfo")) return false;
            foreach (var line in File.ReadLines("/proc/cpuinfo"))
                if (line.StartsWith("flags", StringComparison.Ordinal))
                    return line.Split(' ', StringSplitOptions.RemoveEmptyEntries).Contains(flag);
        }
        catch (IOException)
        {
        }
        return false;
    }
}
