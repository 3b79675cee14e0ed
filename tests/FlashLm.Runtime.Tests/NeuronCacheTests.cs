using FlashLm.Runtime.Cache;
using Xunit;

namespace FlashLm.Tests.Runtime;

/// <summary>The per-layer row matrix on its own: swap-delete, holes behind a pinned last row, pins, eviction order.</summary>
public sealed class NeuronCacheTests
{
    private const long Stride = 64;

    private static unsafe void Fill(NeuronCache c, int row, byte value) => new Span<byte>(c.RowPointer(row), (int)Stride).Fill(value);

    private static unsafe byte First(NeuronCache c, int neuron) => *c.RowPointer(c.RowOf(neuron));

    [Fact]
    public void Evicting_while_the_last_row_is_pinned_leaves_a_hole_that_the_next_append_fills()
    {
        using var c = new NeuronCache(0, neurons: 10, capacity: 4, Stride);
        for (int n = 0; n < 4; n++) Fill(c, c.Append(n, token: n), (byte)(n + 1));
        c.Pin(3); // a read into the last row is in flight: it must not move
        int[] none = new int[10];
        Assert.Equal(2, c.EvictLeastRecent(2, protectFrom: 10, none, 1)); // neurons 0 and 1, oldest first
        Assert.Equal(2, c.Count);
        Assert.Equal(4, c.Rows);                   // two holes; the pinned row stayed where it was
        Assert.Equal(3, c.RowOf(3));
        Assert.Equal(4, First(c, 3));
        Assert.Equal(3, First(c, 2));
        int a = c.Append(7, 5), b = c.Append(8, 5);
        Assert.Equal([0, 1], new[] { a, b }.Order());
        Assert.Equal(4, c.Rows);
        Assert.Equal(-1, c.Append(9, 5));          // full: four live rows
        c.Unpin(3);
        Assert.Equal(0, c.PinnedRows);
    }

    [Fact]
    public void Swap_delete_moves_the_unpinned_last_row_and_keeps_its_bytes()
    {
        using var c = new NeuronCache(0, neurons: 10, capacity: 4, Stride);
        for (int n = 0; n < 4; n++) Fill(c, c.Append(n, token: n), (byte)(n + 1));
        Assert.True(c.Drop(1));
        Assert.Equal(3, c.Rows);                   // compact: the last row moved into row 1
        Assert.Equal(1, c.RowOf(3));
        Assert.Equal(4, First(c, 3));
        Assert.False(c.Contains(1));
        Assert.Equal(-1, c.NeuronAt(3));
    }

    [Fact]
    public void A_hole_at_the_end_is_trimmed_once_the_last_row_goes()
    {
        using var c = new NeuronCache(0, neurons: 10, capacity: 4, Stride);
        for (int n = 0; n < 4; n++) c.Append(n, token: n);
        c.Pin(3);
        Assert.True(c.Drop(0));                    // hole at row 0
        Assert.False(c.Drop(3));                   // pinned: stays
        c.Unpin(3);
        Assert.True(c.Drop(3));                    // the end goes; nothing to trim before rows 1, 2
        Assert.Equal(3, c.Rows);
        Assert.True(c.Drop(2));
        Assert.True(c.Drop(1));
        Assert.Equal(0, c.Rows);                   // every hole trimmed
        Assert.Equal(0, c.Count);
        Assert.Equal(0, c.Append(5, 0));           // the stale hole entry for row 0 is usable: row 0 is free again
        Assert.Equal(1, c.Append(6, 0));
    }

    [Fact]
    public void Pinned_rows_are_never_evicted_and_the_window_keeps_recent_neurons()
    {
        using var c = new NeuronCache(0, neurons: 10, capacity: 5, Stride);
        for (int n = 0; n < 5; n++) c.Append(n, token: n);
        c.Pin(c.RowOf(0));
        Assert.Equal(2, c.EvictOlderThan(oldestKept: 3)); // 1 and 2; 0 is pinned, 3 and 4 are recent
        Assert.True(c.Contains(0));
        Assert.False(c.Contains(1));
        Assert.False(c.Contains(2));
        Assert.True(c.Contains(3) && c.Contains(4));
        Assert.Equal(1, c.PinnedRows);
        Assert.Throws<InvalidOperationException>(() => c.Unpin(c.RowOf(3)));
    }
}
