using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Threading.Channels;
using Akka.Actor;
using Akka.Event;
using FlashLm.Formats.FlashLayout;
using FlashLm.Runtime.Config;
using FlashLm.Runtime.Io;

namespace FlashLm.Runtime.Loader;

/// <summary>
/// The flash loader on io_uring (flashlm.loader.engine = io_uring): the same <see cref="FlashLoader.ReadRequest"/> in,
/// <see cref="FlashLoader.ReadDone"/> or <see cref="FlashLoader.ReadFailed"/> out, exactly once per request, with the same
/// checks, copies and retries as the reader pool; but instead of one blocked thread per read in flight, one thread queues
/// reads on a ring (up to loader.readers in flight) and one thread reaps their completions. Fewer threads woken per read is
/// the point: on these 2-core virtual machines a wake-up costs more than the read's own system call.
/// </summary>
internal sealed class UringLoader : ReceiveActor
{
    private const ulong StopTag = ulong.MaxValue;

    private readonly LoaderSettings _settings;
    private readonly BundleChecksums? _checksums;
    private readonly ResidentPart? _resident;
    private readonly ILoggingAdapter _log;
    // Synchronous continuations: a write wakes the submitter (blocked on WaitToReadAsync) directly, not through a thread-pool
    // work item, so the submitter and the stop in PostStop (itself on a pool thread) never wait for a starved pool.
    private readonly Channel<FlashLoader.ReadRequest> _requests = Channel.CreateUnbounded<FlashLoader.ReadRequest>(
        new UnboundedChannelOptions { SingleReader = true, AllowSynchronousContinuations = true });
    private readonly IoUring _ring;
    private readonly (FlashLoader.ReadRequest Request, long Start)[] _slots;
    private readonly GCHandle[] _iovecs; // per slot: a scatter read's segments, pinned until the kernel completes it
    private readonly Stack<int> _free = new();
    private readonly SemaphoreSlim _slotsFree;
    private readonly CancellationTokenSource _breaking = new(); // cancelled when the ring breaks: ends the submitter's waits for a slot
    private readonly Thread _submitter, _reaper;

    private readonly Action<int>? _submitHook;

    /// <param name="submitHook">Test hook called before each submission with its read count; may throw like a failing io_uring_enter.</param>
    public static Props Props(LoaderSettings settings, BundleChecksums? checksums, ResidentPart? resident, Action<int>? submitHook = null) =>
        Akka.Actor.Props.Create(() => new UringLoader(settings, checksums, resident, submitHook));

    public UringLoader(LoaderSettings settings, BundleChecksums? checksums, ResidentPart? resident, Action<int>? submitHook)
    {
        _submitHook = submitHook;
        _settings = settings;
        _checksums = checksums;
        _resident = resident;
        _log = Context.GetLogger();
        _ring = IoUring.TryCreate(settings.Readers, out var reason) ?? throw new IOException($"flashlm.loader.engine = io_uring: {reason}");
        int depth = Math.Min(settings.Readers, _ring.Entries);
        _slots = new (FlashLoader.ReadRequest, long)[depth];
        _iovecs = new GCHandle[depth];
        for (int i = depth - 1; i >= 0; i--) _free.Push(i);
        _slotsFree = new SemaphoreSlim(depth, depth);
        _submitter = new Thread(Submit) { IsBackground = true, Name = "flashlm-uring-submit" };
        _reaper = new Thread(Reap) { IsBackground = true, Name = "flashlm-uring-reap" };
        _submitter.Start();
        _reaper.Start();
        Receive<FlashLoader.ReadRequest>(r => _requests.Writer.TryWrite(r));
    }

    protected override void PostStop()
    {
        _requests.Writer.TryComplete();
        // A read the device never completes would hold the threads: after a bound, leave the ring to the process's exit
        // rather than unmap it under the kernel.
        if (_submitter.Join(TimeSpan.FromSeconds(30)) && _reaper.Join(TimeSpan.FromSeconds(30)))
        {
            _ring.Dispose();
            _slotsFree.Dispose();
            _breaking.Dispose();
        }
        else _log.Error("io_uring loader: reads still in flight 30 s after stop; the ring is left open");
        base.PostStop();
    }

    /// <summary>Set once the ring itself failed (io_uring_enter refused): every read still waiting and every later one is
    /// answered with this as <see cref="FlashLoader.ReadFailed"/>, so no requester waits forever.</summary>
    private volatile string? _broken;

