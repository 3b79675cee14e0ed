using FlashLm.Runtime.Io;

namespace FlashLm.Runtime.Cache;

/// <summary>
/// The DRAM cache of one layer's FFN neurons (the paper's §3.3): one preallocated, 4096-aligned matrix
/// of bundle rows, a live row count, and the neuron &lt;-&gt; row maps. Nothing is reallocated after construction,
/// and rows never move: a deleted neuron's row becomes a hole, the next append fills a hole before it grows the end,
/// and a hole at the end is trimmed (rows [0, <see cref="Rows"/>) hold Count live rows and some holes). The paper moves
/// the last row into the freed one to keep the matrix dense; here compute and reads address every row on its own, so a
/// move would only copy a bundle (24 KiB per evicted neuron of an F16 7B model, about as many bytes as the token reads).
/// Rows can be pinned (a read into them or a compute over them is in flight): a pinned row is never evicted or reused
/// until unpinned. Not thread-safe: its owner (the cache manager) serialises access.
/// </summary>
internal sealed unsafe class NeuronCache : IDisposable
{
    private readonly AlignedBuffer _memory;   // (capacity, stride) bytes
    private readonly int[] _rowOf;            // (neurons) row or -1
    private readonly int[] _neuronAt;         // (capacity) neuron in each live row
    private readonly int[] _pins;             // (capacity) in-flight users of each row
    private readonly long[] _lastUsed;        // (neurons) last token index that used the neuron
    private readonly (long Used, int Row, int Neuron)[] _candidates; // (capacity) eviction scratch
    private readonly Stack<int> _holes;       // freed rows below the end (may hold rows trimmed since: checked on use)
    private readonly bool[] _queued;          // (capacity) row is in _holes

    public int Layer { get; }
    public int Neurons { get; }
    public int Capacity { get; }
    public long Stride { get; }
    /// <summary>Live (cached) rows.</summary>
    public int Count { get; private set; }

    /// <summary>Rows in use or holes: live rows are among [0, Rows); a row in that range with <see cref="NeuronAt"/> -1 is a hole.</summary>
    public int Rows { get; private set; }

    /// <summary>Rows with at least one pin.</summary>
    public int PinnedRows { get; private set; }

    /// <summary>Bytes of DRAM this cache holds (its row matrix and maps).</summary>
    public long Bytes => _memory.Length + 4L * (_rowOf.Length + _neuronAt.Length + _pins.Length) + 8L * _lastUsed.Length + 16L * _candidates.Length + 5L * Capacity;

    public static long BytesFor(int neurons, int capacity, long stride) =>
        AlignedBuffer.AlignUp((long)capacity * stride) + 4L * (neurons + 2L * capacity) + 8L * neurons + 16L * capacity + 5L * capacity; // + holes stack and flags

    public NeuronCache(int layer, int neurons, int capacity, long stride)
    {
        if (capacity <= 0) throw new ArgumentOutOfRangeException(nameof(capacity), "a layer cache needs at least one row");
        Layer = layer;
        Neurons = neurons;
        Capacity = Math.Min(capacity, neurons);
        Stride = stride;
        _memory = new AlignedBuffer((long)Capacity * stride);
        _rowOf = new int[neurons];
        Array.Fill(_rowOf, -1);
        _neuronAt = new int[Capacity];
        _pins = new int[Capacity];
        _candidates = new (long, int, int)[Capacity];
        _holes = new Stack<int>(Capacity);
        _queued = new bool[Capacity];
        Array.Fill(_neuronAt, -1);
        _lastUsed = new long[neurons];
        Array.Fill(_lastUsed, long.MinValue);
    }

    public byte* RowPointer(int row) =>
        (uint)row < (uint)Rows && _neuronAt[row] >= 0 ? _memory.Pointer + row * Stride
            : throw new ArgumentOutOfRangeException(nameof(row), $"layer {Layer}: row {row} is not live ({Count} live of {Rows} rows)");

    public int RowOf(int neuron) => _rowOf[neuron];
    /// <summary>The neuron in <paramref name="row"/>, or -1 for a hole or a row past <see cref="Rows"/>.</summary>
    public int NeuronAt(int row) => _neuronAt[row];
    public bool Contains(int neuron) => _rowOf[neuron] >= 0;
    public bool IsPinned(int row) => _pins[row] > 0;
    public long LastUsed(int neuron) => _lastUsed[neuron];

    public int PinsOf(int row) => _pins[row];

    public void Pin(int row)
    {
        if (_neuronAt[row] < 0) throw new InvalidOperationException($"layer {Layer}: row {row} is not live and cannot be pinned");
        if (_pins[row]++ == 0) PinnedRows++;
    }

    public void Unpin(int row)
    {
        if (_pins[row] <= 0) throw new InvalidOperationException($"layer {Layer}: row {row} is not pinned");
        if (--_pins[row] == 0) PinnedRows--;
    }

    /// <summary>Marks the neurons as used by token <paramref name="token"/> (only cached ones are tracked).</summary>
    public void Touch(ReadOnlySpan<int> neurons, long token)
    {
        foreach (var n in neurons) _lastUsed[n] = Math.Max(_lastUsed[n], token);
    }

