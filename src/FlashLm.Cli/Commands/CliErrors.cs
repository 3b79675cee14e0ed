using FlashLm.Formats;

namespace FlashLm.Cli.Commands;

/// <summary>Turns expected failures (bad files, bad arguments) into one clear line on stderr and exit code 1.</summary>
public static class CliErrors
{
    public static int Guard(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (Exception e) when (e is ModelFormatException or Runtime.PipelineException or Runtime.DramBudgetException or Runtime.Config.SettingsException or ArgumentException or IOException or UnauthorizedAccessException or InvalidOperationException or NotSupportedException)
        {
            Console.Error.WriteLine($"flashlm: error: {e.Message}");
            // FLASHLM_TRACE=1: the whole exception too, for a bug report.
            if (Environment.GetEnvironmentVariable("FLASHLM_TRACE") is "1" or "true") Console.Error.WriteLine(e);
            return 1;
        }
        catch (OutOfMemoryException)
        {
            Console.Error.WriteLine("flashlm: error: out of memory (the process's memory limit, e.g. a cgroup cap, is smaller than what this run needs)");
            return 1;
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine("flashlm: cancelled");
            return 130;
        }
    }
}
