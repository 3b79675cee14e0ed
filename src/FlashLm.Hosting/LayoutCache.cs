using System.Security.Cryptography;
using System.Text;
using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;

namespace FlashLm.Hosting;

/// <summary>Turns any model path into a flash-layout folder, converting once and reusing the result.</summary>
public static class LayoutCache
{
    /// <summary>$FLASHLM_CACHE, else $XDG_CACHE_HOME/flashlm, else ~/.cache/flashlm; then "layouts".</summary>
    public static string DefaultFolder()
    {
        string root = Environment.GetEnvironmentVariable("FLASHLM_CACHE") is { Length: > 0 } own ? own
            : Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } xdg ? Path.Combine(xdg, "flashlm")
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "flashlm");
        return Path.Combine(root, "layouts");
    }

    /// <summary>
    /// <paramref name="modelPath"/> itself when it is a flash layout; otherwise its layout under
    /// <paramref name="cacheFolder"/>, keyed by full path, size and modification time (a changed file is converted again).
    /// The conversion is written under a temporary name and renamed into place, so a crash leaves no half layout.
    /// </summary>
    public static string Resolve(string modelPath, string? cacheFolder)
    {
        if (FlashLayoutModel.IsLayoutFolder(modelPath)) return modelPath;
        var full = Path.GetFullPath(modelPath);
        if (!File.Exists(full) && !Directory.Exists(full)) throw new FileNotFoundException($"model not found: {full}", full);
        var stamp = File.Exists(full) ? $"{new FileInfo(full).Length}:{File.GetLastWriteTimeUtc(full).Ticks}" : Directory.GetLastWriteTimeUtc(full).Ticks.ToString();
        var hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes($"{full}|{stamp}")))[..16];
        var folder = Path.Combine(cacheFolder ?? DefaultFolder(), $"{Path.GetFileName(full.TrimEnd(Path.DirectorySeparatorChar))}-{hash}");
        if (FlashLayoutModel.IsCurrentLayoutFolder(folder)) return folder; // an older converter's output is converted again
        Directory.CreateDirectory(Path.GetDirectoryName(folder)!);
        var temp = $"{folder}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";
        try
        {
            using (var source = ModelLoader.Open(full)) FlashLayoutWriter.Convert(source, temp);
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true); // a stale, incomplete one
            Directory.Move(temp, folder);
        }
        catch (IOException) when (FlashLayoutModel.IsCurrentLayoutFolder(folder))
        {
            // another process converted the same model first
        }
        finally
        {
            if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
        }
        return folder;
    }
}
