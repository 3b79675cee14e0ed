using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Formats.Synth;

namespace FlashLm.Tests;

/// <summary>
/// Synthetic models for tests that need "some model" rather than the real one: random weights of a fixed seed, the
/// synthetic vocabulary, written into the test's own temporary folder (never a shared cache, so test projects running in
/// parallel do not race on one file).
/// </summary>
public static class SyntheticModels
{
    /// <summary>
    /// stories260K's shape (dim 64, hidden 172, 5 layers, 8 heads, 4 KV heads, vocabulary 512, context 512), so that
    /// tests written against its layer and neuron counts keep their meaning, with synthetic weights.
    /// </summary>
    public static ModelConfig StoriesShape { get; } = new()
    {
        Architecture = Architecture.Llama, Dim = 64, HiddenDim = 172, Layers = 5, Heads = 8, KvHeads = 4, VocabSize = 512, ContextLength = 512,
    };

    /// <summary>Writes a GGUF of <paramref name="config"/> (F32) at <paramref name="path"/>.</summary>
    public static string WriteGguf(string path, ModelConfig config, ulong seed = SyntheticModel.DefaultSeed)
    {
        SyntheticModel.WriteGguf(path, config, DType.F32, seed);
        return path;
    }

    /// <summary>Writes a GGUF of <paramref name="config"/> beside <paramref name="folder"/> and converts it to the flash layout there.</summary>
    public static string WriteLayout(string folder, ModelConfig config, ulong seed = SyntheticModel.DefaultSeed)
    {
        var gguf = WriteGguf(folder + ".gguf", config, seed);
        using var source = ModelLoader.Open(gguf);
        FlashLayoutWriter.Convert(source, folder);
        return folder;
    }
}

/// <summary>A synthetic model of stories260K's shape in flash layout, with its GGUF, made once per test class.</summary>
public sealed class SyntheticLayoutFixture : IDisposable
{
    private readonly TempDir _dir = new();

    public SyntheticLayoutFixture() => Folder = SyntheticModels.WriteLayout(_dir.File("synthetic.flash"), SyntheticModels.StoriesShape);

    /// <summary>The flash-layout folder.</summary>
    public string Folder { get; }

    /// <summary>The GGUF the layout was converted from (llama.cpp and the dense path run on it).</summary>
    public string Gguf => Folder + ".gguf";

    public void Dispose() => _dir.Dispose();
}
