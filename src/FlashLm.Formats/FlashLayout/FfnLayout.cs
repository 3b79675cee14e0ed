using System.IO.Hashing;
using Microsoft.Win32.SafeHandles;

namespace FlashLm.Formats.FlashLayout;

/// <summary>One part of a neuron bundle: which projection, where it starts in the bundle, how many elements of which type.</summary>
/// <param name="Name">"gate", "up" or "down".</param>
/// <param name="Offset">Byte offset within the bundle.</param>
/// <param name="Elements">Element count (= dim).</param>
/// <param name="DType">Element type: the layout's F32 or F16, or in a quantized layout the gate/up rows' source type
/// (their blocks copied bit for bit) and the down column's re-quantized type.</param>
/// <param name="Bytes">Bytes of the part: <see cref="DTypeInfo.ByteCount"/>(DType, Elements).</param>
public sealed record BundlePart(string Name, long Offset, long Elements, DType DType, long Bytes);

/// <summary>
/// Where FFN neurons live in ffn.bin, for the flash runtime. Layer l's section starts at
/// <see cref="LayerOffset"/> (4096-aligned) and holds <see cref="Neurons"/> bundles, one every
/// <see cref="BundleStride"/> bytes. Bundle i holds neuron i: gate row i (Llama only), up row i and
/// down column i, each <see cref="Dim"/> elements of its part's type, at the <see cref="Parts"/> offsets;
/// the rest of the stride is zero. No bundle straddles a 4096-byte page, so a run of neighbouring
/// bundles rounded out to whole pages is one O_DIRECT read. In an F32 or F16 layout every part has the
/// layout's <see cref="DType"/> and the parts are packed; in a quantized layout (<see cref="Quantized"/>)
/// gate and up rows are the source's blocks and down is a re-quantized column, each part 16-byte aligned.
/// </summary>
public sealed class FfnLayout
{
    private readonly long[] _layerOffsets;
    private readonly ulong[] _layerHashes;

    /// <summary>Absolute path of ffn.bin.</summary>
    public string FilePath { get; }
    private readonly int _elementSize;

    /// <summary>Element type of every part (F32 or F16); in a quantized layout, the first part's type (see <see cref="BundlePart.DType"/>).</summary>
    public DType DType { get; }

    /// <summary>True when the parts are quantized (each has its own <see cref="BundlePart.DType"/>).</summary>
    public bool Quantized { get; }

    /// <summary>Bytes per element of an F32 or F16 layout; a quantized layout has none (use <see cref="BundlePart.Bytes"/>).</summary>
    public int ElementSize => Quantized
        ? throw new InvalidOperationException($"{FilePath}: the bundle parts are quantized ({string.Join(", ", Parts.Select(p => $"{p.Name} {p.DType}"))}); use each part's Bytes")
        : _elementSize;
    /// <summary>Model width: elements in each part.</summary>
    public int Dim { get; }
    /// <summary>Neurons (bundles) per layer: the FFN hidden size.</summary>
    public int Neurons { get; }
    public int Layers => _layerOffsets.Length;
    /// <summary>Bytes of data in a bundle: the end of the last part (parts * dim * element size for F32/F16).</summary>
    public long BundleBytes { get; }
    /// <summary>Distance between consecutive bundles, in bytes (see <see cref="FlashLayoutRules.BundleStride"/>).</summary>
    public long BundleStride { get; }
    public IReadOnlyList<BundlePart> Parts { get; }
    /// <summary>Bytes of one layer's section: neurons * stride.</summary>
    public long LayerBytes => Neurons * BundleStride;

    internal FfnLayout(string filePath, DType dtype, int dim, int neurons, long bundleBytes, long bundleStride,
        BundlePart[] parts, long[] layerOffsets, ulong[] layerHashes)
    {
        FilePath = filePath;
        DType = dtype;
        Quantized = parts.Any(p => DTypeInfo.IsQuantized(p.DType));
        _elementSize = Quantized ? 0 : FlashLayoutRules.ElementSize(dtype);
        Dim = dim;
        Neurons = neurons;
        BundleBytes = bundleBytes;
        BundleStride = bundleStride;
        Parts = parts;
        _layerOffsets = layerOffsets;
        _layerHashes = layerHashes;
    }

