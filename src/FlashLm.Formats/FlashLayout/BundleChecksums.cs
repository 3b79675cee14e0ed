using System.Buffers.Binary;
using System.IO.Hashing;

namespace FlashLm.Formats.FlashLayout;

/// <summary>
/// One checksum per FFN bundle, so a flash read can be checked as it lands without hashing whole sections.
/// Stored in ffn.sums: little-endian uint64, layer-major ([layers][neurons], 8 bytes per neuron), each the
/// XxHash3 (64-bit) of the bundle's <see cref="FfnLayout.BundleBytes"/> data bytes (stride padding excluded)
/// seeded with the bundle's byte offset in ffn.bin, so a read that lands the right bytes from the wrong place
/// fails too. The manifest's ffn.bundle_checksums names the file and records its size and XxHash64.
/// </summary>
public sealed class BundleChecksums
{
    /// <summary>Algorithm tag written in the manifest.</summary>
    public const string Algorithm = "xxh3-64, seed = bundle offset in ffn.bin";
    public const string DefaultFile = "ffn.sums";

    private readonly ulong[] _sums; // [layer * neurons + neuron]

    public FfnLayout Layout { get; }
    /// <summary>Absolute path of the checksum file.</summary>
    public string FilePath { get; }

    internal BundleChecksums(FfnLayout layout, string filePath, ulong[] sums)
    {
        Layout = layout;
        FilePath = filePath;
        _sums = sums;
    }

    /// <summary>DRAM the table holds: 8 bytes per neuron.</summary>
    public long Bytes => (long)_sums.Length * sizeof(ulong);

    /// <summary>The checksum of a bundle's data bytes stored at <paramref name="fileOffset"/> in ffn.bin.</summary>
    public static ulong Compute(ReadOnlySpan<byte> bundle, long fileOffset) => XxHash3.HashToUInt64(bundle, fileOffset);

    /// <summary>The stored checksum of (layer, neuron).</summary>
    public ulong Expected(int layer, int neuron) => _sums[(long)layer * Layout.Neurons + neuron];

    /// <summary>
    /// Checks <paramref name="bundle"/> (BundleBytes long) as the bundle at <paramref name="fileOffset"/>; returns null
    /// when it matches, else a message naming ffn.bin, the layer, the neuron and the offset.
    /// </summary>
    public string? Check(ReadOnlySpan<byte> bundle, long fileOffset)
    {
        if (!Layout.TryLocate(fileOffset, out int layer, out int neuron))
            return $"{Layout.FilePath}: offset {fileOffset} is not the start of any bundle";
        ulong actual = Compute(bundle[..(int)Layout.BundleBytes], fileOffset), expected = Expected(layer, neuron);
        return actual == expected ? null : Mismatch(layer, neuron, fileOffset, actual, expected);
    }

    internal string Mismatch(int layer, int neuron, long offset, ulong actual, ulong expected) =>
        $"{Layout.FilePath}: checksum mismatch in layer {layer} neuron {neuron} (bundle at offset {offset}, {Layout.BundleBytes} bytes): " +
        $"xxh3 {FlashLayoutRules.Hex(actual)}, {System.IO.Path.GetFileName(FilePath)} says {FlashLayoutRules.Hex(expected)}; the file is corrupted or the read returned wrong data";

    /// <summary>The checksums of <paramref name="window"/>'s layers (a layer window's layout, whose layer 0 is layer
    /// <paramref name="from"/> of this one).</summary>
    internal BundleChecksums Window(FfnLayout window, int from) =>
        new(window, FilePath, _sums.AsSpan(from * Layout.Neurons, window.Layers * window.Neurons).ToArray());

    /// <summary>Bytes of the checksum file for <paramref name="layout"/>.</summary>
    public static long FileBytes(FfnLayout layout) => FileBytes(layout.Layers, layout.Neurons);

    internal static int FileBytes(int layers, int neurons) => checked(layers * neurons * sizeof(ulong));

    /// <summary>Reads and checks the checksum file (its size and XxHash64 against the manifest).</summary>
    internal static BundleChecksums Load(FfnLayout layout, string path, long bytes, ulong xxh64, string manifestPath)
    {
        long want = FileBytes(layout);
        if (bytes != want)
            throw new ModelFormatException(manifestPath, $"bundle_checksums.bytes is {bytes}; {layout.Layers} layers x {layout.Neurons} neurons x 8 = {want}", "ffn.bundle_checksums.bytes");
        long size = new FileInfo(path).Length;
        if (size != want)
            throw new ModelFormatException(path, $"model is corrupted or incomplete: {size} bytes, the manifest says {want}");
        var raw = File.ReadAllBytes(path);
        ulong actual = XxHash64.HashToUInt64(raw);
        if (actual != xxh64)
            throw new ModelFormatException(path, $"checksum mismatch: xxh64 {FlashLayoutRules.Hex(actual)}, manifest says {FlashLayoutRules.Hex(xxh64)}; the file is corrupted", "ffn.bundle_checksums", 0);
        var sums = new ulong[raw.Length / sizeof(ulong)];
        for (int i = 0; i < sums.Length; i++) sums[i] = BinaryPrimitives.ReadUInt64LittleEndian(raw.AsSpan(i * sizeof(ulong)));
        return new BundleChecksums(layout, path, sums);
    }
}
