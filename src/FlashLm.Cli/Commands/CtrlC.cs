namespace FlashLm.Cli.Commands;

/// <summary>
/// Turns the first Ctrl-C (SIGINT, which .NET raises as Console.CancelKeyPress) into a cancelled token, so a
/// command stops at its next safe point and cleans up (a half-written layout is deleted, the stats file ends
/// with a whole line) and <see cref="CliErrors.Guard"/> exits with 130. A second Ctrl-C terminates at once.
/// </summary>
internal sealed class CtrlC : IDisposable
{
    private readonly CancellationTokenSource _cts = new();

    private CtrlC() => Console.CancelKeyPress += OnCancel;

    /// <summary>Listens until disposed.</summary>
    public static CtrlC Listen() => new();

    public CancellationToken Token => _cts.Token;

    private void OnCancel(object? sender, ConsoleCancelEventArgs e)
    {
        if (_cts.IsCancellationRequested) return; // second press: default handling (terminate)
        e.Cancel = true;
        Console.Error.WriteLine("flashlm: stopping (Ctrl-C again to quit at once)");
        _cts.Cancel();
    }

    /// <summary>Stops as Ctrl-C does (SIGTERM, say).</summary>
    public void Cancel() => _cts.Cancel();

    public void Dispose()
    {
        Console.CancelKeyPress -= OnCancel;
        _cts.Dispose();
    }
}
