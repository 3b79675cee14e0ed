using FlashLm.Formats.FlashLayout;
using FlashLm.Runtime.Io;

namespace FlashLm.Runtime.Cache;

/// <summary>One planned flash read: a 4096-aligned file range and where its bundles go.</summary>
/// <param name="Direct">True when the range lands straight in consecutive cache rows (no copy).</param>
/// <param name="Destination">Direct reads: the first row's address.</param>
/// <param name="Copies">Staged reads: (offset in range, row address, bundle bytes) per needed neuron.</param>
/// <param name="Rows">The cache rows this read fills.</param>
internal sealed record PlannedRead(long FileOffset, int Length, bool Direct, nint Destination, Loader.FlashLoader.Copy[] Copies, int[] Rows);

/// <summary>
/// Turns a set of neurons to load into as few, as large reads as allowed: neighbouring bundles whose gap
/// is at most the coalescing gap are read as one range of at most maxRead bytes (the paper's §3.2: flash
/// serves large reads far faster than small scattered ones). A range whose neurons are consecutive and
/// whose rows are consecutive and page-aligned is read straight into the rows.
/// </summary>
internal static class ReadPlanner
{
    /// <param name="loads">(neuron, row, row address), sorted by neuron.</param>
    public static List<PlannedRead> Plan(FfnLayout layout, int layer, IReadOnlyList<(int Neuron, int Row, nint Address)> loads, long coalesceGap, int maxRead,
        bool splitParts = false)
    {
        if (splitParts) return PlanParts(layout, layer, loads);
        var plans = new List<PlannedRead>();
        long stride = layout.BundleStride, bytes = layout.BundleBytes;
        bool rowsAligned = stride % AlignedBuffer.Alignment == 0;
        int i = 0;
        while (i < loads.Count)
        {
            long first = layout.BundleOffset(layer, loads[i].Neuron);
            long start = AlignedBuffer.AlignDown(first);
            long end = AlignedBuffer.AlignUp(first + bytes);
            int j = i + 1;
            bool direct = rowsAligned;
            while (j < loads.Count)
            {
                long b = layout.BundleOffset(layer, loads[j].Neuron);
                long nextEnd = AlignedBuffer.AlignUp(b + bytes);
                long gap = AlignedBuffer.AlignDown(b) - end;
                if (gap > coalesceGap || nextEnd - start > maxRead) break;
                bool consecutive = loads[j].Neuron == loads[j - 1].Neuron + 1 && loads[j].Address == loads[j - 1].Address + (nint)stride;
                direct &= consecutive;
                end = Math.Max(end, nextEnd);
                j++;
            }
            var rows = new int[j - i];
            for (int k = i; k < j; k++) rows[k - i] = loads[k].Row;
            if (direct && end - start == (j - i) * stride && start == first)
            {
                plans.Add(new PlannedRead(start, (int)(end - start), true, loads[i].Address, [], rows));
            }
            else
            {
                var copies = new Loader.FlashLoader.Copy[j - i];
                for (int k = i; k < j; k++)
                    copies[k - i] = new(layout.BundleOffset(layer, loads[k].Neuron) - start, loads[k].Address, (int)bytes);
                plans.Add(new PlannedRead(start, (int)(end - start), false, 0, copies, rows));
            }
            i = j;
        }
        return plans;
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
