using System.CommandLine;
using FlashLm.Cli.Commands;

namespace FlashLm.Cli;

public static class Program
{
    public static int Main(string[] args) => BuildRoot().Parse(args).Invoke();

    public static RootCommand BuildRoot()
    {
        var root = new RootCommand("flashlm: run language models larger than DRAM by streaming FFN neurons from flash (LLM in a flash).");
        root.Subcommands.Add(GenerateCommand.Build());
        root.Subcommands.Add(InspectCommand.Build());
        root.Subcommands.Add(ConvertCommand.Build());
        root.Subcommands.Add(CalibrateCommand.Build());
        root.Subcommands.Add(EvalCommand.Build());
        root.Subcommands.Add(SynthCommand.Build());
        root.Subcommands.Add(TuneCommand.Build());
        root.Subcommands.Add(VerifyCommand.Build());
        root.Subcommands.Add(FuzzCommand.Build());
        root.Subcommands.Add(TokenizeCommand.Build());
        root.Subcommands.Add(ServeCommand.Build());
        root.Subcommands.Add(NodeCommand.Build());
        root.Subcommands.Add(ClusterCommand.Build());
        return root;
    }
}
