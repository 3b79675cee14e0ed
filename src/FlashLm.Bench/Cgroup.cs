using System.Globalization;

namespace FlashLm.Bench;

/// <summary>cgroup v1 memory groups (root only) and the page cache, for honest DRAM caps in benchmarks.</summary>
internal static class Cgroup
{
    private const string Root = "/sys/fs/cgroup/memory";

    public static bool Available => OperatingSystem.IsLinux() && Environment.UserName == "root" && Directory.Exists(Root);

    /// <summary>A new memory group limited to <paramref name="bytes"/> (page cache included); returns its folder.</summary>
    public static string Create(long bytes)
    {
        var dir = Path.Combine(Root, $"flashlm-bench-{Environment.ProcessId}-{Guid.NewGuid():N}"[..40]);
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "memory.limit_in_bytes"), bytes.ToString(CultureInfo.InvariantCulture));
        return dir;
    }

    /// <summary>The group's peak usage in bytes (memory.max_usage_in_bytes) and how often it hit its limit (memory.failcnt).</summary>
    public static (long PeakBytes, long LimitHits) Peak(string dir) =>
        (long.Parse(File.ReadAllText(Path.Combine(dir, "memory.max_usage_in_bytes")).Trim(), CultureInfo.InvariantCulture),
         long.Parse(File.ReadAllText(Path.Combine(dir, "memory.failcnt")).Trim(), CultureInfo.InvariantCulture));

    public static void Remove(string dir)
    {
        try
        {
            Directory.Delete(dir);
        }
        catch (IOException)
        {
        }
    }

    /// <summary>Drops the page cache (root only; silently skipped otherwise).</summary>
    public static void DropPageCache()
    {
        if (!OperatingSystem.IsLinux() || Environment.UserName != "root") return;
        try
        {
            File.WriteAllText("/proc/sys/vm/drop_caches", "3");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }
}
