using System.Diagnostics;
using Akka.Actor;
using Akka.Routing;
using FlashLm.Runtime.Config;
using FlashLm.Runtime.Io;

namespace FlashLm.Runtime.Loader;

/// <summary>
/// The flash loader pool: a router of reader actors on a dedicated blocking-I/O dispatcher. Each reader
/// performs positioned O_DIRECT reads, either straight into the cache rows that will hold the bundles
/// (when rows and file ranges are 4096-aligned and contiguous) or into a staging buffer from which the
/// needed bundles are copied. A reader that throws is restarted by its supervisor and the read retried;
/// after the last attempt the requester gets <see cref="ReadFailed"/>. Every request is answered exactly once.
/// </summary>
public static class FlashLoader
{
    /// <summary>One copy out of a staging buffer: bytes [SourceOffset, +Length) to Destination.</summary>
    public readonly record struct Copy(long SourceOffset, nint Destination, int Length);

    /// <summary>
    /// Read [FileOffset, FileOffset + Length) of <paramref name="File"/> (all 4096-aligned). Direct reads go to
    /// <paramref name="Destination"/>; staged reads go to <paramref name="Staging"/> and then <paramref name="Copies"/> run.
    /// </summary>
    public sealed record ReadRequest(long Id, DirectFile File, long FileOffset, int Length, nint Destination,
        AlignedBuffer? Staging, Copy[]? Copies, IActorRef ReplyTo, int Attempt = 1);

    /// <summary>The read finished: <paramref name="Bytes"/> read from flash between the two timestamps (Stopwatch ticks).</summary>
    public sealed record ReadDone(long Id, int Bytes, long StartTicks, long EndTicks, int Attempts);

    /// <summary>The read failed after every attempt.</summary>
    public sealed record ReadFailed(long Id, string Error);

    /// <summary>Test hook: called before each read with (request, attempt); may throw or sleep.</summary>
    public delegate void ReadHook(ReadRequest request);

    public static Props Pool(LoaderSettings settings, string dispatcher, ReadHook? hook = null) =>
        Props.Create(() => new Reader(settings, hook))
            .WithDispatcher(dispatcher)
            .WithRouter(new RoundRobinPool(settings.Readers)
                // Unlimited restarts: Akka reads (-1 retries, finite window) as one restart per window, which stopped readers.
                .WithSupervisorStrategy(new OneForOneStrategy(_ => Directive.Restart)));

    internal sealed class Reader : ReceiveActor
    {
        private readonly LoaderSettings _settings;
        private readonly ReadHook? _hook;

        public Reader(LoaderSettings settings, ReadHook? hook)
        {
            _settings = settings;
            _hook = hook;
            Receive<ReadRequest>(Handle);
        }

        private unsafe void Handle(ReadRequest r)
        {
            long start = Stopwatch.GetTimestamp();
            _hook?.Invoke(r);
            if (_settings.DebugDelayMs > 0) Thread.Sleep(_settings.DebugDelayMs);
            if (r.Staging is null)
            {
                r.File.Read(r.FileOffset, (byte*)r.Destination, r.Length);
            }
            else
            {
                r.File.Read(r.FileOffset, r.Staging.Pointer, r.Length);
                foreach (var c in r.Copies!)
                    Buffer.MemoryCopy(r.Staging.Pointer + c.SourceOffset, (void*)c.Destination, c.Length, c.Length);
            }
            r.ReplyTo.Tell(new ReadDone(r.Id, r.Length, start, Stopwatch.GetTimestamp(), r.Attempt));
        }

        protected override void PreRestart(Exception reason, object message)
        {
            // Retry the read that failed (it is idempotent: same bytes into the same rows), or report it.
            if (message is ReadRequest r)
            {
                if (r.Attempt < _settings.MaxAttempts) Self.Tell(r with { Attempt = r.Attempt + 1 }, r.ReplyTo);
                else r.ReplyTo.Tell(new ReadFailed(r.Id, $"{r.File.Path}: read of {r.Length} bytes at offset {r.FileOffset} failed after {r.Attempt} attempts: {reason.Message}"));
            }
            base.PreRestart(reason, message);
        }
    }
}
