using System.Globalization;

namespace FlashLm.Runtime.Io;

/// <summary>The process's memory as the kernel sees it (/proc/self/status on Linux).</summary>
public static class ProcessMemory
{
    /// <summary>Resident set size now (VmRSS); the managed heap's committed bytes where /proc is not there.</summary>
    public static long ResidentBytes() => Status("VmRSS:") ?? GC.GetGCMemoryInfo().TotalCommittedBytes;

    /// <summary>The peak resident set so far (VmHWM); null where /proc is not there.</summary>
    public static long? PeakResidentBytes() => Status("VmHWM:");

    /// <summary>
    /// Bounds this process's managed heap at <paramref name="bytes"/> (GCHeapHardLimit, re-read through GC.RefreshMemoryLimit):
    /// the GC then collects garbage before the heap grows past it instead of letting it grow toward its default, 75 % of a
    /// container's limit, which counts nothing of the native memory beside it. Process-wide: only a process that owns its
    /// memory budget (the CLI, a bench worker) should call it.
    /// </summary>
    public static void LimitManagedHeap(long bytes)
    {
        AppContext.SetData("GCHeapHardLimit", (ulong)bytes);
        GC.RefreshMemoryLimit();
    }

    /// <summary>The managed heap's committed bytes now.</summary>
    public static long ManagedCommittedBytes() => GC.GetGCMemoryInfo().TotalCommittedBytes;

    private static long? Status(string field)
    {
        if (!OperatingSystem.IsLinux() || !File.Exists("/proc/self/status")) return null;
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith(field, StringComparison.Ordinal))
                return long.Parse(line[field.Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024;
        return null;
    }
}
