using Akka.Actor;

namespace FlashLm.Runtime;

/// <summary>
/// A stage of the pipeline failed: <see cref="Stage"/> is "session", "predictor", "cache manager", "loader" or "compute";
/// the message names the stage and the cause. Delivered to the sessions the failure affects through their token streams.
/// </summary>
public sealed class PipelineException(string stage, string message, Exception? inner = null) : Exception($"{stage}: {message}", inner)
{
    /// <summary>The stage that failed.</summary>
    public string Stage { get; } = stage;
}

/// <summary>
/// The parent of one runtime's actors, with a supervision strategy chosen on purpose: every stage catches what goes wrong
/// while it handles a message and tells the sessions concerned itself (see each actor's AroundReceive), so an exception
/// that still escapes (a constructor, PreStart) stops the actor: never Akka's default restart, which would run PostStop
/// and free cache rows that reads in flight still target. A stage that stops while the runtime is not shutting down
/// stops the runtime, and the reason is reported through the callback.
/// </summary>
internal static class PipelineSupervisor
{
    /// <summary>Create a child (a stage or a session turn); answered with its IActorRef.</summary>
    public sealed record Spawn(Props Props, string Name, string? Stage);

    /// <summary>The runtime is shutting down: stages stopping from now on are expected.</summary>
    public sealed record ShuttingDown;

    public static Props Props(Action<string> stopped) => Akka.Actor.Props.Create(() => new Actor(stopped));

    private sealed class Actor : ReceiveActor
    {
        private readonly Dictionary<IActorRef, string> _stages = new();
        private bool _shuttingDown;

        public Actor(Action<string> stopped)
        {
            Receive<Spawn>(s =>
            {
                var child = Context.ActorOf(s.Props, s.Name);
                if (s.Stage is not null)
                {
                    _stages[child] = s.Stage;
                    Context.Watch(child);
                }
                Sender.Tell(child);
            });
            Receive<ShuttingDown>(_ => _shuttingDown = true);
            Receive<Terminated>(t =>
            {
                if (_stages.Remove(t.ActorRef, out var stage) && !_shuttingDown) stopped($"the {stage} stopped unexpectedly");
            });
        }

        protected override SupervisorStrategy SupervisorStrategy() =>
            new OneForOneStrategy(maxNrOfRetries: 0, withinTimeRange: TimeSpan.Zero, decider: Decider.From(_ => Directive.Stop));
    }
}
