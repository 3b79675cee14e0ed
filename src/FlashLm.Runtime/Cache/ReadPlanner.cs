using FlashLm.Formats.FlashLayout;
using FlashLm.Runtime.Io;

namespace FlashLm.Runtime.Cache;

/// <summary>One planned flash read: a 4096-aligned file range and where its bundles go.</summary>
/// <param name="Direct">True when the range lands straight in consecutive cache rows (no copy).</param>
/// <param name="Destination">Direct reads: the first row's address.</param>
/// <param name="Copies">Staged reads: (offset in range, row address, bundle bytes) per needed neuron.</param>
/// <param name="Rows">The cache rows this read fills.</param>
/// <param name="Fill">Reads that leave out the bundles' resident head: the rows the reader completes from DRAM (null: whole bundles).</param>
/// <param name="Segments">Scatter reads: the buffers the range lands in, in order (each bundle in its row, each gap in a scratch
/// buffer); <paramref name="Copies"/> then says where each bundle landed, and nothing is copied.</param>
internal sealed record PlannedRead(long FileOffset, int Length, bool Direct, nint Destination, Loader.FlashLoader.Copy[] Copies, int[] Rows,
    Loader.ResidentFill? Fill = null, IoSegment[]? Segments = null)
{
    /// <summary>The read lands in a staging buffer and its bundles are copied out (neither direct nor scattered).</summary>
    public bool Staged => !Direct && Segments is null;
}

/// <summary>
/// Turns a set of neurons to load into as few, as large reads as allowed: neighbouring bundles whose gap
/// is at most the coalescing gap are read as one range of at most maxRead bytes (the paper's §3.2: flash
/// serves large reads far faster than small scattered ones). A range whose neurons are consecutive and
/// whose rows are consecutive and page-aligned is read straight into the rows; any other range over page-strided bundles is
/// one scatter read (each bundle straight into its row, the gaps into <c>discard</c>); only bundles smaller than a page,
/// several to a page, go through a staging buffer and are copied. With a resident head
/// (<c>skip</c> bytes, whole pages, already in DRAM) each range starts past its first bundle's head and
/// every copy leaves the heads out; the reader fills them in (<see cref="Loader.ResidentFill"/>).
/// </summary>
internal static class ReadPlanner
{
    /// <param name="loads">(neuron, row, row address), sorted by neuron.</param>
    /// <param name="skip">Bytes at the start of every bundle not to read (a whole number of pages below the bundle's size; 0: whole bundles).</param>
    /// <param name="discard">Scratch buffer (page-aligned, at least one page) the gaps of scatter reads land in, and its size; 0: no
    /// scatter reads (such ranges are staged).</param>
    public static List<PlannedRead> Plan(FfnLayout layout, int layer, IReadOnlyList<(int Neuron, int Row, nint Address)> loads, long coalesceGap, int maxRead,
        bool splitParts = false, long skip = 0, nint discard = 0, int discardBytes = 0)
    {
        if (splitParts) return PlanParts(layout, layer, loads);
        var plans = new List<PlannedRead>();
        long stride = layout.BundleStride, bytes = layout.BundleBytes;
        if (skip < 0 || skip % AlignedBuffer.Alignment != 0 || (skip > 0 && (skip >= bytes || stride % AlignedBuffer.Alignment != 0)))
            throw new ArgumentOutOfRangeException(nameof(skip), skip, $"a resident head must be whole pages below the bundle's {bytes} bytes, on page-strided bundles");
        bool rowsAligned = stride % AlignedBuffer.Alignment == 0;
        int i = 0;
        while (i < loads.Count)
        {
            long first = layout.BundleOffset(layer, loads[i].Neuron) + skip;
            long start = AlignedBuffer.AlignDown(first);
            long end = AlignedBuffer.AlignUp(first - skip + bytes);
            int j = i + 1;
            bool direct = rowsAligned;
            bool scatter = rowsAligned && discardBytes > 0;
            int segments = 1; // a scatter read's buffers so far: one per bundle, and the gaps in discard-sized pieces
            while (j < loads.Count)
            {
                long b = layout.BundleOffset(layer, loads[j].Neuron);
                long nextEnd = AlignedBuffer.AlignUp(b + bytes);
                long gap = AlignedBuffer.AlignDown(b + skip) - end;
                if (gap > coalesceGap || nextEnd - start > maxRead) break;
                if (scatter)
                {
                    long between = b - (layout.BundleOffset(layer, loads[j - 1].Neuron) + stride);
                    int more = 1 + (int)((Math.Max(0, between) + discardBytes - 1) / discardBytes);
                    if (segments + more > DirectFile.MaxSegments) break;
                    segments += more;
                }
                bool consecutive = loads[j].Neuron == loads[j - 1].Neuron + 1 && loads[j].Address == loads[j - 1].Address + (nint)stride;
                direct &= consecutive;
                end = Math.Max(end, nextEnd);
                j++;
            }
            var rows = new int[j - i];
            for (int k = i; k < j; k++) rows[k - i] = loads[k].Row;
            Loader.ResidentFill? fill = null;
            if (skip > 0)
            {
                var neurons = new int[j - i];
                var addresses = new nint[j - i];
                var offsets = new long[j - i];
                for (int k = i; k < j; k++)
                    (neurons[k - i], addresses[k - i], offsets[k - i]) = (loads[k].Neuron, loads[k].Address, layout.BundleOffset(layer, loads[k].Neuron));
                fill = new Loader.ResidentFill(layer, neurons, addresses, offsets);
            }
            if (direct && end - start == (j - i) * stride - skip && start == first)
            {
                plans.Add(new PlannedRead(start, (int)(end - start), true, loads[i].Address + (nint)skip, [], rows, fill));
            }
            else
            {
                var copies = new Loader.FlashLoader.Copy[j - i];
                for (int k = i; k < j; k++)
                    copies[k - i] = new(layout.BundleOffset(layer, loads[k].Neuron) + skip - start, loads[k].Address + (nint)skip, (int)(bytes - skip));
                var buffers = scatter ? Scatter(layout, layer, loads, i, j, start, end, skip, discard, discardBytes) : null;
                plans.Add(new PlannedRead(start, (int)(end - start), false, 0, copies, rows, fill, buffers));
            }
            i = j;
        }
        return plans;
    }

