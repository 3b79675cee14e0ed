namespace FlashLm.Runtime.Cache;

/// <summary>
/// Which neurons of each layer the cache pins (PowerInfer's hot/cold split): the most frequently active ones by the
/// calibration's frequencies, up to a count per layer chosen from the cache rows (flashlm.pin).
/// </summary>
internal static class HotNeurons
{
    /// <summary>Rows of each layer that always stay with the window cache when it cannot hold the whole layer (the planner's minimum).</summary>
    public const int MinWindowRows = 16;

    /// <summary>
    /// The neurons to pin per layer, most frequent first (ties: lower index first). <paramref name="share"/> null (auto): per
    /// layer the largest H with H + sum over the other neurons of 1 - (1 - f)^span &lt;= rows - the demand reserve, i.e. the
    /// window's expected union of the unpinned neurons over <paramref name="span"/> tokens still fits beside the pinned rows;
    /// a share: that share of <paramref name="rows"/>. Either way at most rows - <see cref="MinWindowRows"/> (at most every
    /// neuron), so the window cache always keeps rows of its own.
    /// </summary>
    /// <param name="span">Tokens the window keeps (window x sessions; at least 1).</param>
    public static int[][] Choose(float[][] frequencies, int rows, int neurons, int span, double? share)
    {
        var hot = new int[frequencies.Length][];
        int cap = Math.Max(0, Math.Min(neurons, rows - MinWindowRows));
        for (int l = 0; l < frequencies.Length; l++)
        {
            var f = frequencies[l];
            if (f.Length != neurons) throw new ArgumentException($"layer {l} has {f.Length} frequencies for {neurons} neurons");
            var order = Enumerable.Range(0, neurons).ToArray();
            // Most frequent first; a stable sort keeps ties in neuron order.
            var keys = f.Select(x => -x).ToArray();
            Array.Sort(keys, order);
            StableTies(keys, order);
            int h = share is { } s ? (int)Math.Floor(s * rows) : Auto(f, order, rows, neurons, Math.Max(1, span));
            h = Math.Clamp(h, 0, cap);
            hot[l] = order[..h];
        }
        return hot;
    }

    private static int Auto(float[] f, int[] order, int rows, int neurons, int span)
    {
        // need(H) = H + cold(H), cold(H) = sum over order[H..] of 1 - (1 - f)^span; need grows with H by (1 - f)^span >= 0.
        double cold = 0;
        var union = new double[neurons];
        for (int i = 0; i < neurons; i++) cold += union[i] = 1 - Math.Pow(1 - Math.Clamp(f[order[i]], 0, 1), span);
        double target = rows >= neurons ? rows : rows - CacheManager.ReserveFor(rows);
        int h = 0;
        double need = cold;
        while (h < neurons && need + 1 - union[h] <= target)
        {
            need += 1 - union[h];
            h++;
        }
        return h;
    }

    /// <summary>Array.Sort is not stable: put equal keys' neurons back in index order.</summary>
    private static void StableTies(float[] keys, int[] order)
    {
        int i = 0;
        while (i < keys.Length)
        {
            int j = i + 1;
            while (j < keys.Length && keys[j] == keys[i]) j++;
            if (j - i > 1) Array.Sort(order, i, j - i);
            i = j;
        }
    }
}
