using System.Globalization;
using System.Text;

namespace FlashLm.Runtime.Tuning;

/// <summary>Renders a measurement as markdown tables and a recommendation as a HOCON profile.</summary>
public static class TuneReport
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>
    /// Markdown: random-read MB/s and IOPS (rows: read size, columns: parallel readers), then the
    /// sequential reads (rows: readers).
    /// </summary>
    public static string Markdown(TuneResult r)
    {
        var sb = new StringBuilder();
        string how = r.Direct ? "O_DIRECT" : "buffered (O_DIRECT refused: figures include the page cache)";
        sb.Append(Inv, $"Disk: {r.FilePath} ({Size(r.FileBytes)}), {how} reads, {r.SecondsPerPoint:0.###} s per point; {r.Machine}\n\n");
        Pivot(sb, r, "Random reads, MB/s (rows: read size, columns: parallel readers)", p => p.MBps.ToString("0.0", Inv));
        sb.Append('\n');
        Pivot(sb, r, "Random reads, IOPS (rows: read size, columns: parallel readers)", p => p.Iops.ToString("0", Inv));
        sb.Append('\n');
        Pivot(sb, r, "Random reads, mean latency in µs (readers in flight / completion rate)", p => (p.LatencySeconds * 1e6).ToString("0", Inv));
        if (r.Sequential.Count > 0)
        {
            sb.Append('\n').Append(Inv, $"Sequential {Size(r.Sequential[0].ReadBytes)} reads (each reader streams its own region)\n\n");
            sb.Append("| readers | MB/s | IOPS |\n|--------:|-----:|-----:|\n");
            foreach (var p in r.Sequential.OrderBy(p => p.Parallelism))
                sb.Append(Inv, $"| {p.Parallelism} | {p.MBps:0.0} | {p.Iops:0} |\n");
        }
        return sb.ToString();
    }

    private static void Pivot(StringBuilder sb, TuneResult r, string title, Func<TunePoint, string> cell)
    {
        var sizes = r.Sizes;
        var pars = r.Parallelisms;
        sb.Append(title).Append("\n\n| read size |");
        foreach (var p in pars) sb.Append(Inv, $" {p} |");
        sb.Append("\n|----------:|");
        foreach (var _ in pars) sb.Append("-----:|");
        sb.Append('\n');
        foreach (var s in sizes)
        {
            sb.Append(Inv, $"| {Size(s)} |");
            foreach (var p in pars) sb.Append(' ').Append(r.At(s, p) is { } pt ? cell(pt) : "-").Append(" |");
            sb.Append('\n');
        }
    }

    /// <summary>
    /// The HOCON profile: flashlm.loader { readers, threads, coalesce-gap, max-read } with comments giving
    /// the measured figures behind each value, the date and the machine.
    /// </summary>
    public static string Profile(TuneResult r, TuneRecommendation c, string bundleSource)
    {
        var sb = new StringBuilder();
        string when = r.When.ToString("yyyy-MM-dd HH:mm zzz", Inv);
        sb.Append(Inv, $"# Disk profile written by `flashlm tune` on {when}.\n");
        sb.Append(Inv, $"# Machine: {r.Machine}.\n");
        sb.Append(Inv, $"# Measured: {(r.Direct ? "O_DIRECT" : "buffered (O_DIRECT refused)")} random 4096-aligned positioned reads over {r.FilePath} ({Size(r.FileBytes)}), {r.SecondsPerPoint:0.###} s per point.\n");
        sb.Append(Inv, $"# Bundle: {Size(c.BundleBytes)} ({bundleSource}), read as {Size(c.BundleReadBytes)}.\n");
        if (r.Sequential.Count > 0)
            sb.Append("# Sequential ").Append(Size(r.Sequential[0].ReadBytes)).Append(" reads: ")
              .AppendJoin(", ", r.Sequential.OrderBy(p => p.Parallelism).Select(p => string.Create(Inv, $"{p.MBps:0} MB/s with {p.Parallelism} reader{(p.Parallelism == 1 ? "" : "s")}")))
              .Append(".\n");
        sb.Append("# Use it with: flashlm generate --config <this file> ...\n");
        sb.Append("flashlm {\n  loader {\n");
        var best = c.ReaderMBps.MaxBy(x => x.MBps);
        sb.Append(Inv, $"    # {Size(c.BundleReadBytes)} random reads, MB/s by readers: ")
          .AppendJoin(", ", c.ReaderMBps.Select(x => string.Create(Inv, $"{x.Parallelism}: {x.MBps:0}"))).Append('\n');
        sb.Append(Inv, $"    # Best {best.MBps:0} MB/s at {best.Parallelism} readers; {c.Readers} is the fewest within {TuneAdvisor.Tolerance:P0} of it.\n");
        sb.Append(Inv, $"    readers = {c.Readers}\n");
        sb.Append("    # One blocking read per thread: as many threads as readers.\n");
        sb.Append(Inv, $"    threads = {c.Threads}\n");
        sb.Append(Inv, $"    # Mean latency at {c.Readers} readers: one {Size(c.BundleReadBytes)} bundle read {c.BundleLatencySeconds * 1e6:0} µs, one read of two bundles\n");
        sb.Append(Inv, $"    # plus the gap ({Size(2L * c.BundleReadBytes + c.CoalesceGap)}) {c.CoalescedLatencySeconds * 1e6:0} µs. The gap is the largest g with\n");
        sb.Append("    # latency(2 x bundle + g) <= 2 x latency(bundle): one coalesced read then costs no more time than the\n");
        sb.Append("    # two bundle reads it replaces (latencies interpolated between the measured read sizes).\n");
        sb.Append(Inv, $"    coalesce-gap = {Hocon(c.CoalesceGap)}\n");
        sb.Append(Inv, $"    # MB/s at {c.Readers} readers by read size: ")
          .AppendJoin(", ", c.MaxReadMBps.Select(x => string.Create(Inv, $"{Size(x.ReadBytes)}: {x.MBps:0}"))).Append('\n');
        sb.Append(Inv, $"    # {Size(c.MaxRead)} is the smallest read (at least one bundle) within {TuneAdvisor.Tolerance:P0} of the best: larger reads buy little.\n");
        sb.Append(Inv, $"    max-read = {Hocon(c.MaxRead)}\n");
        sb.Append("  }\n}\n");
        return sb.ToString();
    }

    /// <summary>A size as HOCON/ByteSize understands it: whole MiB or KiB where exact, else bytes.</summary>
    public static string Hocon(long bytes) =>
        bytes == 0 ? "0" : bytes % (1 << 20) == 0 ? $"{bytes >> 20}MiB" : bytes % 1024 == 0 ? $"{bytes >> 10}KiB" : bytes.ToString(Inv);

    /// <summary>A size for people: 4 KiB, 1 MiB, 4 GiB, 1.5 MiB.</summary>
    public static string Size(long bytes) =>
        bytes >= 1L << 30 ? Unit(bytes, 1L << 30, "GiB") : bytes >= 1 << 20 ? Unit(bytes, 1 << 20, "MiB") : bytes >= 1024 ? Unit(bytes, 1024, "KiB") : $"{bytes} B";

    private static string Unit(long bytes, long unit, string name) =>
        bytes % unit == 0 ? $"{bytes / unit} {name}" : ((double)bytes / unit).ToString("0.##", Inv) + " " + name;
}
