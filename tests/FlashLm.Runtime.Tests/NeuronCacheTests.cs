using FlashLm.Runtime.Cache;
using Xunit;

namespace FlashLm.Tests.Runtime;

/// <summary>The per-layer row matrix on its own: rows that never move, holes, pins, eviction order.</summary>
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
        c.Pin(3); // a read into the last row is in flight
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
    public void Deleting_a_row_moves_nothing_and_the_next_append_fills_the_hole()
    {
        using var c = new NeuronCache(0, neurons: 10, capacity: 4, Stride);
        for (int n = 0; n < 4; n++) Fill(c, c.Append(n, token: n), (byte)(n + 1));
        Assert.True(c.Drop(1));
        Assert.Equal(4, c.Rows);                   // a hole at row 1; nothing copied
        Assert.Equal(3, c.RowOf(3));
        Assert.Equal(4, First(c, 3));
        Assert.Equal(3, First(c, 2));
        Assert.False(c.Contains(1));
        Assert.Equal(-1, c.NeuronAt(1));
        Assert.Equal(1, c.Append(9, 5));           // the hole first, not a new row at the end
        Assert.Equal(4, c.Rows);
    }

    /// <summary>The least recently used selection (by value counts) against a plain sort, oldest first then by row: few distinct
    /// last uses (token steps, the usual case) and many (its fallback), with pins and the acquire's own neurons left alone.</summary>
    [Theory]
    [InlineData(4, 1)]
    [InlineData(6, 2)]
    [InlineData(200, 3)]
    public void Least_recent_eviction_drops_exactly_what_a_sort_would(int distinctUses, int seed)
    {
        var rnd = new Random(seed);
        for (int round = 0; round < 50; round++)
        {
            const int neurons = 300, capacity = 120;
            using var c = new NeuronCache(0, neurons, capacity, Stride);
            var chosen = Enumerable.Range(0, neurons).OrderBy(_ => rnd.Next()).Take(capacity).ToArray();
            foreach (var n in chosen) c.Append(n, token: rnd.Next(distinctUses));
            for (int k = 0; k < 10; k++) c.Drop(chosen[rnd.Next(capacity)]); // some holes
            var stamp = new int[neurons];
            foreach (var n in chosen) if (rnd.Next(8) == 0) stamp[n] = 7;   // the acquire's own neurons
            for (int r = 0; r < c.Rows; r++) if (c.NeuronAt(r) >= 0 && rnd.Next(10) == 0) c.Pin(r);
            long protectFrom = distinctUses - rnd.Next(2);
            var expected = Enumerable.Range(0, c.Rows)
                .Where(r => c.NeuronAt(r) is var n && n >= 0 && !c.IsPinned(r) && c.LastUsed(n) < protectFrom && stamp[n] != 7)
                .OrderBy(r => c.LastUsed(c.NeuronAt(r))).ThenBy(r => r)
                .Select(c.NeuronAt).ToList();
            int want = rnd.Next(1, capacity);
            var before = Enumerable.Range(0, neurons).Where(c.Contains).ToHashSet();
            int evicted = c.EvictLeastRecent(want, protectFrom, stamp, 7);
            var gone = before.Where(n => !c.Contains(n)).Order().ToArray();
            Assert.Equal(Math.Min(want, expected.Count), evicted);
            Assert.Equal(expected.Take(want).Order().ToArray(), gone);
        }
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
