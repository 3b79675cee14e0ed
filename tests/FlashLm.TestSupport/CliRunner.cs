using System.Diagnostics;

namespace FlashLm.Tests;

/// <summary>Runs the `flashlm` driver (or another program built beside the tests) as a separate process.</summary>
public static class CliRunner
{
    public sealed record Result(int ExitCode, byte[] Stdout, string Stderr);

    /// <summary>This test process's own FLASHLM_CACHE (a caller's environment may still name another), removed at exit.</summary>
    private static readonly Lazy<TempDir> ProcessCache = new(() =>
    {
        var dir = new TempDir();
        AppDomain.CurrentDomain.ProcessExit += (_, _) => dir.Dispose();
        return dir;
    });

    public static Result Run(params string[] args) => Run(new Dictionary<string, string?>(), args);

    /// <summary>Runs with <paramref name="environment"/> added to (or, for null values, removed from) this process's environment.</summary>
    public static Result Run(IReadOnlyDictionary<string, string?> environment, params string[] args) => RunProgram("flashlm", environment, args);

    /// <summary>Runs another program built beside the tests (e.g. "flashlm-bench") the same way.</summary>
    public static Result RunProgram(string program, IReadOnlyDictionary<string, string?> environment, params string[] args)
    {
        var dll = Path.Combine(AppContext.BaseDirectory, program + ".dll");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(dll);
        // Never the user's ~/.cache/flashlm, and never another test process's: test projects run in parallel, and the
        // built-in model and the bench's synthetic layouts are cached there.
        psi.Environment["FLASHLM_CACHE"] = ProcessCache.Value.Path;
        foreach (var (k, v) in environment)
        {
            if (v is null) psi.Environment.Remove(k);
            else psi.Environment[k] = v;
        }
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = new MemoryStream();
        var copy = p.StandardOutput.BaseStream.CopyToAsync(stdout);
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(300_000))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"{program} {string.Join(' ', args)} did not finish in 5 minutes");
        }
        copy.Wait();
        return new Result(p.ExitCode, stdout.ToArray(), stderr.Result);
    }
}
