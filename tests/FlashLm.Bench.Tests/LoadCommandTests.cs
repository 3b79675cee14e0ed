using System.Text;
using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Formats.Synth;
using Xunit;

namespace FlashLm.Tests.Bench;

/// <summary>`flashlm-bench load` against its own flashlm serve: every request answered exactly once, none lost.</summary>
public sealed class LoadCommandTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void The_load_command_answers_every_request_once_at_each_client_count()
    {
        var gguf = _dir.File("tiny.gguf");
        SyntheticModel.WriteGguf(gguf, SyntheticShapes.Get("tiny"), DType.F32, 42);
        var layout = _dir.File("tiny.flash");
        using (var source = ModelLoader.Open(gguf)) FlashLayoutWriter.Convert(source, layout);
        var load = CliRunner.RunProgram("flashlm-bench", new Dictionary<string, string?>(), "load", "--model", layout, "--clients", "1,4", "--requests", "12", "--max-tokens", "6", "--set", "max-sessions=2");
        Assert.True(load.ExitCode == 0, load.Stderr);
        var rows = Encoding.UTF8.GetString(load.Stdout).Split('\n').Where(l => l.StartsWith("| 1 |") || l.StartsWith("| 4 |")).ToList();
        Assert.Equal(2, rows.Count);
        foreach (var row in rows)
        {
            var cells = row.Split('|', StringSplitOptions.TrimEntries);
            // clients | requests | ok | errors | lost | duplicated
            Assert.Equal(["12", "12", "0", "0", "0"], cells[2..7]);
        }
    }
}
