using System.Diagnostics;
using Akka.Actor;
using Akka.Event;
using Akka.Routing;
using FlashLm.Formats.FlashLayout;
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
    /// <paramref name="Destination"/>; scatter reads go to <paramref name="Segments"/> in order (one vectored read; the
    /// bundles land in their rows, the gaps between them in a scratch buffer), and <paramref name="Copies"/> says where each
    /// bundle landed; staged reads go to <paramref name="Staging"/> and then <paramref name="Copies"/> run.
    /// </summary>
    /// <param name="Fill">Rows whose resident head the read left out: the reader copies it in from DRAM and checks the whole bundles.</param>
    public sealed record ReadRequest(long Id, DirectFile File, long FileOffset, int Length, nint Destination,
        AlignedBuffer? Staging, Copy[]? Copies, IActorRef ReplyTo, int Attempt = 1, ResidentFill? Fill = null, IoSegment[]? Segments = null);

    /// <summary>The read finished: <paramref name="Bytes"/> read from flash between the two timestamps (Stopwatch ticks).</summary>
    public sealed record ReadDone(long Id, int Bytes, long StartTicks, long EndTicks, int Attempts);

    /// <summary>Several reads for the same requester finished (the io_uring loader sends what it reaped at once as one message).</summary>
    public sealed record ReadsDone(ReadDone[] Items);

    /// <summary>The read failed after every attempt.</summary>
    public sealed record ReadFailed(long Id, string Error);

    /// <summary>Test hook: called before each read with (request, attempt); may throw or sleep.</summary>
    public delegate void ReadHook(ReadRequest request);

    /// <param name="checksums">Per-bundle checksums of ffn.bin: every whole bundle a read of that file lands is checked
    /// before <see cref="ReadDone"/> is sent; null checks nothing (tests of the pool alone).</param>
    public static Props Pool(LoaderSettings settings, string dispatcher, ReadHook? hook = null, BundleChecksums? checksums = null) =>
        Pool(settings, dispatcher, hook, checksums, null);

    /// <param name="resident">The bundle part held in DRAM that requests with a <see cref="ReadRequest.Fill"/> leave out.</param>
    internal static Props Pool(LoaderSettings settings, string dispatcher, ReadHook? hook, BundleChecksums? checksums, ReadFaults? faults,
        ResidentPart? resident = null) =>
        Props.Create(() => new Reader(settings, hook, checksums, faults, resident))
            .WithDispatcher(dispatcher)
            .WithRouter(new RoundRobinPool(settings.Readers)
                // Unlimited restarts (-1 retries, no window; -1 retries with a finite window means one restart per window, which stopped readers).
                // Not logged by Akka (a stack trace per retried read): the reader logs one line per retry and per failure.
                .WithSupervisorStrategy(new OneForOneStrategy(-1, -1, _ => Directive.Restart, loggingEnabled: false)));

    internal sealed class Reader : ReceiveActor
    {
        private readonly LoaderSettings _settings;
        private readonly ReadHook? _hook;
        private readonly BundleChecksums? _checksums;
        private readonly ReadFaults? _faults;
        private readonly ResidentPart? _resident;

        public Reader(LoaderSettings settings, ReadHook? hook, BundleChecksums? checksums, ReadFaults? faults, ResidentPart? resident)
        {
            _settings = settings;
            _hook = hook;
            _checksums = checksums;
            _faults = faults;
            _resident = resident;
            Receive<ReadRequest>(Handle);
        }

        private unsafe void Handle(ReadRequest r)
        {
            long start = Stopwatch.GetTimestamp();
            _hook?.Invoke(r);
            _faults?.Before(r);
            if (_settings.DebugDelayMs > 0) Thread.Sleep(_settings.DebugDelayMs);
            byte* landed = r.Staging is null ? (byte*)r.Destination : r.Staging.Pointer;
            var faults = _faults;
            DirectFile.Pread? pread = faults is null ? null : (h, buffer, offset) => faults.Pread(r, h, buffer, offset);
            if (r.Segments is { } segments)
            {
                r.File.ReadScatter(r.FileOffset, segments, pread);
                if (faults is not null)
                    foreach (var c in r.Copies!) faults.Landed(r, new Span<byte>((void*)c.Destination, c.Length), r.FileOffset + c.SourceOffset);
            }
            else
            {
                r.File.Read(r.FileOffset, landed, r.Length, pread);
                faults?.Landed(r, new Span<byte>(landed, r.Length), r.FileOffset);
            }
            ReadCompletion.Finish(r, landed, _checksums, _resident);
            if (faults?.Kill(r) == true) throw new ReaderKilledException($"reader {Self.Path.Name} killed mid-read (test fault)");
            r.ReplyTo.Tell(new ReadDone(r.Id, r.Length, start, Stopwatch.GetTimestamp(), r.Attempt));
        }

        protected override void PreRestart(Exception reason, object message)
        {
            // Retry the read that failed (it is idempotent: same bytes into the same rows), or report it.
            if (message is ReadRequest r)
            {
                var log = Context.GetLogger();
                if (r.Attempt < _settings.MaxAttempts)
                {
                    log.Warning("retrying read of {0} bytes at offset {1}{2} (attempt {3} of {4} failed): {5}",
                        r.Length, r.FileOffset, ReadCompletion.Bundles(r, _checksums), r.Attempt, _settings.MaxAttempts, reason.Message);
                    Self.Tell(r with { Attempt = r.Attempt + 1 }, r.ReplyTo);
                }
                else
                {
                    var error = $"{r.File.Path}: read of {r.Length} bytes at offset {r.FileOffset}{ReadCompletion.Bundles(r, _checksums)} failed after {r.Attempt} attempts: {reason.Message}";
                    log.Error(error);
                    r.ReplyTo.Tell(new ReadFailed(r.Id, error));
                }
            }
            base.PreRestart(reason, message);
        }
    }
}

