using System.Reflection;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace FlashLm.Benchmarks;

/// <summary>A benchmark class that knows how many bytes one operation of each of its methods touches.</summary>
public interface IBytesPerOperation
{
    /// <summary>Bytes one call of <paramref name="method"/> reads, given the current [Params] values only (no setup has run).</summary>
    long BytesPerOperation(string method);
}

/// <summary>The unit a class's throughput column is shown in (GB/s for memory-bound kernels, MB/s for disk reads).</summary>
[AttributeUsage(AttributeTargets.Class)]
public sealed class ThroughputUnitAttribute(string unit) : Attribute
{
    public string Unit { get; } = unit;
}

/// <summary>The default configuration plus GB/s and MB/s columns.</summary>
public sealed class BenchConfig : ManualConfig
{
    public BenchConfig()
    {
        Add(DefaultConfig.Instance);
        AddColumn(new ThroughputColumn("GB/s", 1e9), new ThroughputColumn("MB/s", 1e6));
    }
}

/// <summary>
/// Bytes per operation / mean time. The column is computed in the host process from the benchmark's
/// [Params], by making an instance without running its setup.
/// </summary>
public sealed class ThroughputColumn(string unit, double bytesPerUnit) : IColumn
{
    public string Id => "Throughput-" + unit;
    public string ColumnName => unit;
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => 0;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => $"Bytes touched per operation / mean time, in {unit}";

    public bool IsAvailable(Summary summary) => summary.BenchmarksCases.Any(Applies);

    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, summary.Style);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        if (!Applies(benchmarkCase)) return "-";
        var meanNs = summary[benchmarkCase]?.ResultStatistics?.Mean;
        if (meanNs is not > 0) return "?";
        long bytes = Bytes(benchmarkCase);
        return (bytes / (meanNs.Value * 1e-9) / bytesPerUnit).ToString("0.00", System.Globalization.CultureInfo.InvariantCulture);
    }

    private bool Applies(BenchmarkCase c) =>
        typeof(IBytesPerOperation).IsAssignableFrom(c.Descriptor.Type)
        && (c.Descriptor.Type.GetCustomAttribute<ThroughputUnitAttribute>()?.Unit ?? "GB/s") == unit;

    private static long Bytes(BenchmarkCase c)
    {
        var instance = (IBytesPerOperation)Activator.CreateInstance(c.Descriptor.Type)!;
        foreach (var p in c.Parameters.Items)
        {
            var t = c.Descriptor.Type;
            if (t.GetProperty(p.Name) is { CanWrite: true } prop) prop.SetValue(instance, p.Value);
            else t.GetField(p.Name)?.SetValue(instance, p.Value);
        }
        return instance.BytesPerOperation(c.Descriptor.WorkloadMethod.Name);
    }

    public override string ToString() => ColumnName;
}
