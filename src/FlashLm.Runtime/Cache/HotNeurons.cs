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
    /// The neurons to pin per layer, most frequent first (ties: lower index first). <paramref name="share"/> a share: that share
    /// of <paramref name="rows"/>. Null (auto): per layer, the count that maximises the expected hits per token (see
    /// <see cref="ExpectedHits"/>) over 17 evenly spaced counts from 0 to the most allowed, the smaller count unless a larger
    /// one gains more than 0.1 %. Either way at most rows - <see cref="MinWindowRows"/> (at most every neuron), so the window
    /// cache always keeps rows of its own.
    /// </summary>
    /// <param name="span">Tokens the window keeps (window x sessions; at least 1).</param>
    /// <param name="unit">Neurons pinned together (mixture of experts: an expert's neurons, which share one frequency): each
    /// layer pins a whole number of units.</param>
    public static int[][] Choose(float[][] frequencies, int rows, int neurons, int span, double? share, int unit = 1)
    {
        if (unit < 1 || neurons % unit != 0) throw new ArgumentException($"pinning unit {unit} does not divide {neurons} neurons");
        var hot = new int[frequencies.Length][];
        int cap = Math.Max(0, Math.Min(neurons, rows - MinWindowRows));
        for (int l = 0; l < frequencies.Length; l++)
        {
            var f = frequencies[l];
            if (f.Length != neurons) throw new ArgumentException($"layer {l} has {f.Length} frequencies for {neurons} neurons");
            var order = Enumerable.Range(0, neurons).ToArray();
            // Most frequent first; ties back in neuron order.
            var keys = f.Select(x => -x).ToArray();
            Array.Sort(keys, order);
            StableTies(keys, order);
            int h = share is { } s ? (int)Math.Floor(s * rows) : Auto(order.Select(i => f[i]).ToArray(), rows, cap, Math.Max(1, span), unit);
            h = Math.Clamp(h, 0, cap) / unit * unit;
            hot[l] = order[..h];
        }
        return hot;
    }

    private static int Auto(float[] sorted, int rows, int cap, int span, int unit)
    {
        const int steps = 16;
        int best = 0;
        double bestHits = ExpectedHits(sorted, 0, rows, span);
        for (int k = 1; k <= steps; k++)
        {
            int h = (int)((long)cap * k / steps) / unit * unit;
            if (h == 0) continue;
            double hits = ExpectedHits(sorted, h, rows, span);
            if (hits > bestHits * 1.001 + 1e-12)
            {
                best = h;
                bestHits = hits;
            }
        }
        return best;
    }

    /// <summary>
    /// Expected active neurons per token found in DRAM when the <paramref name="hot"/> most frequent of <paramref name="sorted"/>
    /// (frequencies, most frequent first) are pinned and the other rows hold the window: a pinned neuron hits with its frequency f;
    /// the window (least recently used first, at most <paramref name="span"/> tokens back) holds the unpinned neurons used in the last
    /// t tokens, t the largest (up to span) whose expected union, the sum of 1 - (1 - f)^t, fits the rows left, so an unpinned neuron
    /// hits with f (1 - (1 - f)^t). Neurons are taken as independent from token to token, so hits are a lower bound for a real
    /// model's (whose consecutive tokens share more).
    /// </summary>
    internal static double ExpectedHits(float[] sorted, int hot, int rows, int span)
    {
        double pinned = 0;
        for (int i = 0; i < hot; i++) pinned += sorted[i];
        int window = rows - hot;
        int n = sorted.Length - hot;
        if (n == 0) return pinned;
        var logMiss = new double[n];
        for (int i = 0; i < n; i++) logMiss[i] = Math.Log(1 - Math.Clamp((double)sorted[hot + i], 0, 1 - 1e-9));
        double Union(double t)
        {
            double u = 0;
            foreach (var q in logMiss) u += 1 - Math.Exp(t * q);
            return u;
        }
        double lo = 0, hi = span;
        if (Union(hi) > window)
        {
            for (int it = 0; it < 24; it++)
            {
                double mid = (lo + hi) / 2;
                if (Union(mid) <= window) lo = mid;
                else hi = mid;
            }
            hi = lo;
        }
        double cold = 0;
        for (int i = 0; i < n; i++) cold += sorted[hot + i] * (1 - Math.Exp(hi * logMiss[i]));
        return pinned + cold;
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