    /// <summary>Queues requests on the ring, handing them to the kernel in batches of what has arrived; never waits for a free
    /// slot with reads still unsubmitted.</summary>
    private unsafe void Submit()
    {
        var reader = _requests.Reader;
        var pending = new List<int>();
        void Flush()
        {
            if (pending.Count == 0) return;
            try
            {
                _submitHook?.Invoke(pending.Count);
                _ring.Submit(pending.Count);
            }
            catch (Exception e)
            {
                Break($"io_uring submission failed: {e.Message}");
                // Some of them may be with the kernel (a partial submission): their slots stay taken until they complete.
                foreach (var slot in pending) Fail(slot);
            }
            pending.Clear();
        }
        while (true)
        {
            if (!reader.TryRead(out var r))
            {
                Flush();
                if (!reader.WaitToReadAsync().AsTask().GetAwaiter().GetResult()) break;
                continue;
            }
            if (_broken is { } why)
            {
                r.ReplyTo.Tell(new FlashLoader.ReadFailed(r.Id, $"{r.File.Path}: read of {r.Length} bytes at offset {r.FileOffset} not made: {why}"));
                continue;
            }
            if (!_slotsFree.Wait(0))
            {
                Flush();
                // Not once the ring broke: the slots of reads it never handed to the kernel come back only after the stop.
                if (!WaitForSlot())
                {
                    r.ReplyTo.Tell(new FlashLoader.ReadFailed(r.Id, $"{r.File.Path}: read of {r.Length} bytes at offset {r.FileOffset} not made: {_broken}"));
                    continue;
                }
            }
            int slot;
            lock (_free) slot = _free.Pop();
            _slots[slot] = (r, Stopwatch.GetTimestamp());
            nint landed = r.Staging is null ? r.Destination : (nint)r.Staging.Pointer;
            if (r.File.IsDirect && ((r.FileOffset | (long)r.Length | (long)landed) & (AlignedBuffer.Alignment - 1)) != 0)
            {
                Release(slot);
                var (_, failed) = Complete(r, 0, new ArgumentException($"{r.File.Path}: O_DIRECT read at offset {r.FileOffset}, length {r.Length} is not 4096-aligned"));
                if (failed is not null) r.ReplyTo.Tell(failed);
                continue;
            }
            int fd = (int)r.File.Handle.DangerousGetHandle();
            if (r.Segments is { } segments)
            {
                _iovecs[slot] = GCHandle.Alloc(segments, GCHandleType.Pinned);
                _ring.PrepareVectored(fd, r.FileOffset, _iovecs[slot].AddrOfPinnedObject(), segments.Length, (ulong)slot);
            }
            else _ring.Prepare(fd, r.FileOffset, landed, r.Length, (ulong)slot);
            pending.Add(slot);
        }
        // Wake the reaper once every read in flight has come back: take every slot, then queue the stop. After a failed
        // submission, reads may still sit queued and unsubmitted: they go to the kernel first (their requesters were already
        // answered; the queue then has room for the stop), and the reaper stops only once their slots are back.
        if (_broken is null)
            for (int i = 0; i < _slots.Length; i++)
                if (!WaitForSlot()) break;
        try
        {
            if (_broken is not null) _ring.Submit(_slots.Length);
            _ring.PrepareNop(StopTag);
            _ring.Submit(_slots.Length + 1);
        }
        catch (Exception e)
        {
            _log.Error("io_uring loader: the stop could not be queued ({0}); its reaping thread is left waiting", e.Message);
        }
    }

