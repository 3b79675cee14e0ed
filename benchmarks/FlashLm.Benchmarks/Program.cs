using BenchmarkDotNet.Running;

namespace FlashLm.Benchmarks;

/// <summary>
/// Runs the benchmarks picked by BenchmarkDotNet's own arguments (--filter, --job, --list ...), e.g.
/// `dotnet run -c Release --project benchmarks/FlashLm.Benchmarks -- --filter *MatVec* --job short`.
/// </summary>
public static class Program
{
    public static void Main(string[] args) => BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args, new BenchConfig());
}