    /// <summary>The buffers of a scatter read of [start, end) over the bundles of loads[i..j) (page-strided, page-aligned rows):
    /// each bundle's bytes in its row (the first from its resident head on), each gap in the discard buffer.</summary>
    private static IoSegment[] Scatter(FfnLayout layout, int layer, IReadOnlyList<(int Neuron, int Row, nint Address)> loads, int i, int j,
        long start, long end, long skip, nint discard, int discardBytes)
    {
        var segments = new List<IoSegment>(2 * (j - i));
        long cursor = start;
        for (int k = i; k < j; k++)
        {
            long b = layout.BundleOffset(layer, loads[k].Neuron);
            for (long gap = b - cursor; gap > 0; gap -= discardBytes)
                segments.Add(new IoSegment(discard, Math.Min(gap, discardBytes)));
            cursor = Math.Max(cursor, b);
            long until = Math.Min(b + layout.BundleStride, end);
            segments.Add(new IoSegment(loads[k].Address + (nint)(cursor - b), until - cursor));
            cursor = until;
        }
        return [.. segments];
    }

    /// <summary>
    /// One read per part of each bundle (gate row, up row, down column read separately), as if the layout stored the
    /// projections apart: the paper's ablation before row-column bundling. Same bytes, parts-times the reads.
    /// </summary>
    private static List<PlannedRead> PlanParts(FfnLayout layout, int layer, IReadOnlyList<(int Neuron, int Row, nint Address)> loads)
    {
        var plans = new List<PlannedRead>(loads.Count * layout.Parts.Count);
        foreach (var (neuron, row, address) in loads)
        {
            long bundle = layout.BundleOffset(layer, neuron);
            foreach (var part in layout.Parts)
            {
                long first = bundle + part.Offset, bytes = part.Bytes;
                long start = AlignedBuffer.AlignDown(first), end = AlignedBuffer.AlignUp(first + bytes);
                nint destination = address + (nint)part.Offset;
                if (start == first && end - start == bytes && destination % AlignedBuffer.Alignment == 0)
                    plans.Add(new PlannedRead(start, (int)bytes, true, destination, [], [row]));
                else
                    plans.Add(new PlannedRead(start, (int)(end - start), false, 0, [new(first - start, destination, (int)bytes)], [row]));
            }
        }
        return plans;
    }
}