    /// <summary>Appends a row for <paramref name="neuron"/>; returns the row, or -1 when the matrix is full.</summary>
    public int Append(int neuron, long token)
    {
        // token is the last use to record: a prefetch records the token its prediction came from.
        if (_rowOf[neuron] >= 0) throw new InvalidOperationException($"layer {Layer}: neuron {neuron} is already cached in row {_rowOf[neuron]}");
        if (Count == Capacity) return -1;
        int row = -1;
        while (_holes.Count > 0)
        {
            int h = _holes.Pop();
            _queued[h] = false;
            if (h < Rows && _neuronAt[h] < 0)
            {
                row = h;
                break;
            }
        }
        if (row < 0) row = Rows++;
        Count++;
        _rowOf[neuron] = row;
        _neuronAt[row] = neuron;
        _lastUsed[neuron] = Math.Max(_lastUsed[neuron], token);
        return row;
    }

    /// <summary>
    /// Drops every unpinned neuron last used at or before <paramref name="oldestKept"/> - 1 (i.e. outside the
    /// window). Returns how many were dropped.
    /// </summary>
    public int EvictOlderThan(long oldestKept)
    {
        int evicted = 0;
        for (int row = Rows - 1; row >= 0; row--)
        {
            if (row >= Rows) continue;
            int n = _neuronAt[row];
            if (n >= 0 && _lastUsed[n] < oldestKept && _pins[row] == 0)
            {
                Remove(row);
                evicted++;
            }
        }
        return evicted;
    }

    /// <summary>
    /// Frees up to <paramref name="rows"/> rows by dropping the least recently used neurons that are
    /// unpinned, last used before <paramref name="protectFrom"/>, and not marked in
    /// <paramref name="stamp"/> with <paramref name="stampValue"/> (the set being acquired). Returns how many were dropped.
    /// </summary>
    public int EvictLeastRecent(int rows, long protectFrom, int[] stamp, int stampValue)
    {
        if (rows <= 0) return 0;
        // One scan for the candidates (in row order), then a selection instead of a sort: last uses are token steps, so the
        // candidates share a handful of values. Count them per value, evict every candidate older than the value where the
        // count reaches rows, and the first ones in row order at that value. Many distinct values (a long-lived cache
        // with a wide window) fall back to sorting. This runs on every acquire that misses under a tight budget.
        const int fewValues = 16;
        Span<long> values = stackalloc long[fewValues];
        Span<int> counts = stackalloc int[fewValues];
        int distinct = 0, found = 0;
        bool few = true;
        for (int row = 0; row < Rows; row++)
        {
            int n = _neuronAt[row];
            if (n < 0) continue;
            long used = _lastUsed[n];
            if (_pins[row] != 0 || used >= protectFrom || stamp[n] == stampValue) continue;
            _candidates[found++] = (used, row, n);
            if (!few) continue;
            int v = 0;
            while (v < distinct && values[v] != used) v++;
            if (v < distinct) counts[v]++;
            else if (distinct < fewValues)
            {
                values[distinct] = used;
                counts[distinct++] = 1;
            }
            else few = false;
        }
        var candidates = _candidates.AsSpan(0, found);
        if (!few)
        {
            candidates.Sort(OldestFirst);
            int dropped = Math.Min(rows, found);
            foreach (var c in candidates[..dropped]) Remove(c.Row);
            return dropped;
        }
        // The boundary: the oldest values whose candidates all go, and how many of the next value's (lowest rows first).
        long boundary = long.MaxValue;
        int atBoundary = 0, left = rows;
        while (left > 0)
        {
            int next = -1;
            for (int v = 0; v < distinct; v++)
                if (counts[v] > 0 && (next < 0 || values[v] < values[next])) next = v;
            if (next < 0) break; // fewer candidates than rows
            if (counts[next] > left)
            {
                boundary = values[next];
                atBoundary = left;
                break;
            }
            left -= counts[next];
            counts[next] = 0;
            boundary = values[next] + 1; // everything at this value goes; look further
        }
        int evicted = 0;
        foreach (var c in candidates)
        {
            bool go = c.Used < boundary || (c.Used == boundary && atBoundary-- > 0);
            if (!go) continue;
            Remove(c.Row);
            evicted++;
        }
        return evicted;
    }

    private static readonly Comparison<(long Used, int Row, int Neuron)> OldestFirst =
        (a, b) => a.Used != b.Used ? a.Used.CompareTo(b.Used) : a.Row.CompareTo(b.Row);

    /// <summary>Drops <paramref name="neuron"/> if it is cached and its row can be freed; true when it is gone.</summary>
    public bool Drop(int neuron)
    {
        int row = _rowOf[neuron];
        if (row < 0) return true;
        if (_pins[row] != 0) return false;
        Remove(row);
        return true;
    }

    /// <summary>Frees an unpinned live row: it becomes a hole for the next append (trimmed when it is the last).</summary>
    private void Remove(int row)
    {
        int gone = _neuronAt[row];
        _rowOf[gone] = -1;
        _neuronAt[row] = -1;
        Count--;
        if (row == Rows - 1)
        {
            // Trim: the end never is a hole (stale entries for trimmed rows stay in the stack and are skipped on use).
            while (Rows > 0 && _neuronAt[Rows - 1] < 0) Rows--;
            return;
        }
        if (!_queued[row])
        {
            _queued[row] = true;
            _holes.Push(row);
        }
    }

    public void Dispose() => _memory.Dispose();
}
