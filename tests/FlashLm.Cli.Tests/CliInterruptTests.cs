using System.Diagnostics;
using System.Text.Json;
using FlashLm.Cli.Commands;
using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Formats.Synth;
using Xunit;

namespace FlashLm.Tests.Cli;

/// <summary>Ctrl-C (SIGINT) during convert and generate: nothing half-written is left behind.</summary>
public class CliInterruptTests
{
    private const int Sigint = 2;

    /// <summary>
    /// Starts the driver so that SIGINT reaches it with its default disposition: a process started from a
    /// non-interactive shell's background job inherits SIGINT ignored (and .NET keeps it ignored), so then
    /// the child is started through python3, which resets it before exec.
    /// </summary>
    private static Process Start(IReadOnlyDictionary<string, string?> env, params string[] args)
    {
        var dll = Path.Combine(AppContext.BaseDirectory, "flashlm.dll");
        bool ignored = File.ReadLines("/proc/self/status").First(l => l.StartsWith("SigIgn:", StringComparison.Ordinal)) is var line
                       && (Convert.ToUInt64(line["SigIgn:".Length..].Trim(), 16) & (1UL << (Sigint - 1))) != 0;
        var psi = ignored
            ? new ProcessStartInfo("python3") { ArgumentList = { "-c", "import os,signal,sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp('dotnet', ['dotnet'] + sys.argv[1:])" } }
            : new ProcessStartInfo("dotnet");
        psi.RedirectStandardOutput = psi.RedirectStandardError = true;
        psi.UseShellExecute = false;
        psi.ArgumentList.Add(dll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var (k, v) in env) psi.Environment[k] = v;
        return Process.Start(psi)!;
    }

