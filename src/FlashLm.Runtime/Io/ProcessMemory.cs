using System.Globalization;

namespace FlashLm.Runtime.Io;

/// <summary>The process's memory as the kernel sees it (/proc/self/status on Linux).</summary>
public static class ProcessMemory
{
    /// <summary>Resident set size now (VmRSS); the managed heap's committed bytes where /proc is not there.</summary>
    public static long ResidentBytes() => Status("VmRSS:") ?? GC.GetGCMemoryInfo().TotalCommittedBytes;

    /// <summary>The peak resident set so far (VmHWM); null where /proc is not there.</summary>
    public static long? PeakResidentBytes() => Status("VmHWM:");

    private static long? Status(string field)
    {
        if (!OperatingSystem.IsLinux() || !File.Exists("/proc/self/status")) return null;
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith(field, StringComparison.Ordinal))
                return long.Parse(line[field.Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024;
        return null;
    }
}
