using FlashLm.Formats.Llama2c;

namespace FlashLm.Formats;

/// <summary>Opens a model in any supported format, choosing the reader from what the path holds.</summary>
public static class ModelLoader
{
    /// <param name="path">A llama2.c .bin, a GGUF file, a Hugging Face folder or a flash-layout folder.</param>
    /// <param name="tokenizerPath">llama2.c only: the tokenizer .bin (default: tokenizer.bin beside the model).</param>
    public static ModelSource Open(string path, string? tokenizerPath = null)
    {
        if (Directory.Exists(path))
        {
            bool hf = File.Exists(System.IO.Path.Combine(path, "config.json"));
            // A manifest.json that does not parse still means a flash layout (unless config.json says Hugging Face):
            // opening it reports the JSON error and where it is, rather than "not a model folder".
            if (!hf ? File.Exists(ManifestPath(path)) : FlashLayout.FlashLayoutModel.IsLayoutFolder(path))
                return new FlashLayout.FlashLayoutModel(path);
            if (hf) return new HuggingFace.HfModel(path);
            throw new ModelFormatException(path, "is a folder, but neither a flash layout (manifest.json) nor a Hugging Face model (config.json)");
        }
        if (!File.Exists(path)) throw new ModelFormatException(path, "no such file or folder");
        if (Magic(path, 4).AsSpan().SequenceEqual("GGUF"u8)) return new Gguf.GgufModel(path);
        return new Llama2cModel(path, tokenizerPath ?? System.IO.Path.Combine(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!, "tokenizer.bin"));
    }

    /// <summary>
    /// Checks that <paramref name="path"/> is a flash-layout folder, or says precisely why not: "no such file or
    /// folder"; the manifest.json's own error (invalid JSON with its line and byte, wrong format or version); or,
    /// for a model that is not a layout, that <paramref name="need"/> needs one and how to make it (<paramref name="hint"/>).
    /// </summary>
    public static void RequireLayoutFolder(string path, string need, string hint)
    {
        if (!Directory.Exists(path) && !File.Exists(path)) throw new ModelFormatException(path, "no such file or folder");
        if (FlashLayout.FlashLayoutModel.IsLayoutFolder(path)) return;
        if (Directory.Exists(path) && File.Exists(ManifestPath(path)))
            FlashLayout.ManifestJson.Load(ManifestPath(path)); // throws the manifest's own error
        throw new ModelFormatException(path, $"{need} needs a flash-layout folder; {hint}");
    }

    private static string ManifestPath(string folder) => System.IO.Path.Combine(folder, FlashLayout.FlashLayoutRules.ManifestFile);

    /// <summary>Reads the first bytes of a file (fewer if it is shorter).</summary>
    internal static byte[] Magic(string path, int count)
    {
        using var f = File.OpenRead(path);
        var b = new byte[count];
        int n = f.ReadAtLeast(b, count, throwOnEndOfStream: false);
        return b[..n];
    }
}
