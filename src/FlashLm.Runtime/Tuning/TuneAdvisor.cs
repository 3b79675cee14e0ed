namespace FlashLm.Runtime.Tuning;

/// <summary>The loader settings chosen from a measurement, with the figures that justify them.</summary>
/// <param name="BundleBytes">The model's FFN bundle, in bytes.</param>
/// <param name="BundleReadBytes">One bundle as an O_DIRECT read (rounded up to 4096).</param>
/// <param name="ReaderMBps">Throughput at the bundle read size per measured reader count (MB/s).</param>
/// <param name="MaxReadMBps">Throughput at the chosen reader count per measured read size (MB/s).</param>
/// <param name="BundleLatencySeconds">Mean time of one bundle read at the chosen reader count.</param>
/// <param name="CoalescedLatencySeconds">Mean time of one read of two bundles plus the chosen gap, same parallelism.</param>
public sealed record TuneRecommendation(
    long BundleBytes, int BundleReadBytes, int Readers, int Threads, long CoalesceGap, int MaxRead,
    IReadOnlyList<(int Parallelism, double MBps)> ReaderMBps, IReadOnlyList<(int ReadBytes, double MBps)> MaxReadMBps,
    double BundleLatencySeconds, double CoalescedLatencySeconds);

/// <summary>
/// Turns a measurement table into loader settings. Pure functions of the table, so they are tested on
/// synthetic tables. The shared model: at a fixed reader count P, the mean latency of one read grows with
/// its size; throughput is P x size / latency.
/// </summary>
public static class TuneAdvisor
{
    /// <summary>Reader counts whose throughput is within this fraction of the best count as good as the best.</summary>
    public const double Tolerance = 0.05;

    /// <summary>
    /// Chooses readers, threads, max-read and coalesce-gap for bundles of <paramref name="bundleBytes"/>:
    /// <list type="bullet">
    /// <item>readers = the smallest reader count within 5 % of the best throughput at the bundle read size
    /// (more readers only add threads and queueing); threads = readers (every read blocks its thread);</item>
    /// <item>max-read = the smallest measured read size (at least one bundle) within 5 % of the best throughput
    /// at that reader count: beyond it a larger read buys (almost) nothing;</item>
    /// <item>coalesce-gap = see <see cref="CoalesceGap"/>.</item>
    /// </list>
    /// </summary>
    public static TuneRecommendation Recommend(TuneResult result, long bundleBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bundleBytes);
        if (result.Random.Count == 0) throw new ArgumentException("the measurement holds no random-read points");
        int bundleRead = (int)Io.AlignedBuffer.AlignUp(bundleBytes);

        var perReaders = result.Parallelisms
            .Select(p => (Parallelism: p, MBps: Curve(result, p).ThroughputMBps(bundleRead)))
            .ToArray();
        double best = perReaders.Max(r => r.MBps);
        int readers = perReaders.First(r => r.MBps >= (1 - Tolerance) * best).Parallelism;

        var curve = Curve(result, readers);
        var perSize = result.Random.Where(p => p.Parallelism == readers).OrderBy(p => p.ReadBytes)
            .Select(p => (ReadBytes: p.ReadBytes, p.MBps)).ToArray();
        int maxRead = MaxRead(perSize, bundleRead);
        long gap = CoalesceGap(curve, bundleRead, maxRead);
        return new TuneRecommendation(bundleBytes, bundleRead, readers, readers, gap, maxRead, perReaders, perSize,
            curve.Latency(bundleRead), curve.Latency(2L * bundleRead + gap));
    }

    /// <summary>
    /// The smallest read size (at least <paramref name="minimum"/>) whose throughput is within 5 % of the best
    /// in <paramref name="perSize"/>; the best size when none is, and <paramref name="minimum"/> when no size
    /// reaches it.
    /// </summary>
    public static int MaxRead(IReadOnlyList<(int ReadBytes, double MBps)> perSize, int minimum)
    {
        var candidates = perSize.Where(p => p.ReadBytes >= minimum).OrderBy(p => p.ReadBytes).ToArray();
        if (candidates.Length == 0) return minimum;
        double best = candidates.Max(p => p.MBps);
        return candidates.First(p => p.MBps >= (1 - Tolerance) * best).ReadBytes;
    }

    /// <summary>
    /// The largest gap g (a multiple of 4096) such that one read of two bundles and the gap between them,
    /// 2 b + g bytes, takes no longer than the two separate bundle reads it replaces, 2 L(b), at the same
    /// reader count: L(2 b + g) &lt;= 2 L(b). Both ways move the same needed bytes; the single read only pays
    /// for the gap's bytes where the two reads pay a second per-read cost. Capped so the coalesced read
    /// fits <paramref name="maxRead"/> (0 when not even two bundles fit).
    /// </summary>
    public static long CoalesceGap(LatencyCurve curve, int bundleRead, int maxRead)
    {
        double budget = 2 * curve.Latency(bundleRead);
        long gap = -4096;
        for (long g = 0; 2L * bundleRead + g <= maxRead; g += 4096)
        {
            if (curve.Latency(2L * bundleRead + g) > budget * (1 + 1e-9)) break; // the curve is non-decreasing
            gap = g;
        }
        return Math.Max(gap, 0);
    }

    /// <summary>The latency curve of the random-read points at <paramref name="parallelism"/> readers.</summary>
    public static LatencyCurve Curve(TuneResult result, int parallelism) =>
        new(result.Random.Where(p => p.Parallelism == parallelism).Select(p => (p.ReadBytes, p.LatencySeconds)).ToArray(), parallelism);
}

/// <summary>
/// Mean read latency against read size at one reader count: the measured points made non-decreasing (a
/// larger read never takes less time; dips are noise), linearly interpolated between them and extrapolated
/// with the last segment's slope (the device's streaming rate) beyond the largest.
/// </summary>
public sealed class LatencyCurve
{
    private readonly (int Size, double Seconds)[] _points;

    public int Parallelism { get; }

    public LatencyCurve(IReadOnlyList<(int Size, double Seconds)> points, int parallelism)
    {
        if (points.Count == 0) throw new ArgumentException($"no measured points at {parallelism} readers");
        Parallelism = parallelism;
        _points = points.OrderBy(p => p.Size).ToArray();
        for (int i = 1; i < _points.Length; i++)
            if (_points[i].Seconds < _points[i - 1].Seconds) _points[i].Seconds = _points[i - 1].Seconds;
    }

    /// <summary>Mean seconds one read of <paramref name="size"/> bytes takes at this reader count.</summary>
    public double Latency(long size)
    {
        var p = _points;
        if (size <= p[0].Size) return p[0].Seconds;
        if (p.Length == 1) return p[0].Seconds * size / p[0].Size; // no slope known: assume constant throughput
        int i = 1;
        while (i < p.Length - 1 && p[i].Size < size) i++;
        var (s0, t0) = p[i - 1];
        var (s1, t1) = p[i];
        return t0 + (t1 - t0) * (size - s0) / (s1 - s0);
    }

    /// <summary>MB/s at this reader count for reads of <paramref name="size"/> bytes.</summary>
    public double ThroughputMBps(long size) => Parallelism * size / Latency(size) / 1e6;
}
