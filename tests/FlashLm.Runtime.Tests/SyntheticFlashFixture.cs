using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Formats.Synth;

namespace FlashLm.Tests.Runtime;

/// <summary>
/// The synthetic "tiny" Llama (dim 128, 352 neurons, 4 layers, f32: 1536-byte bundles) written as GGUF and converted to
/// the flash layout once per test class, so actor and runtime tests need nothing from ../shared.
/// </summary>
public sealed class SyntheticFlashFixture : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly Lazy<FlashLayoutModel> _layout;
    private readonly string _folder;

    public SyntheticFlashFixture()
    {
        _folder = _dir.File("tiny-flash");
        _layout = new Lazy<FlashLayoutModel>(() =>
        {
            var gguf = _dir.File("tiny.gguf");
            SyntheticModel.WriteGguf(gguf, SyntheticShapes.Get("tiny"), DType.F32, seed: 5);
            using (var source = ModelLoader.Open(gguf)) FlashLayoutWriter.Convert(source, _folder);
            return new FlashLayoutModel(_folder);
        });
    }

    /// <summary>The flash-layout folder (converted on first use).</summary>
    public string Folder
    {
        get
        {
            _ = _layout.Value;
            return _folder;
        }
    }

    public FlashLayoutModel Layout => _layout.Value;

    public FfnLayout Ffn => _layout.Value.Ffn;

    public void Dispose()
    {
        if (_layout.IsValueCreated) _layout.Value.Dispose();
        _dir.Dispose();
    }
}
