using System.CommandLine;
using FlashLm.Cli.Commands;

namespace FlashLm.Bench;

internal static class Program
{
    public static int Main(string[] args)
    {
        var bench = BenchCommand.Build();
        var root = new RootCommand(bench.Description!);
        foreach (var o in bench.Options) root.Options.Add(o);
        root.Action = bench.Action;
        return root.Parse(args).Invoke();
    }
}
