using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Formats.Synth;

namespace FlashLm.Tests.Layout;

/// <summary>
/// A small synthetic Llama (seeded weights, its own tokenizer) converted to the flash layout in a temp folder.
/// <paramref name="wide"/>: dim 352 F32, bundles of 4224 bytes at an 8192 stride, so reads of consecutive rows go
/// straight into the cache (direct reads); otherwise the "tiny" shape in F16 (768-byte bundles: every read staged).
/// </summary>
internal sealed class SyntheticLayout : IDisposable
{
    private readonly TempDir _dir = new();

    public string Folder { get; }

    public SyntheticLayout(bool wide = true, int layers = 2)
    {
        var config = wide
            ? new ModelConfig { Architecture = Architecture.Llama, Dim = 352, HiddenDim = 192, Layers = layers, Heads = 4, KvHeads = 4, VocabSize = 512, ContextLength = 128 }
            : SyntheticShapes.Get("tiny") with { Layers = layers };
        var gguf = _dir.File("model.gguf");
        SyntheticModel.WriteGguf(gguf, config, wide ? DType.F32 : DType.F16, 7);
        Folder = _dir.File("model.flash");
        using var source = ModelLoader.Open(gguf);
        FlashLayoutWriter.Convert(source, Folder);
    }

    public string FfnPath => Path.Combine(Folder, FlashLayoutRules.FfnFile);

    /// <summary>Flips bit <paramref name="bit"/> of the byte at <paramref name="offset"/> in <paramref name="file"/>.</summary>
    public static void FlipBit(string file, long offset, int bit = 0)
    {
        using var f = File.Open(file, FileMode.Open, FileAccess.ReadWrite);
        f.Position = offset;
        int b = f.ReadByte();
        f.Position = offset;
        f.WriteByte((byte)(b ^ (1 << bit)));
    }

    public void Dispose() => _dir.Dispose();
}