    /// <summary>The part named <paramref name="name"/> ("gate", "up", "down"), or null (OPT has no gate).</summary>
    public BundlePart? Part(string name)
    {
        foreach (var p in Parts) if (p.Name == name) return p;
        return null;
    }

    /// <summary>Byte offset in ffn.bin of layer <paramref name="layer"/>'s section (a multiple of 4096).</summary>
    public long LayerOffset(int layer) => _layerOffsets[CheckLayer(layer)];

    /// <summary>Byte offset in ffn.bin of neuron <paramref name="neuron"/>'s bundle in layer <paramref name="layer"/>.</summary>
    public long BundleOffset(int layer, int neuron)
    {
        if ((uint)neuron >= (uint)Neurons)
            throw new ArgumentOutOfRangeException(nameof(neuron), neuron, $"neuron must be in 0..{Neurons - 1}");
        return _layerOffsets[CheckLayer(layer)] + neuron * BundleStride;
    }

    /// <summary>
    /// Maps a file offset to the bundle that starts there: false when <paramref name="fileOffset"/> is not the
    /// first byte of a bundle (inside one, in padding between sections, or outside every section).
    /// </summary>
    public bool TryLocate(long fileOffset, out int layer, out int neuron)
    {
        layer = neuron = -1;
        // Sections are in ascending offset order (the manifest is validated so): the last one starting at or before the offset.
        int lo = 0, hi = _layerOffsets.Length - 1;
        while (lo < hi)
        {
            int mid = lo + (hi - lo + 1) / 2;
            if (_layerOffsets[mid] <= fileOffset) lo = mid;
            else hi = mid - 1;
        }
        long inSection = fileOffset - _layerOffsets[lo];
        if (inSection < 0 || inSection >= LayerBytes || inSection % BundleStride != 0) return false;
        layer = lo;
        neuron = (int)(inSection / BundleStride);
        return true;
    }

    /// <summary>The XxHash64 the manifest records for layer <paramref name="layer"/>'s section.</summary>
    public ulong LayerChecksum(int layer) => _layerHashes[CheckLayer(layer)];

    /// <summary>
    /// Reads layer <paramref name="layer"/>'s whole section and checks its XxHash64 against the manifest;
    /// throws <see cref="ModelFormatException"/> naming ffn.bin, the layer and the section offset on mismatch.
    /// </summary>
    public void VerifyLayer(int layer)
    {
        long offset = LayerOffset(layer);
        using var handle = File.OpenHandle(FilePath, FileMode.Open, FileAccess.Read, FileShare.Read);
        var actual = LayoutIo.Hash(handle, FilePath, offset, LayerBytes, $"ffn layer {layer}");
        if (actual != _layerHashes[layer])
            throw new ModelFormatException(FilePath,
                $"checksum mismatch in FFN layer {layer}'s section [{offset}, {offset + LayerBytes}): xxh64 {FlashLayoutRules.Hex(actual)}, manifest says {FlashLayoutRules.Hex(_layerHashes[layer])}; the file is corrupted",
                $"ffn layer {layer}", offset);
    }

    private int CheckLayer(int layer)
    {
        if ((uint)layer >= (uint)_layerOffsets.Length)
            throw new ArgumentOutOfRangeException(nameof(layer), layer, $"layer must be in 0..{_layerOffsets.Length - 1}");
        return layer;
    }
}

internal static class LayoutIo
{
    private const int ChunkBytes = 1 << 20;

    /// <summary>XxHash64 of [offset, offset + length) of <paramref name="file"/>, read in 1 MiB chunks.</summary>
    public static ulong Hash(SafeFileHandle handle, string file, long offset, long length, string what)
    {
        var hash = new XxHash64();
        var buf = new byte[(int)Math.Min(ChunkBytes, Math.Max(length, 1))];
        for (long done = 0; done < length;)
        {
            int n = (int)Math.Min(buf.Length, length - done);
            BinaryFile.ReadExactly(handle, file, offset + done, buf.AsSpan(0, n), what);
            hash.Append(buf.AsSpan(0, n));
            done += n;
        }
        return hash.GetCurrentHashAsUInt64();
    }
}