    /// <summary>Takes a free slot; false, without one, once the ring broke (a slot answered as failed stays taken until
    /// the kernel completes its read, which for a read never submitted is after the stop: waiting could be forever).</summary>
    private bool WaitForSlot()
    {
        try
        {
            _slotsFree.Wait(_breaking.Token);
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    private void Break(string why)
    {
        if (_broken is null)
        {
            _broken = why;
            _log.Error("io_uring loader: {0}; every read from now on fails", why);
            _breaking.Cancel();
        }
    }

    /// <summary>Answers the read in <paramref name="slot"/> as failed for good (the ring broke). The slot stays taken until the
    /// kernel completes the read (the reaper frees it then), so a buffer the kernel may still fill is never handed out again.</summary>
    private void Fail(int slot)
    {
        var (r, _) = _slots[slot];
        if (r is null) return;
        _slots[slot] = default;
        r.ReplyTo.Tell(new FlashLoader.ReadFailed(r.Id, $"{r.File.Path}: read of {r.Length} bytes at offset {r.FileOffset} failed: {_broken}"));
    }

    private void Release(int slot)
    {
        _slots[slot] = default;
        if (_iovecs[slot].IsAllocated) _iovecs[slot].Free();
        lock (_free) _free.Push(slot);
        _slotsFree.Release();
    }

    /// <summary>Drains completions; the reads that landed for one requester in one drain go back as one message
    /// (<see cref="FlashLoader.ReadsDone"/>), so the cache manager wakes and plans once for all of them.</summary>
    private void Reap()
    {
        var done = new Dictionary<IActorRef, List<FlashLoader.ReadDone>>();
        bool stop = false;
        while (true)
        {
            try
            {
                _ring.Wait();
            }
            catch (Exception e)
            {
                // Completions can no longer be waited for: answer every read in flight as failed rather than leave it waiting.
                Flush(done);
                Break($"io_uring completion wait failed: {e.Message}");
                for (int slot = 0; slot < _slots.Length; slot++) Fail(slot);
                return;
            }
            while (_ring.TryReap(out ulong tag, out int result))
            {
                if (tag == StopTag)
                {
                    stop = true;
                    continue;
                }
                var (r, start) = _slots[(int)tag];
                Release((int)tag);
                if (r is null) continue; // answered as failed when the ring broke; the kernel has now let go of its buffer
                var (ok, failed) = Complete(r, start, result < 0 ? new IOException($"{r.File.Path}: read error at offset {r.FileOffset}: errno {-result}") : null, result);
                if (ok is not null)
                {
                    if (!done.TryGetValue(r.ReplyTo, out var list)) done[r.ReplyTo] = list = new List<FlashLoader.ReadDone>();
                    list.Add(ok);
                }
                else if (failed is not null)
                {
                    Flush(done); // what landed before the failure is answered before it, as one read at a time would be
                    r.ReplyTo.Tell(failed);
                }
            }
            Flush(done);
            // After a broken ring, reads answered as failed may still be with the kernel when the stop arrives: the ring and
            // their buffers are let go only once every slot is back.
            if (stop && AllSlotsBack()) return;
        }
    }

    private bool AllSlotsBack()
    {
        lock (_free) return _free.Count == _slots.Length;
    }

    private static void Flush(Dictionary<IActorRef, List<FlashLoader.ReadDone>> done)
    {
        foreach (var (to, list) in done)
        {
            if (list.Count == 0) continue;
            to.Tell(list.Count == 1 ? list[0] : new FlashLoader.ReadsDone(list.ToArray()));
            list.Clear();
        }
    }

    /// <summary>Finishes one read on the reaping thread: a short read is continued synchronously (end of file reads as zeros, as
    /// <see cref="DirectFile.Read(long, byte*, int)"/> does), then the checks, copies and resident fills; a failure is retried
    /// (queued again) up to loader.max-attempts, then reported.</summary>
    /// <returns>The answer for the caller to send: that the read landed, or that it failed for good; neither when it was queued again.</returns>
    private unsafe (FlashLoader.ReadDone? Ok, FlashLoader.ReadFailed? Failed) Complete(FlashLoader.ReadRequest r, long start, Exception? error, int result = 0)
    {
        byte* landed = r.Staging is null ? (byte*)r.Destination : r.Staging.Pointer;
        try
        {
            if (error is not null) throw error;
            if (result < r.Length)
            {
                // The rest through DirectFile.Read, which owns the rules: zeros past the end of the file, an error before it.
                int done = r.File.IsDirect ? (int)AlignedBuffer.AlignDown(result) : result;
                if (r.Segments is { } segments) r.File.ContinueScatter(r.FileOffset, segments, done);
                else r.File.Read(r.FileOffset + done, landed + done, r.Length - done);
            }
            ReadCompletion.Finish(r, landed, _checksums, _resident);
            return (new FlashLoader.ReadDone(r.Id, r.Length, start, Stopwatch.GetTimestamp(), r.Attempt), null);
        }
        catch (Exception e)
        {
            if (r.Attempt < _settings.MaxAttempts)
            {
                _log.Warning("retrying read of {0} bytes at offset {1}{2} (attempt {3} of {4} failed): {5}",
                    r.Length, r.FileOffset, ReadCompletion.Bundles(r, _checksums), r.Attempt, _settings.MaxAttempts, e.Message);
                if (_requests.Writer.TryWrite(r with { Attempt = r.Attempt + 1 })) return (null, null);
            }
            var message = $"{r.File.Path}: read of {r.Length} bytes at offset {r.FileOffset}{ReadCompletion.Bundles(r, _checksums)} failed after {r.Attempt} attempts: {e.Message}";
            _log.Error(message);
            return (null, new FlashLoader.ReadFailed(r.Id, message));
        }
    }
}
