using FlashLm.Formats;
using FlashLm.Formats.Synth;

namespace FlashLm.Cli.Commands;

/// <summary>
/// Opens the model named on the command line, or the built-in default when none is given: the synthetic
/// "tiny" Llama (F32, fixed seed) as GGUF in the user's cache folder, written on first use and reused after.
/// </summary>
public static class DefaultModel
{
    public const string Shape = "tiny";

    /// <summary>Bump when the synthetic weights or vocabulary change, so stale cached files are not reused.</summary>
    private const int Version = 1;

    public static string FileName => $"synthetic-{Shape}-f32-seed{SyntheticModel.DefaultSeed}-v{Version}.gguf";

    public static ModelSource Open(string? model, string? tokenizer)
    {
        if (model is not null) return ModelLoader.Open(model, tokenizer);
        if (tokenizer is not null) throw new ArgumentException("--tokenizer needs --model (the built-in model carries its own tokenizer)");
        return ModelLoader.Open(EnsureCached());
    }

    /// <summary>$FLASHLM_CACHE, else $XDG_CACHE_HOME/flashlm, else ~/.cache/flashlm.</summary>
    public static string CacheFolder()
    {
        if (Environment.GetEnvironmentVariable("FLASHLM_CACHE") is { Length: > 0 } own) return own;
        if (Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } xdg) return Path.Combine(xdg, "flashlm");
        return Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "flashlm");
    }

    /// <summary>
    /// The default model's path, writing it first if it is missing or does not open. The file is written
    /// under a unique temporary name and renamed into place, so a crash or a concurrent run never leaves a
    /// half-written model under the real name.
    /// </summary>
    public static string EnsureCached()
    {
        var folder = CacheFolder();
        var path = Path.Combine(folder, FileName);
        if (IsValid(path)) return path;
        Directory.CreateDirectory(folder);
        var temp = path + $".{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";
        try
        {
            Console.Error.WriteLine($"flashlm: writing the built-in synthetic model to {path}");
            SyntheticModel.WriteGguf(temp, SyntheticShapes.Get(Shape), DType.F32, SyntheticModel.DefaultSeed);
            File.Move(temp, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
        return path;
    }

    private static bool IsValid(string path)
    {
        if (!File.Exists(path)) return false;
        try
        {
            using var m = ModelLoader.Open(path);
            return m.Config == SyntheticShapes.Get(Shape) with { NormEps = m.Config.NormEps, RopeTheta = m.Config.RopeTheta };
        }
        catch (ModelFormatException)
        {
            return false;
        }
    }

    /// <summary>
    /// The flash-layout folder to run in flash mode: the given one (it must already be converted), or the
    /// built-in model converted once into the cache beside its GGUF.
    /// </summary>
    public static string LayoutFolder(string? model, string? tokenizer)
    {
        if (model is null)
        {
            var gguf = EnsureCached();
            var folder = Path.ChangeExtension(gguf, ".flash");
            if (!Formats.FlashLayout.FlashLayoutModel.IsCurrentLayoutFolder(folder))
            {
                Console.Error.WriteLine($"flashlm: converting the built-in model to the flash layout in {folder}");
                using var source = ModelLoader.Open(gguf);
                Formats.FlashLayout.FlashLayoutWriter.Convert(source, folder);
            }
            return folder;
        }
        ModelLoader.RequireLayoutFolder(model, "--mode flash",
            $"convert it first: flashlm convert {model}{(tokenizer is null ? "" : " --tokenizer " + tokenizer)} --out DIR");
        return model;
    }
}
