using FlashLm.Formats.FlashLayout;
using FlashLm.Models;
using FlashLm.Runtime.Io;

namespace FlashLm.Runtime.Loader;

/// <summary>
/// The bundle part gate-resident selection already holds in DRAM (Llama: each layer's gate rows; OPT: up rows), in the layout's
/// own type, byte for byte what the bundles store. When that part leads the bundle, reads skip its page-aligned head
/// (<see cref="Skip"/> bytes) and the reader copies the resident bytes into the cache row, so every row is a whole bundle again
/// and is checked against ffn.sums as one.
/// </summary>
internal sealed class ResidentPart
{
    private readonly Matrix[] _rows;   // (layers) hidden x (the part's elements), RowBytes per neuron
    private readonly int _bytes;

    /// <summary>Bytes at the start of each bundle a read may leave out: the resident part rounded down to whole pages.</summary>
    public long Skip { get; }

    private ResidentPart(Matrix[] rows, int bytes, long skip)
    {
        _rows = rows;
        _bytes = bytes;
        Skip = skip;
    }

    /// <summary>
    /// The resident part for <paramref name="layout"/>, or null when skipping saves nothing: the part does not lead the bundle,
    /// is under a page, the bundles are not page-strided, or the matrices do not hold that part's bytes row for row.
    /// </summary>
    public static ResidentPart? For(FfnLayout layout, string part, Matrix[] rows)
    {
        var p = layout.Part(part);
        if (p is null || p.Offset != 0 || layout.BundleStride % AlignedBuffer.Alignment != 0) return null;
        long skip = AlignedBuffer.AlignDown(p.Bytes);
        if (skip == 0 || skip >= layout.BundleBytes || rows.Length != layout.Layers) return null;
        foreach (var m in rows)
            if (m.Rows != layout.Neurons || m.RowBytes != p.Bytes || m.DType != p.DType) return null;
        return new ResidentPart(rows, (int)p.Bytes, skip);
    }

    /// <summary>Copies neuron <paramref name="neuron"/>'s resident part of layer <paramref name="layer"/> to the start of the row at <paramref name="row"/>.</summary>
    public unsafe void Fill(int layer, int neuron, nint row) =>
        _rows[layer].Storage.Slice(neuron * _bytes, _bytes).CopyTo(new Span<byte>((void*)row, _bytes));
}

/// <summary>The rows a read without their resident head fills: after the read, each gets the resident part and is checked whole.</summary>
/// <param name="BundleOffsets">Each neuron's bundle offset in ffn.bin (for the checksum and error messages).</param>
public sealed record ResidentFill(int Layer, int[] Neurons, nint[] Rows, long[] BundleOffsets);
