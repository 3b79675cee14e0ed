namespace FlashLm.Bench;

/// <summary>flashlm-bench: the ladder (the root command) and the soak (`flashlm-bench soak`).</summary>
internal static class Program
{
    public static int Main(string[] args) => BenchCommand.Build(SoakCommand.Build()).Parse(args).Invoke();
}