    /// <summary>Sends SIGINT once <paramref name="ready"/> (given the stderr so far) holds; returns the exit code and stderr.</summary>
    private static (int Exit, string Stderr) InterruptWhen(Process p, Func<string, bool> ready)
    {
        var stderr = new System.Text.StringBuilder();
        var reading = Task.Run(() =>
        {
            while (p.StandardError.ReadLine() is { } line)
                lock (stderr) stderr.AppendLine(line);
        });
        var stdout = p.StandardOutput.ReadToEndAsync();
        string Err()
        {
            lock (stderr) return stderr.ToString();
        }
        var clock = Stopwatch.StartNew();
        while (!ready(Err()) && !p.HasExited && clock.Elapsed < TimeSpan.FromSeconds(120)) Thread.Sleep(5);
        if (p.HasExited)
        {
            p.WaitForExit();
            reading.Wait();
            return (p.ExitCode, Err());
        }
        var killer = new ProcessStartInfo("kill") { ArgumentList = { "-INT", p.Id.ToString(System.Globalization.CultureInfo.InvariantCulture) }, RedirectStandardError = true };
        using (var k = Process.Start(killer)!)
        {
            var why = k.StandardError.ReadToEnd();
            k.WaitForExit();
            Assert.True(k.ExitCode == 0, $"kill -INT {p.Id}: {why} (exited: {p.HasExited}, after {clock.ElapsedMilliseconds} ms): {Err()}");
        }
        if (!p.WaitForExit(60_000))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail("did not stop within 60 s of SIGINT");
        }
        reading.Wait();
        stdout.Wait();
        return (p.ExitCode, Err());
    }

    [Fact]
    public void Sigint_during_convert_exits_130_and_leaves_no_temporary_folder()
    {
        using var dir = new TempDir();
        var model = dir.File("m.gguf");
        // About 130 MB: long enough to be interrupted mid-write.
        SyntheticModel.WriteGguf(model, new ModelConfig
        {
            Architecture = FlashLm.Formats.Architecture.Llama, Dim = 512, HiddenDim = 2048, Layers = 8, Heads = 8, KvHeads = 8, VocabSize = 512, ContextLength = 256,
        }, DType.F32, 1);
        var output = dir.File("out");
        int exit = 0;
        string stderr = "";
        // Signalled at the first progress line (10 % written), with the temporary folder in place. On a fast disk the
        // convert may finish before the signal lands, or the signal may land after its last check for it (it then says
        // "stopping" but still "wrote", and the layout is whole): try again, up to 3 times.
        for (int attempt = 0; attempt < 3; attempt++)
        {
            if (Directory.Exists(output)) Directory.Delete(output, recursive: true);
            using var p = Start(new Dictionary<string, string?>(), "convert", model, "--out", output);
            (exit, stderr) = InterruptWhen(p, err => err.Contains(" %", StringComparison.Ordinal));
            if (!(exit == 0 && stderr.Contains("wrote ", StringComparison.Ordinal))) break;
        }
        Assert.True(exit == 130, $"exit {exit}: {stderr}");
        Assert.Contains("flashlm: cancelled", stderr);
        Assert.DoesNotContain("   at ", stderr);
        Assert.Empty(Directory.GetDirectories(dir.Path, "out*"));
    }

    [Fact]
    public void Sigint_during_generate_leaves_whole_json_lines_in_the_stats_file()
    {
        using var dir = new TempDir();
        var stats = dir.File("stats.jsonl");
        var env = new Dictionary<string, string?> { ["FLASHLM_CACHE"] = dir.Sub("cache") };
        // A slow read per position (debug-delay-ms) so that the run is still going when the signal arrives.
        using var p = Start(env, "generate", "--mode", "flash", "-n", "0", "--stats", stats, "--set", "loader.debug-delay-ms=20");
        var (exit, stderr) = InterruptWhen(p, _ => File.Exists(stats) && new FileInfo(stats).Length > 2000);
        Assert.True(exit == 130, $"exit {exit}: {stderr}");
        Assert.DoesNotContain("   at ", stderr);
        var text = File.ReadAllText(stats);
        Assert.EndsWith("\n", text);
        var lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length >= 2, text);
        foreach (var l in lines) Assert.Equal(JsonValueKind.Object, JsonDocument.Parse(l).RootElement.ValueKind);
        Assert.Contains($"{lines.Length} positions in", stderr); // the summary covers what was run
    }

    [Fact]
    public void A_convert_cancelled_from_its_progress_deletes_its_temporary_folder()
    {
        using var dir = new TempDir();
        var model = dir.File("m.gguf");
        SyntheticModel.WriteGguf(model, SyntheticShapes.Get("tiny"), DType.F32, 1);
        using var source = ModelLoader.Open(model);
        int reports = 0;
        var cancelAtSecond = new Progress(() =>
        {
            if (++reports == 2) throw new OperationCanceledException();
        });
        Assert.Throws<OperationCanceledException>(() => FlashLayoutWriter.Convert(source, dir.File("out"), null, cancelAtSecond));
        Assert.Equal(2, reports);
        Assert.Empty(Directory.GetDirectories(dir.Path));
    }

    [Fact]
    public void Stale_temporary_folders_of_the_same_output_are_removed_and_nothing_else()
    {
        using var dir = new TempDir();
        var stale = dir.File($"out.tmp-{Guid.NewGuid():N}");
        Directory.CreateDirectory(stale);
        File.WriteAllText(Path.Combine(stale, "ffn.bin"), "partial");
        string[] kept = [dir.File("out.tmp-mine"), dir.File($"other.tmp-{Guid.NewGuid():N}"), dir.File($"out.tmp-{Guid.NewGuid():N}x"), dir.File("out")];
        foreach (var k in kept) Directory.CreateDirectory(k);
        var removed = ConvertCommand.RemoveStaleTemporaries(dir.File("out"));
        Assert.Equal([stale], removed);
        Assert.False(Directory.Exists(stale));
        foreach (var k in kept) Assert.True(Directory.Exists(k), k);
    }

    [Fact]
    public void Convert_removes_a_stale_temporary_folder_then_writes_the_layout()
    {
        using var dir = new TempDir();
        var model = dir.File("m.gguf");
        SyntheticModel.WriteGguf(model, SyntheticShapes.Get("tiny"), DType.F32, 1);
        var stale = dir.File($"out.tmp-{Guid.NewGuid():N}");
        Directory.CreateDirectory(stale);
        var r = CliRunner.Run("convert", model, "--out", dir.File("out"));
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains($"removed {stale}", r.Stderr);
        Assert.False(Directory.Exists(stale));
        Assert.True(FlashLayoutModel.IsLayoutFolder(dir.File("out")));
    }

    private sealed class Progress(Action onReport) : IProgress<(long, long)>
    {
        public void Report((long, long) value) => onReport();
    }
}
