using System.Runtime.InteropServices;
using Akka.Configuration;
using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Runtime.Config;

namespace FlashLm.Tests.Runtime;

/// <summary>
/// A synthetic model of stories260K's shape (SyntheticModels.StoriesShape: 5 layers of 172 neurons, dim 64) converted to
/// the flash layout once per test class, with ffn.bin's bytes for comparisons. The actor tests need some model of a known
/// shape, not the real weights, so they run without ../shared.
/// </summary>
public sealed class StoriesFlashFixture : IDisposable
{
    private readonly Lazy<Loaded> _loaded = new(Load);

    private sealed record Loaded(TempDir Dir, string Folder, ModelSource Source, FlashLayoutModel Layout, byte[] FfnBytes);

    private static Loaded Load()
    {
        var dir = new TempDir();
        var folder = SyntheticModels.WriteLayout(dir.File("stories-shaped.flash"), SyntheticModels.StoriesShape);
        var source = ModelLoader.Open(folder + ".gguf");
        var layout = new FlashLayoutModel(folder);
        return new Loaded(dir, folder, source, layout, File.ReadAllBytes(layout.Ffn.FilePath));
    }

    /// <summary>The flash-layout folder.</summary>
    public string Folder => _loaded.Value.Folder;

    /// <summary>The GGUF the layout was converted from (dense reference for the FFN maths).</summary>
    public ModelSource Source => _loaded.Value.Source;

    public FlashLayoutModel Layout => _loaded.Value.Layout;

    public FfnLayout Ffn => _loaded.Value.Layout.Ffn;

    /// <summary>The whole of ffn.bin, as written by the converter.</summary>
    public byte[] FfnBytes => _loaded.Value.FfnBytes;

    /// <summary>The bytes of one neuron's bundle (gate, up, down parts; BundleBytes long), from ffn.bin.</summary>
    public byte[] Bundle(int layer, int neuron) =>
        FfnBytes.AsSpan(checked((int)Ffn.BundleOffset(layer, neuron)), (int)Ffn.BundleBytes).ToArray();

    /// <summary>File bytes [offset, offset + length); past the end reads as zero, as DirectFile does.</summary>
    public byte[] FileRange(long offset, int length)
    {
        var r = new byte[length];
        if (offset < FfnBytes.Length) FfnBytes.AsSpan((int)offset, (int)Math.Min(length, FfnBytes.Length - offset)).CopyTo(r);
        return r;
    }

    public void Dispose()
    {
        if (!_loaded.IsValueCreated) return;
        var l = _loaded.Value;
        l.Layout.Dispose();
        l.Source.Dispose();
        l.Dir.Dispose();
    }
}

internal static class RuntimeTestConfig
{
    /// <summary>
    /// The runtime's reference.conf (so "flashlm.io-dispatcher" exists) with a smaller I/O pool for a 2-core
    /// machine and Akka's test logger instead of stderr (supervisor restarts are expected in these tests).
    /// </summary>
    public static Config Hocon { get; } = ConfigurationFactory.ParseString("""
        flashlm.io-dispatcher.dedicated-thread-pool.thread-count = 4
        akka.loggers = ["Akka.TestKit.TestEventListener, Akka.TestKit"]
        akka.loglevel = WARNING
        """).WithFallback(RuntimeSettings.Reference);

    public const string IoDispatcher = "flashlm.io-dispatcher";

    /// <summary>A copy of native memory (rows, buffers) as managed bytes.</summary>
    public static byte[] Copy(nint address, int length)
    {
        var r = new byte[length];
        Marshal.Copy(address, r, 0, length);
        return r;
    }
}
