using System.Runtime.Intrinsics.X86;

namespace FlashLm.Kernels;

/// <summary>What the CPU is and which of its features the kernels can use: for benchmark reports, so a figure names its CPU.</summary>
public static class CpuInfo
{
    private static readonly Lazy<(string? Model, HashSet<string> Flags)> Proc = new(ReadProc);

    /// <summary>/proc/cpuinfo's first "model name" and "flags" lines, read once (empty where there is none).</summary>
    private static (string? Model, HashSet<string> Flags) ReadProc()
    {
        string? model = null;
        var flags = new HashSet<string>(StringComparer.Ordinal);
        try
        {
            if (!File.Exists("/proc/cpuinfo")) return (null, flags);
            foreach (var line in File.ReadLines("/proc/cpuinfo"))
            {
                if (model is null && line.StartsWith("model name", StringComparison.Ordinal) && line.IndexOf(':') is > 0 and var at)
                    model = line[(at + 1)..].Trim();
                else if (flags.Count == 0 && line.StartsWith("flags", StringComparison.Ordinal) && line.IndexOf(':') is > 0 and var f)
                    flags.UnionWith(line[(f + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries));
                if (model is not null && flags.Count > 0) break;
            }
        }
        catch (IOException)
        {
        }
        return (model, flags);
    }

    /// <summary>The CPU's model name (Linux /proc/cpuinfo), or the architecture where it is not known.</summary>
    public static string Model => Proc.Value.Model ?? System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture.ToString();

    /// <summary>The SIMD features that choose kernel paths, as the runtime sees them (AVX512-FP16 from /proc/cpuinfo, which .NET does
    /// not report), and the path the kernels run.</summary>
    public static string Features
    {
        get
        {
            var cpu = Proc.Value.Flags;
            var f = new List<string>();
            if (Avx2.IsSupported) f.Add("AVX2");
            if (Fma.IsSupported) f.Add("FMA");
            if (Avx512F.IsSupported) f.Add("AVX-512F");
            if (Avx512BW.IsSupported) f.Add("AVX-512BW");
            if (Avx512Vbmi.IsSupported) f.Add("AVX-512VBMI");
            if (AvxVnni.IsSupported) f.Add("AVX-VNNI");
            if (cpu.Contains("avx512_vnni")) f.Add("AVX-512VNNI");
            if (cpu.Contains("f16c")) f.Add("F16C");
            if (cpu.Contains("avx512_fp16")) f.Add("AVX512-FP16");
            return $"{string.Join(" ", f)}; kernel path {QuantKernels.Path}";
        }
    }

    /// <summary>"model (features; kernel path)".</summary>
    public static string Describe() => $"{Model} ({Features})";
}
