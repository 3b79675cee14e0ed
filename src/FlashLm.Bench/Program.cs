namespace FlashLm.Bench;

/// <summary>
/// flashlm-bench: the ladder (the root command), the soak (`flashlm-bench soak`), llama.cpp's quantizer
/// (`flashlm-bench quantize`) and the fidelity check against llama.cpp (`flashlm-bench fidelity`).
/// </summary>
internal static class Program
{
    public static int Main(string[] args) =>
        BenchCommand.Build(SoakCommand.Build(), QuantizeCommand.Build(), Fidelity.Build(), BenchCommand.BuildReplot(), BookkeepingCommand.Build(), LoadCommand.Build()).Parse(args).Invoke();
}
