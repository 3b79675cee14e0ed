namespace FlashLm.Runtime.Tuning;

/// <summary>
/// One measured point: <see cref="Parallelism"/> threads each doing blocking positioned reads of
/// <see cref="ReadBytes"/> back to back for a fixed time; <see cref="Reads"/> completed in <see cref="Seconds"/>.
/// </summary>
public sealed record TunePoint(int ReadBytes, int Parallelism, long Reads, double Seconds)
{
    /// <summary>Completed reads per second (all readers together).</summary>
    public double Iops => Seconds > 0 ? Reads / Seconds : 0;

    /// <summary>Throughput in MB/s (10^6 bytes per second).</summary>
    public double MBps => Iops * ReadBytes / 1e6;

    /// <summary>
    /// Mean time one read takes under this much parallelism, in seconds (Little's law: readers in flight /
    /// completion rate). The unit the coalesce-gap rule compares.
    /// </summary>
    public double LatencySeconds => Reads > 0 ? Parallelism * Seconds / Reads : double.PositiveInfinity;
}

/// <summary>Everything one `flashlm tune` run measured.</summary>
/// <param name="Random">Random 4096-aligned positioned reads, one point per (read size, parallelism).</param>
/// <param name="Sequential">Sequential reads (each reader streams its own region), one point per parallelism.</param>
/// <param name="Direct">False when the file system refused O_DIRECT: the figures then include the page cache.</param>
public sealed record TuneResult(
    IReadOnlyList<TunePoint> Random, IReadOnlyList<TunePoint> Sequential, string FilePath, long FileBytes, bool Direct,
    double SecondsPerPoint, DateTimeOffset When, string Machine)
{
    public IReadOnlyList<int> Sizes => Random.Select(p => p.ReadBytes).Distinct().Order().ToArray();
    public IReadOnlyList<int> Parallelisms => Random.Select(p => p.Parallelism).Distinct().Order().ToArray();

    public TunePoint? At(int readBytes, int parallelism) =>
        Random.FirstOrDefault(p => p.ReadBytes == readBytes && p.Parallelism == parallelism);
}

/// <summary>What to measure: read sizes (multiples of 4096), reader counts, time per point.</summary>
public sealed record TuneOptions(IReadOnlyList<int> Sizes, IReadOnlyList<int> Parallelisms, double SecondsPerPoint,
    int SequentialReadBytes = 1 << 20, IReadOnlyList<int>? SequentialParallelisms = null)
{
    /// <summary>4 KiB..1 MiB (powers of two) x 1..64 readers, 0.5 s per point, sequential 1 MiB with 1 and 4 readers.</summary>
    public static TuneOptions Full(int? extraSize = null) =>
        new(WithExtra(PowersOfTwo(4096, 1 << 20), extraSize), [1, 2, 4, 8, 16, 32, 64], 0.5, 1 << 20, [1, 4]);

    /// <summary>Fewer points, 0.1 s each: 4, 16, 64, 256 KiB and 1 MiB x 1, 4, 16, 64 readers, sequential with 1 reader.</summary>
    public static TuneOptions Quick(int? extraSize = null) =>
        new(WithExtra([4096, 16384, 65536, 262144, 1 << 20], extraSize), [1, 4, 16, 64], 0.1, 1 << 20, [1]);

    /// <summary>Points measured (random plus sequential), for the time estimate and the progress bar.</summary>
    public int Points => Sizes.Count * Parallelisms.Count + (SequentialParallelisms?.Count ?? 0);

    public double EstimatedSeconds => Points * SecondsPerPoint;

    public static int[] PowersOfTwo(int from, int to)
    {
        var list = new List<int>();
        for (long s = from; s <= to; s *= 2) list.Add((int)s);
        return list.ToArray();
    }

    private static int[] WithExtra(int[] sizes, int? extra) =>
        extra is { } e && !sizes.Contains(e) ? sizes.Append(e).Order().ToArray() : sizes;

    /// <summary>Throws ArgumentException naming the bad value.</summary>
    public void Validate()
    {
        if (Sizes.Count == 0) throw new ArgumentException("no read sizes to measure");
        if (Parallelisms.Count == 0) throw new ArgumentException("no reader counts to measure");
        foreach (var s in Sizes.Append(SequentialReadBytes))
            if (s <= 0 || s % 4096 != 0) throw new ArgumentException($"read size {s} is not a positive multiple of 4096 (O_DIRECT)");
        foreach (var p in Parallelisms.Concat(SequentialParallelisms ?? []))
            if (p < 1 || p > 1024) throw new ArgumentException($"reader count {p} is outside 1..1024");
        if (!(SecondsPerPoint > 0 && SecondsPerPoint <= 600)) throw new ArgumentException($"seconds per point {SecondsPerPoint} is outside (0, 600]");
    }
}