/// <summary>What every read does once its bytes have landed, whichever engine read them: check the whole bundles it landed
/// against ffn.sums, copy the needed bundles out of a staging buffer, and complete rows read without their resident head.</summary>
internal static class ReadCompletion
{
    /// <summary>Throws <see cref="BundleChecksumException"/> at the first bundle that does not match (the read is then retried).</summary>
    public static unsafe void Finish(FlashLoader.ReadRequest r, byte* landed, BundleChecksums? checksums, ResidentPart? resident)
    {
        if (r.Fill is null) Check(r, landed, checksums);
        if (r.Staging is not null)
            foreach (var c in r.Copies!)
                Buffer.MemoryCopy(r.Staging.Pointer + c.SourceOffset, (void*)c.Destination, c.Length, c.Length);
        if (r.Fill is { } fill) FillAndCheck(fill, checksums, resident);
    }

    /// <summary>
    /// Checks every whole bundle the read landed against ffn.sums; throws <see cref="BundleChecksumException"/> at the
    /// first mismatch (so the read is retried, then reported). Direct reads cover consecutive bundles from FileOffset;
    /// staged and scatter reads name each needed bundle by a copy (in the staging buffer, or already in its row). Part reads (loader.split-parts, an ablation) are not whole
    /// bundles and are not checked.
    /// </summary>
    private static unsafe void Check(FlashLoader.ReadRequest r, byte* landed, BundleChecksums? checksums)
    {
        if (checksums is not { } sums || r.File.Path != sums.Layout.FilePath) return;
        var layout = sums.Layout;
        int bundle = (int)layout.BundleBytes;
        if (r.Staging is null && r.Segments is null)
        {
            if (r.Length % layout.BundleStride != 0 || !layout.TryLocate(r.FileOffset, out _, out _)) return;
            for (long at = 0; at < r.Length; at += layout.BundleStride)
                if (sums.Check(new ReadOnlySpan<byte>(landed + at, bundle), r.FileOffset + at) is { } problem)
                    throw new BundleChecksumException(problem);
            return;
        }
        // Staged reads: each needed bundle in the staging buffer; scatter reads: each already in its row.
        foreach (var c in r.Copies!)
        {
            if (c.Length != bundle || !layout.TryLocate(r.FileOffset + c.SourceOffset, out _, out _)) continue;
            byte* at = r.Segments is null ? landed + c.SourceOffset : (byte*)c.Destination;
            if (sums.Check(new ReadOnlySpan<byte>(at, bundle), r.FileOffset + c.SourceOffset) is { } problem)
                throw new BundleChecksumException(problem);
        }
    }

    /// <summary>Completes rows read without their resident head from DRAM, then checks each as a whole bundle against ffn.sums.</summary>
    private static unsafe void FillAndCheck(ResidentFill fill, BundleChecksums? checksums, ResidentPart? residentPart)
    {
        var resident = residentPart ?? throw new InvalidOperationException("a read left out the bundles' resident part, but the loader holds none");
        for (int k = 0; k < fill.Neurons.Length; k++) resident.Fill(fill.Layer, fill.Neurons[k], fill.Rows[k]);
        if (checksums is not { } sums) return;
        int bundle = (int)sums.Layout.BundleBytes;
        for (int k = 0; k < fill.Neurons.Length; k++)
            if (sums.Check(new ReadOnlySpan<byte>((void*)fill.Rows[k], bundle), fill.BundleOffsets[k]) is { } problem)
                throw new BundleChecksumException(problem);
    }

    /// <summary>Which bundles a read was for, for error messages: " (layer L, neurons a..b)", or "" when unknown.</summary>
    public static string Bundles(FlashLoader.ReadRequest r, BundleChecksums? checksums)
    {
        if (checksums is not { } sums || r.File.Path != sums.Layout.FilePath) return "";
        var layout = sums.Layout;
        long first = r.Fill is { } f ? f.BundleOffsets[0] : r.Copies is { Length: > 0 } c ? r.FileOffset + c[0].SourceOffset : r.FileOffset;
        long last = r.Fill is { } g ? g.BundleOffsets[^1]
            : r.Copies is { Length: > 0 } d ? r.FileOffset + d[^1].SourceOffset : r.FileOffset + Math.Max(0, r.Length - layout.BundleStride);
        if (!layout.TryLocate(first, out int layer, out int a) || !layout.TryLocate(last, out _, out int b)) return "";
        return a == b ? $" (layer {layer}, neuron {a})" : $" (layer {layer}, neurons {a}..{b})";
    }
}
