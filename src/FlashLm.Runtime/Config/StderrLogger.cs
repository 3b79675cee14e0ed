using Akka.Actor;
using Akka.Event;

namespace FlashLm.Runtime.Config;

/// <summary>
/// Akka's log events go to stderr: stdout carries only generated text (it must diff equal to run.c's).
/// </summary>
public sealed class StderrLogger : ReceiveActor
{
    public StderrLogger()
    {
        Receive<InitializeLogger>(_ => Sender.Tell(new LoggerInitialized()));
        Receive<LogEvent>(e => Console.Error.WriteLine($"[akka {e.LogLevel().ToString().Replace("Level", "")}] {e.LogSource}: {e.Message}{(e is Error { Cause: { } c } ? " " + c.Message : "")}"));
    }
}
